r"""Log-likelihoods through the probability-flow ODE (instantaneous change of variables).

Along the probability flow :math:`\dot u = v(u, t)`, :math:`\frac{d}{dt}\log p_t(u_t) = -\nabla\cdot v(u_t, t)`,
so

.. math::

    \log p_{t_0}(u_{t_0}) = \log p_T(u_T) + \int_{t_0}^T \nabla\cdot v(u_t, t)\,dt

(Chen et al. 2018; Song et al. 2021; the CLD paper's eq. 60). The divergence is computed exactly (one
backward pass per state dimension: small problems) or with Hutchinson's estimator
:math:`\nabla\cdot v \approx \epsilon^\top (\partial v/\partial u)\,\epsilon` with one fixed Rademacher probe
per solve (unbiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import (as_float64_matrix, check_callable, check_finite_tensor, check_generator, check_nonempty_batch,
                     check_ode_method, check_positive, check_state, check_tolerance)
from .gaussian import gaussian_log_prob
from .reverse import ProbabilityFlowODE

__all__ = ["LikelihoodResult", "log_likelihood", "divergence"]


@dataclass
class LikelihoodResult:
    """Result of :func:`log_likelihood` (all per-sample tensors of shape ``(batch,)``, float64).

    Attributes
    ----------
    log_prob:
        :math:`\\log p_{t_0}(u)` of the full state.
    prior_log_prob:
        :math:`\\log p_T(u_T)`.
    delta_log_prob:
        The integrated divergence.
    final_state:
        :math:`u_T`.
    nfe:
        Vector-field evaluations of the ODE solver.
    """

    log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor
    final_state: torch.Tensor
    nfe: int


def divergence(field, u: torch.Tensor, t, probe: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and divergence of ``field(u, t)``: exact if ``probe`` is None, else Hutchinson with ``probe``.

    Returns ``(v, div)`` with ``div`` of shape ``(batch,)``; ``v`` is detached.
    """
    check_callable("field", field, "a callable field(u, t)")
    if not isinstance(u, torch.Tensor) or not u.is_floating_point() or u.ndim < 1:
        raise TypeError(f"u must be a floating torch.Tensor of shape (batch, ...), got {type(u).__name__}")
    if probe is not None and (not isinstance(probe, torch.Tensor) or tuple(probe.shape) != tuple(u.shape)):
        raise ValueError(f"probe must be a tensor of the shape of u {tuple(u.shape)}, got {type(probe).__name__}")
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        v = field(u, t)
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"field must return a torch.Tensor, got {type(v).__name__}")
        if tuple(v.shape) != tuple(u.shape):
            raise ValueError(f"field returned shape {tuple(v.shape)}, expected the shape of u {tuple(u.shape)}")
        if not v.requires_grad:  # the field does not depend on u: zero divergence
            return v.detach(), torch.zeros(u.shape[0], dtype=v.dtype, device=v.device)
        if probe is not None:
            (grad,) = torch.autograd.grad((v * probe).sum(), u)
            div = (grad * probe).reshape(u.shape[0], -1).sum(1)
        else:
            flat_v = v.reshape(u.shape[0], -1)
            div = torch.zeros(u.shape[0], dtype=v.dtype, device=v.device)
            n = flat_v.shape[1]
            for i in range(n):
                (grad,) = torch.autograd.grad(flat_v[:, i].sum(), u, retain_graph=i < n - 1)
                div = div + grad.reshape(u.shape[0], -1)[:, i]
    return v.detach(), div.detach()


def log_likelihood(
    ode: ProbabilityFlowODE,
    u: torch.Tensor,
    *,
    t0: float = 1e-5,
    prior_covariance: torch.Tensor | None = None,
    trace: str = "hutchinson",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    r"""Log-density of states ``u`` at time ``t0`` by integrating the probability-flow ODE to ``T``.

    Parameters
    ----------
    ode:
        The probability-flow ODE (forward SDE + score).
    u:
        States at time ``t0``, shape ``(batch, k, *event)``.
    t0:
        Start time (a small positive cutoff; the CLD paper uses ``1e-5``).
    prior_covariance:
        Per-coordinate ``k x k`` covariance of the Gaussian prior :math:`p_T`; default the forward SDE's
        stationary covariance, or for a process without a stationary law (the VE SDE) its prior
        :math:`\mathcal N(0, \sigma_{\mathrm{prior}}^2)` (``prior_std``).
    trace:
        ``"hutchinson"`` (one Rademacher probe) or ``"exact"``.
    rtol, atol, method:
        ``torchdiffeq.odeint`` settings (RK45 ``dopri5`` by default; ``method`` one of the adaptive solvers
        ``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``, as a fixed-step one
        would take one step from ``t0`` to ``T``). The tolerances must be positive (zero asks the adaptive
        solver for an exact solution) and, in relative terms, not below the machine epsilon of ``u``'s dtype
        (e.g. ``9.8e-4`` for float16, where ``1e-5`` cannot be met: use float32 or float64 states).
    generator:
        For the Rademacher probe: ``None`` or a ``torch.Generator`` on ``u``'s device type.

    Raises
    ------
    ValueError
        Also during the solve, when the vector field (i.e. the score) returns non-finite values.
    """
    import torchdiffeq

    if not isinstance(ode, ProbabilityFlowODE):
        raise TypeError(f"ode must be a splitdyn.ProbabilityFlowODE, got {type(ode).__name__}")
    check_state("u", u, ode.num_components)
    check_nonempty_batch("u", u)
    check_finite_tensor("u", u)
    rtol = check_tolerance("rtol", rtol)
    atol = check_tolerance("atol", atol)
    eps = torch.finfo(u.dtype).eps
    if rtol < eps:
        raise ValueError(
            f"rtol = {rtol:g} is below the machine epsilon of u's dtype {u.dtype} ({eps:.2g}): the solver cannot reach "
            "it; pass float32/float64 states or a larger rtol"
        )
    check_ode_method("method", method, adaptive_only=True)
    check_generator("generator", generator)
    if generator is not None and generator.device.type != u.device.type:
        raise ValueError(f"generator is on {generator.device} but u is on {u.device}: pass a torch.Generator on "
                         "u's device for the Hutchinson probe")
    t0 = check_positive("t0", t0)
    if t0 >= ode.T:
        raise ValueError(f"t0 must be smaller than T = {ode.T}, got {t0}")
    if trace not in ("hutchinson", "exact"):
        raise ValueError(f"trace must be 'hutchinson' or 'exact', got {trace!r}")
    if prior_covariance is None:
        if not hasattr(ode.sde, "stationary_covariance"):
            raise TypeError("pass prior_covariance: the forward SDE has no stationary_covariance()")
        try:
            prior_covariance = ode.sde.stationary_covariance()
        except ValueError:  # no stationary law (e.g. the VE SDE): its prior N(0, prior_std^2), if it has one
            prior_std = getattr(ode.sde, "prior_std", None)
            if prior_std is None:
                raise ValueError("pass prior_covariance: the forward SDE has no stationary distribution (and no "
                                 "prior_std) to stand for p_T") from None
            prior_covariance = torch.tensor([[float(prior_std) ** 2]], dtype=torch.float64)
    k = ode.num_components
    prior_covariance = as_float64_matrix("prior_covariance", prior_covariance, (k, k), psd=True)
    if float(torch.linalg.eigvalsh(prior_covariance).min()) <= 0:
        raise ValueError("prior_covariance must be positive definite (a Gaussian prior needs a density)")
    probe = None
    if trace == "hutchinson":
        probe = torch.randint(0, 2, u.shape, generator=generator, device=u.device).to(u.dtype) * 2 - 1
    calls = [0]

    def field(t, state):
        x, _ = state
        calls[0] += 1
        time = float(t)
        if not math.isfinite(time):
            raise ValueError("the ODE solver produced a non-finite time: the vector field (the score) returned "
                             "non-finite values and the step size collapsed")
        v, div = divergence(ode.velocity, x, min(max(time, 0.0), ode.T), probe)
        if not bool(torch.isfinite(v).all()) or not bool(torch.isfinite(div).all()):
            raise ValueError(f"the probability-flow vector field (built from the score) returned non-finite values at "
                             f"t = {time:.6g}: check the score model")
        return v, div

    zero = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    times = torch.tensor([t0, ode.T], dtype=u.dtype, device=u.device)
    xs, deltas = torchdiffeq.odeint(field, (u.detach(), zero), times, rtol=rtol, atol=atol, method=method)
    final, delta = xs[-1], deltas[-1].to(torch.float64)
    prior = gaussian_log_prob(final, prior_covariance)
    return LikelihoodResult(prior + delta, prior, delta, final, calls[0])
