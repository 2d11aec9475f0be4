r"""Hybrid and denoising score matching for CLD (paper eq. 9 / 53 and eq. 54).

HSM conditions the perturbation kernel on :math:`x_0` only, :math:`p_t(u_t \mid x_0)`, marginalising the
initial velocity; DSM conditions on :math:`(x_0, v_0)`. Both regress the velocity score onto
:math:`-\ell_t\varepsilon_v`, weighted by :math:`\lambda(t)`: the default :math:`\lambda = \ell_t^{-2}`
turns the loss into :math:`\|\alpha_\theta - \varepsilon_v\|^2`; ``weighting="likelihood"`` uses
:math:`\lambda(t) = \Gamma\beta(t)`, the maximum-likelihood weighting (App. B.3).
"""

from __future__ import annotations

import torch

from splitdyn._validation import check_finite_tensor, check_positive
from splitdyn.score_matching import kernel_score_matching_loss

from .kernels import ell
from .process import CLD

__all__ = ["sample_times", "hsm_loss", "dsm_loss"]


def sample_times(batch: int, T: float, t_min: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``t ~ U[t_min, T)`` (float64, CPU)."""
    t_min = check_positive("t_min", t_min)
    if t_min >= T:
        raise ValueError(f"t_min must be smaller than T = {T}, got {t_min}")
    return t_min + (T - t_min) * torch.rand(batch, generator=generator, dtype=torch.float64)


def _weights(cld: CLD, t: torch.Tensor, weighting: str, kind: str) -> torch.Tensor:
    if weighting == "ell":
        return ell(cld, t, kind) ** -2
    if weighting == "likelihood":
        return cld.friction * cld.beta(t)
    raise ValueError(f"weighting must be 'ell' or 'likelihood', got {weighting!r}")


def _loss(score_model, x0, cld, kind, weighting, t_min, generator, v0=None, reduction="mean"):
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    check_finite_tensor("x0", x0)
    t = sample_times(x0.shape[0], cld.T, t_min, generator if generator is None or generator.device.type == "cpu" else None)
    kernel = cld.perturbation_kernel(t, x0, kind=kind, v0=v0)
    loss = kernel_score_matching_loss(score_model, kernel, components=[1], weight=_weights(cld, t, weighting, kind), generator=generator)
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def hsm_loss(score_model, x0: torch.Tensor, cld: CLD, *, weighting: str = "ell", t_min: float = 1e-5,
             generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Hybrid score matching loss (eq. 9/53) for a velocity score model ``score_model(u, t)``.

    Parameters
    ----------
    score_model:
        E.g. a :class:`~splitdyn_cld.score.MixedScore`; returns ``(batch, 1, *event)``.
    x0:
        A data batch ``(batch, *event)``.
    weighting:
        ``"ell"`` (:math:`\lambda = \ell_t^{-2}`) or ``"likelihood"`` (:math:`\lambda = \Gamma\beta(t)`).
    t_min:
        Time cutoff: :math:`t \sim U[t_{min}, T)`.
    """
    return _loss(score_model, x0, cld, "hsm", weighting, t_min, generator, reduction=reduction)


def dsm_loss(score_model, x0: torch.Tensor, cld: CLD, *, weighting: str = "ell", t_min: float = 1e-5,
             generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Denoising score matching loss (eq. 54): :math:`v_0 \sim \mathcal{N}(0, \gamma M I)` is sampled and
    conditioned on, with the DSM :math:`\ell_t`."""
    v0 = cld.sample_initial_velocity(x0, generator)[:, 1]
    return _loss(score_model, x0, cld, "dsm", weighting, t_min, generator, v0=v0, reduction=reduction)
