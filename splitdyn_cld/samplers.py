r"""CLD samplers: SSCS (Algorithm 1), Euler-Maruyama, the probability-flow ODE, and the torchsde reference.

All are thin wrappers over the generic :mod:`splitdyn.samplers`: they draw :math:`u_T` from the CLD prior
:math:`\mathcal{N}(0, \mathrm{diag}(1, M))` (or take a given initial state), integrate reverse time over a
uniform or quadratic-striding grid (App. E.2.3) to the cutoff :math:`\epsilon` and, with ``denoise``, take the
denoising step of eq. 107.

**NFE convention.** ``nfe`` counts score (network) evaluations: ``n_steps`` for SSCS and EM, plus one for the denoising step,
which evaluates the score once. For CLD the denoising step's data update needs no score at all (eq. 109:
:math:`x_0 = x_\epsilon - \epsilon\beta M^{-1} v_\epsilon`, since :math:`GG^\top` vanishes on :math:`x`); only the
velocity, which nobody keeps, uses it. The paper notes that an implementation may skip that call (the note after Algorithm 1, App. D);
here the step is taken in full (eq. 107, so the returned velocity is correct too) and counted, following the
reference implementation's settings, so ``n`` score evaluations mean ``n - 1`` steps plus denoising.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitdyn import ProbabilityFlowODE
from splitdyn.checks import check_state
from splitdyn.grids import make_grid
from splitdyn.samplers import sample_euler_maruyama, sample_probability_flow, sample_split, sample_torchsde

from .process import CLD

__all__ = ["SampleResult", "sscs", "euler_maruyama", "probability_flow", "torchsde_euler", "sample", "SAMPLERS"]


@dataclass
class SampleResult:
    """Samples from a CLD sampler.

    Attributes
    ----------
    x:
        Data component ``(batch, *event)``.
    v:
        Velocity component ``(batch, *event)``.
    nfe:
        Score evaluations (see the module's NFE convention).
    """

    x: torch.Tensor
    v: torch.Tensor
    nfe: int


def _initial_state(cld: CLD, shape_or_u, generator, dtype, device) -> torch.Tensor:
    if not isinstance(cld, CLD):
        raise TypeError(f"cld must be a splitdyn_cld.CLD, got {type(cld).__name__}")
    if isinstance(shape_or_u, torch.Tensor):
        return check_state("shape_or_u", shape_or_u, 2)
    try:
        shape = tuple(shape_or_u)
    except TypeError:
        raise TypeError(
            f"shape_or_u must be a shape (batch, *event) or an initial state tensor, got {type(shape_or_u).__name__}"
        ) from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape_or_u must be a shape (batch, *event) of positive ints, got {shape_or_u!r}")
    return cld.prior_sample(shape, generator=generator, dtype=dtype, device=device)


def _result(state: torch.Tensor, nfe: int) -> SampleResult:
    return SampleResult(x=state[:, 0], v=state[:, 1], nfe=nfe)


def sscs(cld: CLD, velocity_score, shape_or_u, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
         denoise: bool = True, time_point: float = 0.0, generator: torch.Generator | None = None,
         dtype: torch.dtype = torch.float32, device=None, progress: bool = False, callback=None) -> SampleResult:
    r"""Symmetric splitting CLD sampler (SSCS, Algorithm 1).

    Each step is :math:`e^{\frac h2 \hat{\mathcal L}^*_A} e^{h \hat{\mathcal L}^*_S} e^{\frac h2
    \hat{\mathcal L}^*_A}`: exact half-steps of the linear part (eq. 85-90) around an Euler step of the
    score part (eq. 77), with the score evaluated at the step's start as in Algorithm 1 (``time_point=0``).

    Parameters
    ----------
    cld:
        The process.
    velocity_score:
        ``score(u, t) -> (batch, 1, *event)``, the velocity score :math:`\nabla_v \log p_t(u)` in forward time.
    shape_or_u:
        ``(batch, *event)`` to draw :math:`u_T` from the prior, or an initial state ``(batch, 2, *event)``.
    n_steps:
        Number of steps (NFE = ``n_steps``, + 1 with denoising).
    grid:
        ``"uniform"`` or ``"quadratic"`` (quadratic striding, App. E.2.3), from :math:`\tau = 0` to
        :math:`T - \epsilon`.
    eps:
        The cutoff :math:`\epsilon` (paper: ``1e-3``).
    denoise:
        Finish with the denoising step (eq. 107) of size ``eps``.
    time_point:
        Where in the step the score is evaluated (0: start, the paper's choice).
    generator, dtype, device:
        For the prior sample and the noise.
    progress:
        tqdm progress bar.
    callback:
        ``callback(i, tau_{i+1}, u)`` after each step.
    """
    u = _initial_state(cld, shape_or_u, generator, dtype, device)
    sol = sample_split(cld.reverse(velocity_score), u, make_grid(grid, n_steps, cld.T, eps), time_point=time_point,
                       denoise_eps=eps if denoise else None, generator=generator, progress=progress, callback=callback)
    return _result(sol.state, sol.nfe)


def euler_maruyama(cld: CLD, velocity_score, shape_or_u, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
                   denoise: bool = True, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                   device=None, progress: bool = False, callback=None) -> SampleResult:
    """Euler-Maruyama on the CLD reverse SDE (eq. 2); arguments as for :func:`sscs`."""
    u = _initial_state(cld, shape_or_u, generator, dtype, device)
    sol = sample_euler_maruyama(cld.reverse(velocity_score), u, make_grid(grid, n_steps, cld.T, eps),
                                denoise_eps=eps if denoise else None, generator=generator, progress=progress,
                                callback=callback)
    return _result(sol.state, sol.nfe)


def torchsde_euler(cld: CLD, velocity_score, shape_or_u, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
                   denoise: bool = True, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                   device=None, progress: bool = False, callback=None) -> SampleResult:
    """The reference: the same reverse SDE through ``torchsde.sdeint(method="euler")`` on the same grid.

    Arguments as for :func:`sscs`; the Brownian motion is a ``torchsde.BrownianInterval`` seeded from
    ``generator`` (see :func:`splitdyn.samplers.sample_torchsde`).
    """
    u = _initial_state(cld, shape_or_u, generator, dtype, device)
    sol = sample_torchsde(cld.reverse(velocity_score), u, make_grid(grid, n_steps, cld.T, eps), method="euler",
                          denoise_eps=eps if denoise else None, generator=generator, progress=progress,
                          callback=callback)
    return _result(sol.state, sol.nfe)


def probability_flow(cld: CLD, velocity_score, shape_or_u, n_steps: int | None = None, *, eps: float = 1e-3,
                     rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", denoise: bool = True,
                     generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device=None,
                     progress: bool = False, grid: str = "uniform", callback=None) -> SampleResult:
    """The probability-flow ODE (eq. 59) from ``T`` to ``eps`` with torchdiffeq (adaptive ``dopri5``), then denoising.

    ``n_steps``, ``grid``, ``progress`` and ``callback`` are accepted for a uniform signature and unused (the
    solver picks its steps); NFE is the solver's score evaluations (+ 1 with denoising).
    """
    u = _initial_state(cld, shape_or_u, generator, dtype, device)
    ode = ProbabilityFlowODE(cld, velocity_score, score_components=[1])
    sol = sample_probability_flow(ode, u, eps=eps, rtol=rtol, atol=atol, method=method, denoise=denoise)
    return _result(sol.state, sol.nfe)


#: The samplers by name, as :func:`sample` dispatches: ``"sscs"``, ``"em"``, ``"ode"``, ``"torchsde-euler"``.
#:
#: :meta hide-value:
SAMPLERS = {"sscs": sscs, "em": euler_maruyama, "ode": probability_flow, "torchsde-euler": torchsde_euler}


def sample(cld: CLD, velocity_score, shape_or_u, n_steps: int | None, sampler: str = "sscs", **kwargs) -> SampleResult:
    """Dispatch to a sampler by name: ``"sscs"``, ``"em"``, ``"ode"`` or ``"torchsde-euler"``.

    ``kwargs`` go to the sampler (see :func:`sscs`; :func:`probability_flow` also takes ``rtol``, ``atol``,
    ``method``). ``n_steps`` may be ``None`` for ``"ode"``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    return SAMPLERS[sampler](cld, velocity_score, shape_or_u, n_steps, **kwargs)
