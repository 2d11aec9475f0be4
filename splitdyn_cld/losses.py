r"""Hybrid and denoising score matching for CLD (paper eq. 8-9 / 53, eq. 54, App. B.3 and C).

For data :math:`x_0`, a time :math:`t \sim U[t_{min}, T)` and :math:`\varepsilon \sim \mathcal N(0, I_{2d})`,
the perturbed state is :math:`u_t = \mu_t + L_t\varepsilon` with the kernel

- HSM: :math:`p_t(u_t \mid x_0)`, :math:`\mu_t = A(t)(x_0, 0)`, :math:`\Sigma_0 = \mathrm{diag}(0, \gamma M)`
  (the initial velocity is marginalised analytically);
- DSM: :math:`p_t(u_t \mid x_0, v_0)`, :math:`v_0 \sim \mathcal N(0, \gamma M I)` sampled,
  :math:`\mu_t = A(t)(x_0, v_0)`, :math:`\Sigma_0 = 0`;

:math:`L_t` the Cholesky factor of :math:`\Sigma_t + \epsilon_{num} I` (closed forms of
:mod:`splitdyn_cld.kernels`). The regression target is :math:`\nabla_{v_t}\log p_t(u_t \mid \cdot) =
-\ell_t\varepsilon_v` (eq. 51), and the per-sample loss is

.. math::

    \lambda(t)\,\|s_\theta(u_t, t) + \ell_t\varepsilon_v\|_2^2
    = \lambda(t)\,\ell_t^2\,\|\varepsilon_v - \alpha_\theta(u_t, t)\|_2^2
    \qquad (s_\theta = -\ell_t\alpha_\theta),

summed over the data dimensions (eq. 53 / 54), with the weighting

- ``"ell"``: :math:`\lambda(t) = \ell_t^{-2}` (default; "dropping the variance prefactor", the paper's choice
  for images): the loss is :math:`\|\varepsilon_v - \alpha_\theta\|^2`, i.e. for the mixed score
  :math:`\|\varepsilon_v - \mathrm{net}(u_t, t) - \ell_t^{-1}v_t/\Sigma^{vv}_t\|^2`;
- ``"likelihood"``: :math:`\lambda(t) = \Gamma\beta(t)`, the maximum-likelihood weighting (App. B.3,
  eq. 39-43): if :math:`s_\theta = \nabla_v\log q_t` for the CLD-diffused marginals :math:`q_t` of a model
  density, :math:`D_{KL}(p_{t_{min}}\|q_{t_{min}}) = (T - t_{min})\,\mathbb E_{t \sim U[t_{min}, T)}\big[\Gamma
  \beta(t)\,\mathbb E_{p_t}\|\nabla_v\log p_t - s_\theta\|^2\big] + D_{KL}(p_T\|q_T)`, and the HSM/DSM
  objectives differ from that expectation only by :math:`\theta`-independent constants (App. C);
- ``"none"``: :math:`\lambda = 1` (the plain :math:`L_{HSM}`, :math:`L_{DSM}` of App. C).

**HSM vs DSM** (App. C, eq. 66-68): at every :math:`t`, for any score model,
:math:`L_{HSM} = L_{DSM} + C_4(t) - C_3(t)` with :math:`C_4 = d\,(\ell^{HSM}_t)^2` and
:math:`C_3 = d\,(\ell^{DSM}_t)^2`, i.e. :math:`L_{HSM} - L_{DSM} = d\,((\ell^{HSM}_t)^2 - (\ell^{DSM}_t)^2) < 0`
(eq. 68 prints this constant with the opposite sign; eq. 67 and the definitions of :math:`C_3, C_4` give the
sign here, which the tests confirm). Both objectives therefore have the same minimiser; HSM has the smaller
variance (App. C.1) and a bounded target near :math:`t = 0`.
"""

from __future__ import annotations

import math
import warnings

import torch

from splitdyn.checks import check_count, check_finite_tensor, check_generator, check_positive, check_time

from .kernels import forward_mean_coefficients, is_critically_damped, perturbation_cholesky
from .process import CLD
from .score import MixedScore

__all__ = ["WEIGHTINGS", "sample_times", "loss_weight", "score_matching_objective", "hsm_loss", "dsm_loss"]

#: Accepted values of ``weighting``.
WEIGHTINGS = ("ell", "likelihood", "none")
_REDUCTIONS = ("mean", "sum", "none")


def _randn(shape, generator, dtype, device) -> torch.Tensor:
    """Standard normals drawn on the generator's device (reproducible) and moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, dtype=dtype, device=source).to(device)


def sample_times(batch: int, T: float, t_min: float = 1e-5, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""``batch`` times :math:`t \sim U[t_{min}, T)`, float64 on the CPU (drawn on ``generator``'s device).

    ``t_min`` is the time cutoff (paper/reference: ``1e-5``); it must satisfy :math:`0 < t_{min} < T`.
    """
    batch = check_count("batch", batch)
    T = check_positive("T", T)
    t_min = check_positive("t_min", t_min)
    if t_min >= T:
        raise ValueError(f"t_min must be smaller than T = {T}, got {t_min}")
    check_generator("generator", generator)
    device = generator.device if generator is not None else torch.device("cpu")
    r = torch.rand(batch, generator=generator, dtype=torch.float64, device=device).cpu()
    return t_min + (T - t_min) * r


def loss_weight(cld: CLD, t, weighting: str = "ell", kind: str = "hsm") -> torch.Tensor:
    r""":math:`\lambda(t)` (float64, shape of ``t``): ``"ell"`` :math:`\ell_t^{-2}` (of the ``kind`` kernel),
    ``"likelihood"`` :math:`\Gamma\beta(t)`, ``"none"`` 1."""
    from .kernels import ell

    if not isinstance(cld, CLD):
        raise TypeError(f"cld must be a CLD, got {type(cld).__name__}")
    if kind not in ("hsm", "dsm"):
        raise ValueError(f"kind must be 'hsm' or 'dsm', got {kind!r}")
    if weighting == "ell":
        return ell(cld, t, kind) ** -2
    if weighting == "likelihood":
        return cld.friction * cld.beta(t)
    if weighting == "none":
        return torch.ones_like(check_time("t", t, cld.T))
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def _kind_of(value) -> str:
    return f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__


def _check_score_output(s: torch.Tensor, expected: tuple) -> torch.Tensor:
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"the score must return a torch.Tensor, got {type(s).__name__}")
    if tuple(s.shape) != expected:
        raise ValueError(f"score returned shape {tuple(s.shape)}, expected {expected} (the velocity score)")
    return s


def score_matching_objective(
    score,
    x0: torch.Tensor,
    cld: CLD,
    *,
    kind: str = "hsm",
    weighting: str = "ell",
    t=None,
    t_min: float = 1e-5,
    v0: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The HSM (eq. 53) or DSM (eq. 54) objective for any velocity score, a network or an analytic callable.

    Parameters
    ----------
    score:
        ``score(u, t) -> (batch, 1, *event)``, the velocity score :math:`s(u, t)` (``t`` is passed as a float64
        ``(batch,)`` tensor on ``x0``'s device). A :class:`~splitdyn_cld.score.MixedScore` whose ``kind`` and
        ``cld`` match is evaluated through :meth:`~splitdyn_cld.score.MixedScore.alpha`, i.e. as
        :math:`\lambda\ell_t^2\|\varepsilon_v - \alpha_\theta\|^2` (the same value, without forming
        :math:`\ell_t^2\cdot\ell_t^{-2}`).
    x0:
        Data ``(batch, *event)``; its dtype and device are those of the computation.
    cld:
        The CLD process.
    kind:
        ``"hsm"`` (condition on :math:`x_0`) or ``"dsm"`` (condition on :math:`(x_0, v_0)`).
    weighting:
        ``"ell"`` (:math:`\ell_t^{-2}`, of the ``kind`` kernel), ``"likelihood"`` (:math:`\Gamma\beta(t)`) or
        ``"none"`` (1); see the module notes.
    t:
        Fixed time(s) in ``(0, T]``, a float or ``(batch,)``; default ``None``: :math:`t \sim U[t_{min}, T)`.
    t_min:
        Time cutoff for the sampled times, :math:`0 < t_{min} < T`.
    v0:
        DSM only: the initial velocities ``(batch, *event)``; default sampled from :math:`\mathcal N(0, \gamma M I)`.
    noise:
        The standard normal :math:`\varepsilon` ``(batch, 2, *event)`` (for common random numbers); default
        sampled.
    generator:
        Random generator for ``t``, ``v0`` and ``noise`` (drawn in this order, on the generator's device).
    reduction:
        ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (per-sample losses ``(batch,)``).

    Returns
    -------
    torch.Tensor
        The loss in ``x0``'s dtype, summed over data dimensions and reduced over the batch.

    Warns
    -----
    RuntimeWarning
        When a per-sample loss is NaN or infinite (the score returned NaN/inf or overflowed): the function
        still returns the non-finite loss, so that every rank of a distributed run reaches the trainer's
        collective finite-loss check (:func:`~splitdyn_cld.training.check_finite_loss`) instead of one rank
        raising alone; the training loops then stop with :class:`~splitdyn_cld.training.NonFiniteLossError`.
    """
    if kind not in ("hsm", "dsm"):
        raise ValueError(f"kind must be 'hsm' or 'dsm', got {kind!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not callable(score):
        raise TypeError(f"score must be a callable score(u, t), got {type(score).__name__}")
    if not isinstance(cld, CLD):
        raise TypeError(f"cld must be a CLD, got {type(cld).__name__}")
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must have a floating dtype, got {x0.dtype}")
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must have shape (batch, *event_shape) with batch >= 1, got {tuple(x0.shape)}")
    check_finite_tensor("x0", x0)
    check_generator("generator", generator)
    batch, dtype, device = x0.shape[0], x0.dtype, x0.device
    state_shape = (batch, 2, *x0.shape[1:])

    # times
    if t is None:
        times = sample_times(batch, cld.T, t_min, generator)
    else:
        times = check_time("t", t, cld.T)
        if times.ndim == 0:
            times = times.expand(batch)
        elif times.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({batch},), got {tuple(times.shape)}")
        if bool((times <= 0).any()):
            raise ValueError("t must be positive (the kernels are singular at t = 0 without eps_num)")

    # initial velocities
    if kind == "dsm":
        if v0 is None:
            v0 = math.sqrt(cld.gamma * cld.mass) * _randn(x0.shape, generator, dtype, device)
        elif not isinstance(v0, torch.Tensor) or not v0.is_floating_point():
            raise TypeError(f"v0 must be a floating torch.Tensor, got {_kind_of(v0)}")
        elif v0.shape != x0.shape:
            raise ValueError(f"v0 must be a tensor of the shape of x0 {tuple(x0.shape)}, got {tuple(v0.shape)}")
        else:
            check_finite_tensor("v0", v0)
            v0 = v0.to(dtype=dtype, device=device)
    elif v0 is not None:
        raise ValueError("v0 is only used with kind='dsm' (HSM marginalises the initial velocity)")

    if noise is None:
        noise = _randn(state_shape, generator, dtype, device)
    elif not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
        raise TypeError(f"noise must be a floating torch.Tensor, got {_kind_of(noise)}")
    elif tuple(noise.shape) != state_shape:
        raise ValueError(f"noise must be a tensor of shape {state_shape}, got {tuple(noise.shape)}")
    else:
        noise = check_finite_tensor("noise", noise).to(dtype=dtype, device=device)

    # perturbed state u_t = A (x0, v0) + L eps (coefficients in float64, cast)
    if is_critically_damped(cld):
        A = forward_mean_coefficients(cld, times)
    else:
        A = cld.transition_matrix(times)
    L = perturbation_cholesky(cld, times, kind)
    ell_t = 1.0 / L[:, 1, 1]
    view = (batch, *([1] * (x0.ndim - 1)))

    def c(values: torch.Tensor) -> torch.Tensor:
        return values.to(dtype=dtype, device=device).reshape(view)

    eps_x, eps_v = noise[:, 0], noise[:, 1]
    x_t = c(A[:, 0, 0]) * x0 + c(L[:, 0, 0]) * eps_x
    v_t = c(A[:, 1, 0]) * x0 + c(L[:, 1, 0]) * eps_x + c(L[:, 1, 1]) * eps_v
    if kind == "dsm":
        x_t = x_t + c(A[:, 0, 1]) * v0
        v_t = v_t + c(A[:, 1, 1]) * v0
    u = torch.stack([x_t, v_t], dim=1)
    t_arg = times.to(device)

    # lambda(t); for "ell" from the same Cholesky factor (ell_t^-2 = (L^vv_t)^2)
    weight = L[:, 1, 1] ** 2 if weighting == "ell" else loss_weight(cld, times, weighting, kind)
    expected = (batch, 1, *x0.shape[1:])
    if isinstance(score, MixedScore) and score.kind == kind and score.cld is cld:
        # lambda ||s + ell eps_v||^2 = lambda ell^2 ||alpha - eps_v||^2
        alpha = _check_score_output(score.alpha(u, times), expected)
        residual = alpha - noise[:, 1:2]
        factor = torch.ones_like(times) if weighting == "ell" else weight * ell_t**2
    else:
        s = _check_score_output(score(u, t_arg), expected)
        residual = s + c(ell_t)[:, None] * noise[:, 1:2]
        factor = weight
    per_sample = residual.pow(2).reshape(batch, -1).sum(1) * factor.to(dtype=residual.dtype, device=residual.device)
    finite = torch.isfinite(per_sample)
    if not bool(finite.all()):  # one host sync (training loops read the loss right after anyway)
        bad = (~finite).cpu()
        shown = ", ".join(f"{v:.3g}" for v in times[bad][:4].tolist()) + (", ..." if int(bad.sum()) > 4 else "")
        warnings.warn(f"{kind}_loss is non-finite: the score returned NaN or inf (or overflowed) for "
                      f"{int(bad.sum())} of {batch} samples (at t = {shown}); the loss returned is NaN/inf. "
                      "Check the score model (training loops stop on this with NonFiniteLossError)",
                      RuntimeWarning, stacklevel=3)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def hsm_loss(
    score_model,
    x0: torch.Tensor,
    cld: CLD,
    *,
    weighting: str = "ell",
    t_min: float = 1e-5,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Hybrid score matching loss (eq. 9 / 53) with :math:`t \sim U[t_{min}, T)`.

    With the defaults and a :class:`~splitdyn_cld.score.MixedScore` this is the reference training loss
    :math:`\mathbb E\,\|\varepsilon_v - \mathrm{net}(u_t, t) - \ell_t^{-1}v_t/\Sigma^{vv}_t\|^2` (summed over data
    dimensions, mean over the batch). See :func:`score_matching_objective` for the arguments; like it, this warns
    (``RuntimeWarning``, naming the number of samples and their times) when the score makes the loss NaN or inf.
    """
    return score_matching_objective(score_model, x0, cld, kind="hsm", weighting=weighting, t_min=t_min,
                                    generator=generator, reduction=reduction)


def dsm_loss(
    score_model,
    x0: torch.Tensor,
    cld: CLD,
    *,
    weighting: str = "ell",
    t_min: float = 1e-5,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Denoising score matching loss (eq. 54): :math:`v_0 \sim \mathcal{N}(0, \gamma M I)` is sampled and
    conditioned on, with :math:`\ell^{DSM}_t` (and, for ``weighting="ell"``, :math:`\lambda = (\ell^{DSM}_t)^{-2}`).
    See :func:`score_matching_objective` for the arguments."""
    return score_matching_objective(score_model, x0, cld, kind="dsm", weighting=weighting, t_min=t_min,
                                    generator=generator, reduction=reduction)
