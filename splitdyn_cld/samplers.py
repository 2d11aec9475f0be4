r"""CLD samplers: SSCS (Algorithm 1), Euler-Maruyama, the probability-flow ODE, and the torchsde reference.

All are thin wrappers over the generic :mod:`splitdyn.samplers`: they draw :math:`u_T` from the CLD prior
:math:`\mathcal{N}(0, \mathrm{diag}(1, M))`, integrate reverse time over a uniform or quadratic-striding grid
to the cutoff :math:`\epsilon`, and finish with the denoising step (eq. 107/109, one NFE). NFE counts score
evaluations: ``n_steps`` for SSCS and EM plus one for denoising.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitdyn import ProbabilityFlowODE
from splitdyn.grids import make_grid
from splitdyn.samplers import sample_euler_maruyama, sample_probability_flow, sample_split, sample_torchsde

from .process import CLD

__all__ = ["SampleResult", "sscs", "euler_maruyama", "probability_flow", "torchsde_euler", "sample", "SAMPLERS"]


@dataclass
class SampleResult:
    """Samples from a CLD sampler: data ``x`` ``(batch, *event)``, velocity ``v``, and the NFE count."""

    x: torch.Tensor
    v: torch.Tensor
    nfe: int


def _prior(cld: CLD, shape, generator, dtype, device) -> torch.Tensor:
    if isinstance(shape, torch.Tensor):
        return shape
    return cld.prior_sample(shape, generator=generator, dtype=dtype, device=device)


def _result(state: torch.Tensor, nfe: int) -> SampleResult:
    return SampleResult(x=state[:, 0], v=state[:, 1], nfe=nfe)


def sscs(cld: CLD, velocity_score, shape, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
         denoise: bool = True, time_point: float = 0.0, generator=None, dtype=torch.float32, device=None,
         progress: bool = False) -> SampleResult:
    r"""Symmetric splitting CLD sampler (Algorithm 1): exact half-steps of the linear part around an Euler
    step of the score part, the score evaluated at the step's start (``time_point=0``) as in the paper.

    Parameters
    ----------
    cld:
        The process.
    velocity_score:
        ``score(u, t) -> (batch, 1, *event)``.
    shape:
        ``(batch, *event)`` to draw from the prior, or an initial state ``(batch, 2, *event)``.
    n_steps:
        Number of steps (NFE = ``n_steps`` + 1 with denoising).
    grid:
        ``"uniform"`` or ``"quadratic"`` (quadratic striding, App. E.2.3).
    """
    u = _prior(cld, shape, generator, dtype, device)
    sol = sample_split(cld.reverse(velocity_score), u, make_grid(grid, n_steps, cld.T, eps), time_point=time_point,
                       denoise_eps=eps if denoise else None, generator=generator, progress=progress)
    return _result(sol.state, sol.nfe)


def euler_maruyama(cld: CLD, velocity_score, shape, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
                   denoise: bool = True, generator=None, dtype=torch.float32, device=None, progress: bool = False) -> SampleResult:
    """Euler-Maruyama on the CLD reverse SDE; arguments as for :func:`sscs`."""
    u = _prior(cld, shape, generator, dtype, device)
    sol = sample_euler_maruyama(cld.reverse(velocity_score), u, make_grid(grid, n_steps, cld.T, eps),
                                denoise_eps=eps if denoise else None, generator=generator, progress=progress)
    return _result(sol.state, sol.nfe)


def torchsde_euler(cld: CLD, velocity_score, shape, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
                   denoise: bool = True, generator=None, dtype=torch.float32, device=None, progress: bool = False) -> SampleResult:
    """The reference: the same reverse SDE through ``torchsde.sdeint(method="euler")`` on the same grid."""
    u = _prior(cld, shape, generator, dtype, device)
    sol = sample_torchsde(cld.reverse(velocity_score), u, make_grid(grid, n_steps, cld.T, eps),
                          denoise_eps=eps if denoise else None)
    return _result(sol.state, sol.nfe)


def probability_flow(cld: CLD, velocity_score, shape, n_steps: int | None = None, *, eps: float = 1e-3,
                     rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", denoise: bool = True,
                     generator=None, dtype=torch.float32, device=None, progress: bool = False, grid: str = "uniform") -> SampleResult:
    """The probability-flow ODE (eq. 59) with torchdiffeq (adaptive ``dopri5``; ``n_steps`` and ``grid`` unused)."""
    u = _prior(cld, shape, generator, dtype, device)
    ode = ProbabilityFlowODE(cld, velocity_score, score_components=[1])
    sol = sample_probability_flow(ode, u, eps=eps, rtol=rtol, atol=atol, method=method, denoise=denoise)
    return _result(sol.state, sol.nfe)


SAMPLERS = {"sscs": sscs, "em": euler_maruyama, "ode": probability_flow, "torchsde-euler": torchsde_euler}


def sample(cld: CLD, velocity_score, shape, n_steps: int, sampler: str = "sscs", **kwargs) -> SampleResult:
    """Dispatch to a sampler by name: ``"sscs"``, ``"em"``, ``"ode"`` or ``"torchsde-euler"``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    return SAMPLERS[sampler](cld, velocity_score, shape, n_steps, **kwargs)
