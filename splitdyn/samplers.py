r"""Samplers for reverse-time dynamics, as plain functions over a time grid (k-diffusion style).

Every sampler takes the reverse-time SDE (or probability-flow ODE), an initial state drawn from the prior, a
reverse-time grid from :mod:`splitdyn.grids`, and returns a :class:`~splitdyn.integrate.Solution` with the
number of score evaluations (NFE). ``denoise_eps`` adds the final noise-free Euler step of size
:math:`\epsilon` from forward time :math:`\epsilon` to 0 (paper eq. 107), counted as one NFE.
"""

from __future__ import annotations

import torch

from ._validation import check_finite_tensor, check_positive
from .integrate import Solution, integrate
from .propagators import EulerDrift, EulerMaruyama, ExactLinearFlow
from .reverse import ProbabilityFlowODE, ReverseSDE
from .splitting import strang, trotter

__all__ = [
    "split_step",
    "sample_euler_maruyama",
    "sample_split",
    "sample_probability_flow",
    "sample_torchsde",
]


def _denoise(reverse: ReverseSDE, solution: Solution, denoise_eps: float | None) -> Solution:
    if denoise_eps is None:
        return solution
    solution.state = reverse.denoise(solution.state, denoise_eps)
    solution.nfe += 1
    return solution


def split_step(reverse: ReverseSDE, *, precision=None, time_point: float = 0.0, scheme: str = "strang"):
    r"""The splitting step: the exact linear part :math:`A` and an Euler step :math:`S` of the score part.

    ``scheme="strang"`` gives :math:`A(h/2)\,S(h)\,A(h/2)` (for CLD: SSCS, Algorithm 1 with
    ``time_point=0``); ``"trotter"`` gives :math:`A(h)\,S(h)`.
    """
    if scheme not in ("strang", "trotter"):
        raise ValueError(f"scheme must be 'strang' or 'trotter', got {scheme!r}")
    linear = ExactLinearFlow(reverse.sde.reverse_linear_part(precision))
    score_step = EulerDrift(reverse.score_drift(precision), nfe=1, time_point=time_point)
    return strang(linear, score_step) if scheme == "strang" else trotter(linear, score_step)


def sample_euler_maruyama(reverse: ReverseSDE, u: torch.Tensor, grid, *, denoise_eps: float | None = None, **kwargs) -> Solution:
    """Euler-Maruyama on the reverse-time SDE over ``grid``; ``kwargs`` go to :func:`~splitdyn.integrate.integrate`."""
    return _denoise(reverse, integrate(EulerMaruyama(reverse), u, grid, **kwargs), denoise_eps)


def sample_split(
    reverse: ReverseSDE,
    u: torch.Tensor,
    grid,
    *,
    precision=None,
    time_point: float = 0.0,
    scheme: str = "strang",
    denoise_eps: float | None = None,
    **kwargs,
) -> Solution:
    """Splitting sampler (see :func:`split_step`) over ``grid``."""
    step = split_step(reverse, precision=precision, time_point=time_point, scheme=scheme)
    return _denoise(reverse, integrate(step, u, grid, **kwargs), denoise_eps)


def sample_probability_flow(
    ode: ProbabilityFlowODE,
    u: torch.Tensor,
    *,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    denoise: bool = True,
) -> Solution:
    r"""Integrate the probability-flow ODE from ``T`` down to ``eps`` with ``torchdiffeq.odeint``.

    With ``denoise``, finish with the denoising step of the reverse SDE (eq. 107). NFE counts every
    vector-field evaluation of the adaptive solver.
    """
    import torchdiffeq

    eps = check_positive("eps", eps)
    ode.reset_count()
    times = torch.tensor([ode.T, eps], dtype=u.dtype, device=u.device)
    state = torchdiffeq.odeint(ode, u, times, rtol=rtol, atol=atol, method=method)[-1]
    solution = Solution(state=state, nfe=ode.evaluations, times=[ode.T, eps])
    if denoise:
        reverse = ReverseSDE(ode.sde, ode.score, ode.score_components)
        solution = _denoise(reverse, solution, eps)
    check_finite_tensor("the probability-flow sample", solution.state)
    return solution


def sample_torchsde(
    reverse: ReverseSDE,
    u: torch.Tensor,
    grid,
    *,
    method: str = "euler",
    noise_type: str = "diagonal",
    denoise_eps: float | None = None,
    bm=None,
) -> Solution:
    """The reference path: the same reverse SDE solved by ``torchsde.sdeint`` with one step per grid interval."""
    import torchsde

    from .grids import check_grid

    times = check_grid(grid)
    adapter = reverse.as_torchsde(u.shape[2:], noise_type=noise_type)
    reverse.reset_count()
    y = u.reshape(u.shape[0], -1)
    steps = torch.diff(torch.tensor(times, dtype=torch.float64))
    if torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-12, atol=0):
        # one call: torchsde's fixed step dt lands on every grid time
        ts = torch.tensor(times, dtype=u.dtype, device=u.device)
        y = torchsde.sdeint(adapter, y, ts, method=method, dt=float(steps[0]), bm=bm)[-1]
        calls = 1
    else:
        # a non-uniform grid: one call per interval so that every step is exactly the grid's
        for a, b in zip(times[:-1], times[1:]):
            ts = torch.tensor([a, b], dtype=u.dtype, device=u.device)
            y = torchsde.sdeint(adapter, y, ts, method=method, dt=b - a, bm=bm)[-1]
        calls = len(times) - 1
    # each sdeint call evaluates the drift once more to check its contract (shapes): not a solver step
    nfe = reverse.evaluations - calls
    solution = Solution(state=y.reshape(u.shape), nfe=nfe, times=times)
    check_finite_tensor("the torchsde sample", solution.state)
    return _denoise(reverse, solution, denoise_eps)
