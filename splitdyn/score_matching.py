r"""Denoising score matching against a Gaussian perturbation kernel.

For a kernel :math:`p_t(u_t \mid \cdot) = \mathcal{N}(\mu_t, L_tL_t^\top)` and a sample
:math:`u_t = \mu_t + L_t\varepsilon`, the regression target for the score of a block of components is
:math:`[-L_t^{-\top}\varepsilon]_{\text{block}}`, and the loss is
:math:`\lambda(t)\,\|s_\theta(u_t, t) - [-L_t^{-\top}\varepsilon]_{\text{block}}\|^2` summed over dimensions
(paper eq. 9 and 53 for CLD's hybrid score matching, eq. 54 for DSM).
"""

from __future__ import annotations

import torch

from .checks import as_float64, check_callable, check_components
from .gaussian import PerturbationKernel

__all__ = ["kernel_score_matching_loss"]


def kernel_score_matching_loss(
    score,
    kernel: PerturbationKernel,
    *,
    components=None,
    weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Per-sample denoising score-matching loss against ``kernel`` (shape ``(batch,)``).

    Parameters
    ----------
    score:
        ``score(u, t)`` returning the score for ``components`` (all components if ``None``).
    kernel:
        The perturbation kernel at per-sample times ``kernel.t``.
    components:
        Component indices the score models (e.g. ``[1]`` for CLD's velocity).
    weight:
        :math:`\lambda(t)` per sample (float64 or any dtype, shape ``(batch,)``); default 1.
    generator:
        For the noise :math:`\varepsilon`.
    noise:
        The standard normal :math:`\varepsilon` (shape of ``kernel.mean``, finite) for common random numbers;
        default drawn from ``generator``.
    """
    check_callable("score", score, "a callable score(u, t)")
    if not isinstance(kernel, PerturbationKernel):
        raise TypeError(f"kernel must be a splitdyn.PerturbationKernel, got {type(kernel).__name__}")
    if components is not None:
        components = check_components("components", components, kernel.sde.num_components)
    batch = kernel.mean.shape[0]
    if weight is not None:
        weight = as_float64("weight", weight, "a number or a (batch,) tensor of weights")
        if weight.ndim > 1 or (weight.ndim == 1 and weight.shape[0] != batch):
            raise ValueError(f"weight must be a number or have shape (batch,) = ({batch},), got {tuple(weight.shape)}")
    u, noise = kernel.sample(generator, noise)
    target = kernel.score_from_noise(noise, components)
    s = score(u, kernel.t.to(u.device) if kernel.t.ndim else float(kernel.t))
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"score must return a torch.Tensor, got {type(s).__name__}")
    if s.shape != target.shape:
        raise ValueError(f"score returned shape {tuple(s.shape)}, expected {tuple(target.shape)}")
    loss = (s - target).pow(2).reshape(u.shape[0], -1).sum(1)
    if weight is not None:
        loss = loss * weight.to(dtype=loss.dtype, device=loss.device)
    return loss
