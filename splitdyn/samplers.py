r"""Samplers for reverse-time dynamics, as plain functions over a time grid (k-diffusion style).

Every grid sampler takes a :class:`~splitdyn.reverse.ReverseSDE`, an initial state drawn from the prior, and
a strictly increasing reverse-time grid :math:`0 = \tau_0 < \dots < \tau_n = T - \epsilon` from
:mod:`splitdyn.grids` (CPU floats: no device synchronisation per step), and returns a
:class:`~splitdyn.integrate.Solution` holding the final state and the number of score evaluations (NFE).

- :func:`sample_euler_maruyama`: Euler-Maruyama on the reverse SDE (one NFE per step).
- :func:`sample_split`: a splitting integrator, the exact linear flow :math:`A` around an Euler step :math:`S`
  of the score part (one NFE per step); for CLD with ``scheme="strang"`` and ``time_point=0`` it is SSCS
  (the paper's Algorithm 1).
- :func:`sample_torchsde`: the same reverse SDE solved by ``torchsde.sdeint`` on the same grid, the
  reference path.
- :func:`sample_probability_flow`: the probability-flow ODE (eq. 58) with an adaptive ``torchdiffeq``
  solver from :math:`T` down to :math:`\epsilon`.

``denoise_eps`` (``denoise`` for the ODE) finishes with one noise-free Euler step of size :math:`\epsilon`
from forward time :math:`\epsilon` to 0 (paper eq. 107), which evaluates the score once and is counted as one
NFE. Every sampler raises ``ValueError`` if its result holds NaN or infinity.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .checks import check_finite_tensor, check_positive, check_state
from .grids import check_grid
from .integrate import Solution, integrate
from .propagators import EulerDrift, EulerMaruyama, ExactLinearFlow
from .reverse import ProbabilityFlowODE, ReverseSDE
from .splitting import Composition, strang, trotter

__all__ = [
    "split_step",
    "sample_euler_maruyama",
    "sample_split",
    "sample_probability_flow",
    "sample_torchsde",
]

Callback = Callable[[int, float, torch.Tensor], None]

_SCHEMES = {"strang": strang, "trotter": trotter}
# the Brownian information each torchsde method needs from a BrownianInterval we build for it
_LEVY_AREA = {"srk": "space-time", "log_ode": "foster"}


def _check_reverse(reverse_sde) -> ReverseSDE:
    if not isinstance(reverse_sde, ReverseSDE):
        raise TypeError(f"reverse_sde must be a splitdyn.ReverseSDE, got {type(reverse_sde).__name__}")
    return reverse_sde


def _check_sample(what: str, state: torch.Tensor) -> torch.Tensor:
    try:
        return check_finite_tensor(what, state)
    except ValueError as exc:
        raise ValueError(f"{exc}: the sampler diverged (steps too large, or a score returning NaN/inf?)") from None


def _check_denoise_eps(denoise_eps, T: float, times: list[float]) -> float | None:
    """``denoise_eps`` must be the forward time where the grid stops: the denoising step goes from it to 0."""
    if denoise_eps is None:
        return None
    eps = check_positive("denoise_eps", denoise_eps)
    end = T - times[-1]
    if not math.isclose(eps, end, rel_tol=1e-9, abs_tol=1e-12 * max(1.0, T)):
        raise ValueError(
            f"denoise_eps must equal the forward time where the grid stops, T - grid[-1] = {end:.6g} (the "
            f"denoising step goes from forward time eps to 0), got {eps:.6g}"
        )
    return eps


def _denoise(reverse_sde: ReverseSDE, solution: Solution, eps: float | None) -> Solution:
    if eps is not None:
        solution.state = _check_sample("the denoised sample", reverse_sde.denoise(solution.state, eps))
        solution.nfe += 1
    return solution


def split_step(reverse_sde: ReverseSDE, *, precision=None, time_point: float = 0.0, scheme: str = "strang") -> Composition:
    r"""One step of the splitting sampler for a reverse SDE whose forward SDE is a :class:`~splitdyn.LinearSDE`.

    The reverse drift splits as :math:`-f + GG^\top s = \underbrace{(-F - GG^\top P)u}_{A} +
    \underbrace{GG^\top (s + P u)}_{S}` for a reference precision :math:`P`. :math:`A` (with the noise) is
    followed exactly (:class:`~splitdyn.propagators.ExactLinearFlow` of ``sde.reverse_linear_part(P)``) and
    :math:`S` by an Euler step (:class:`~splitdyn.propagators.EulerDrift`, one score evaluation).

    Parameters
    ----------
    reverse_sde:
        The reverse-time SDE.
    precision:
        ``k x k`` reference precision :math:`P`; default the stationary precision (for CLD
        :math:`\mathrm{diag}(1, M^{-1})`, which gives the paper's split, eq. 76-77).
    time_point:
        :math:`\theta \in [0, 1]`: the score is evaluated at :math:`\tau + \theta h`. ``0`` (the step's
        start) is the paper's Algorithm 1.
    scheme:
        ``"strang"``: :math:`A(h/2)\,S(h)\,A(h/2)` (SSCS for CLD); ``"trotter"``: :math:`A(h)\,S(h)`.
    """
    _check_reverse(reverse_sde)
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(_SCHEMES)}, got {scheme!r}")
    linear = ExactLinearFlow(reverse_sde.sde.reverse_linear_part(precision))
    score_step = EulerDrift(reverse_sde.score_drift(precision), nfe=1, time_point=time_point)
    return _SCHEMES[scheme](linear, score_step)


def sample_euler_maruyama(
    reverse_sde: ReverseSDE,
    u: torch.Tensor,
    grid,
    *,
    denoise_eps: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    save_trajectory: bool = False,
) -> Solution:
    r"""Euler-Maruyama on the reverse-time SDE: :math:`u \leftarrow u + h\,\bar f(u, \tau) + \sqrt h\,G\,\xi`.

    Parameters
    ----------
    reverse_sde:
        The reverse-time SDE (forward SDE + score).
    u:
        Initial state ``(batch, k, *event)``, usually a prior sample.
    grid:
        Strictly increasing reverse times (e.g. ``uniform_grid(n, T, eps)``).
    denoise_eps:
        If given, finish with the denoising step (eq. 107) of this size; it must equal ``T - grid[-1]``.
    generator:
        ``torch.Generator`` on ``u``'s device for the noise.
    progress:
        Show a tqdm progress bar.
    callback:
        ``callback(i, tau_{i+1}, u)`` after each step.
    save_trajectory:
        Keep the state at every grid time (``Solution.trajectory``).

    Returns
    -------
    Solution
        ``nfe`` = number of steps (+ 1 with denoising).
    """
    _check_reverse(reverse_sde)
    check_state("u", u, reverse_sde.num_components)
    eps = _check_denoise_eps(denoise_eps, reverse_sde.T, check_grid(grid))
    solution = integrate(EulerMaruyama(reverse_sde), u, grid, generator=generator, progress=progress,
                         callback=callback, save_trajectory=save_trajectory)
    return _denoise(reverse_sde, solution, eps)


def sample_split(
    reverse_sde: ReverseSDE,
    u: torch.Tensor,
    grid,
    *,
    precision=None,
    time_point: float = 0.0,
    scheme: str = "strang",
    denoise_eps: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    save_trajectory: bool = False,
) -> Solution:
    r"""The splitting sampler (:func:`split_step`) over ``grid``: SSCS for CLD with the defaults.

    ``precision``, ``time_point`` and ``scheme`` are those of :func:`split_step`; the other arguments and the
    result are as for :func:`sample_euler_maruyama` (``nfe`` = number of steps, + 1 with denoising).
    """
    _check_reverse(reverse_sde)
    check_state("u", u, reverse_sde.num_components)
    eps = _check_denoise_eps(denoise_eps, reverse_sde.T, check_grid(grid))
    step = split_step(reverse_sde, precision=precision, time_point=time_point, scheme=scheme)
    solution = integrate(step, u, grid, generator=generator, progress=progress, callback=callback,
                         save_trajectory=save_trajectory)
    return _denoise(reverse_sde, solution, eps)


def sample_probability_flow(
    ode: ProbabilityFlowODE,
    u: torch.Tensor,
    *,
    T: float | None = None,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    denoise: bool = True,
) -> Solution:
    r"""Integrate the probability-flow ODE from forward time ``T`` down to ``eps`` with ``torchdiffeq.odeint``.

    Parameters
    ----------
    ode:
        The probability-flow ODE (forward SDE + score).
    u:
        State at forward time ``T`` (a prior sample), ``(batch, k, *event)``.
    T:
        Start time; default ``ode.T``.
    eps:
        Forward time where the solve stops (the cutoff :math:`\epsilon`).
    rtol, atol, method:
        ``torchdiffeq`` settings; the default adaptive Runge-Kutta 4(5) (``dopri5``) with
        ``rtol = atol = 1e-5`` is the paper's (App. E.2.5). Times are float64 whatever ``u``'s dtype.
    denoise:
        Finish with the denoising step (eq. 107) of size ``eps``: the paper found it necessary for the ODE.

    Returns
    -------
    Solution
        ``nfe`` counts every score evaluation of the solver (+ 1 with denoising); ``times = [T, eps]``.
    """
    import torchdiffeq

    if not isinstance(ode, ProbabilityFlowODE):
        raise TypeError(f"ode must be a splitdyn.ProbabilityFlowODE, got {type(ode).__name__}")
    check_state("u", u, ode.num_components)
    T = ode.T if T is None else check_positive("T", T)
    if T > ode.T:
        raise ValueError(f"T must not exceed the SDE's horizon {ode.T}, got {T}")
    eps = check_positive("eps", eps)
    if eps >= T:
        raise ValueError(f"eps must be smaller than T = {T}, got {eps}")
    def field(t, y):
        v = ode(t, y)
        # one device sync per evaluation, as the adaptive step control makes anyway: a NaN score would
        # otherwise surface as a NaN time deep inside the solver
        if not bool(torch.isfinite(v).all()):
            raise ValueError(
                f"the probability-flow vector field is non-finite (NaN or inf) at t = {float(t):.6g}: the "
                "sampler diverged (a score returning NaN/inf?)"
            )
        return v

    ode.reset_count()
    times = torch.tensor([T, eps], dtype=torch.float64, device=u.device)
    state = torchdiffeq.odeint(field, u, times, rtol=rtol, atol=atol, method=method)[-1]
    solution = Solution(state=_check_sample("the probability-flow sample", state), nfe=ode.evaluations,
                        times=[T, eps])
    if denoise:
        solution = _denoise(ReverseSDE(ode.sde, ode.score, ode.score_components), solution, eps)
    return solution


def sample_torchsde(
    reverse_sde: ReverseSDE,
    u: torch.Tensor,
    grid,
    *,
    method: str = "euler",
    noise_type: str = "diagonal",
    bm=None,
    denoise_eps: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    save_trajectory: bool = False,
) -> Solution:
    r"""The reference path: the reverse SDE solved by ``torchsde.sdeint`` with exactly one step per grid interval.

    ``torchsde`` integrates with a fixed step ``dt`` from ``ts[0]``, clipping each step at ``ts[-1]``; it
    cannot follow a non-uniform grid, and with ``dt`` equal to the step the rounding of
    :math:`\tau_0 + k\,dt` can add a spurious tiny step. On a uniform grid (and without trajectory, callback
    or progress bar) this is one ``sdeint`` call over :math:`[\tau_0, \tau_n]` with ``dt`` the step enlarged
    by :math:`10^{-11}` relative: exactly :math:`n` steps, the last clipped onto :math:`\tau_n`. That is the
    call a user benchmarking torchsde writes, so step-cost comparisons are fair. Otherwise ``sdeint`` is
    called once per interval :math:`[\tau_i, \tau_{i+1}]` with a ``dt`` larger than the interval, which
    gives one step of exactly :math:`\tau_{i+1} - \tau_i`. Each ``sdeint`` call first evaluates the drift
    once to check shapes; those evaluations are not counted in ``nfe`` (per-interval calls double the cost
    of this reference path, which is then meant for checking, not speed).

    Parameters
    ----------
    reverse_sde, u, grid, denoise_eps, progress, callback, save_trajectory:
        As for :func:`sample_euler_maruyama`.
    method:
        A torchsde Itô method (``"euler"``, ``"milstein"``, ``"srk"``); ``"srk"`` needs
        ``noise_type="additive"``.
    noise_type:
        ``"diagonal"`` (``G`` diagonal, as for CLD and the VPSDE), ``"additive"`` or ``"general"``
        (see :class:`~splitdyn.reverse.TorchsdeAdapter`).
    bm:
        A torchsde Brownian motion of size ``(batch, noise channels)`` covering the grid. Default: a
        ``torchsde.BrownianInterval`` over ``[grid[0], grid[-1]]`` whose entropy is drawn from ``generator``
        (reproducible with a seeded generator), with the Lévy area ``method`` needs.
    generator:
        Seeds the default ``bm``; unused if ``bm`` is given.

    Returns
    -------
    Solution
        ``nfe`` = the solver's score evaluations (one per step for ``euler``), + 1 with denoising.
    """
    import torchsde

    _check_reverse(reverse_sde)
    check_state("u", u, reverse_sde.num_components)
    times = check_grid(grid)
    eps = _check_denoise_eps(denoise_eps, reverse_sde.T, times)
    adapter = reverse_sde.as_torchsde(u.shape[2:], noise_type=noise_type)
    batch = u.shape[0]
    if bm is None:
        channels = int(reverse_sde.diffusion_matrix(0.0).shape[-1]) * adapter.d
        entropy = None
        if generator is not None:
            entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
        bm = torchsde.BrownianInterval(t0=times[0], t1=times[-1], size=(batch, channels), dtype=u.dtype,
                                       device=u.device, entropy=entropy,
                                       levy_area_approximation=_LEVY_AREA.get(method, "none"))
    y = u.reshape(batch, -1)
    trajectory = [u] if save_trajectory else None
    widths = [b - a for a, b in zip(times[:-1], times[1:])]
    uniform = max(widths) - min(widths) <= 1e-12 * max(widths)
    reverse_sde.reset_count()
    if uniform and not (save_trajectory or callback is not None or progress):
        # One sdeint call, as a user benchmarking torchsde would write it. torchsde steps
        # t <- min(t + dt, ts[-1]); with dt = h exactly, rounding of t0 + k*dt can leave a spurious tiny
        # extra step, so dt is h enlarged by 1e-11 relative: n steps, the last clipped onto the grid's end.
        ts = torch.tensor([times[0], times[-1]], dtype=torch.float64, device=u.device)
        y = torchsde.sdeint(adapter, y, ts, method=method, dt=widths[0] * (1.0 + 1e-11), bm=bm)[-1]
        calls = 1
    else:
        steps = range(len(times) - 1)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"torchsde {method}", leave=False)
        for i in steps:
            a, b = times[i], times[i + 1]
            ts = torch.tensor([a, b], dtype=torch.float64, device=u.device)
            y = torchsde.sdeint(adapter, y, ts, method=method, dt=2.0 * (b - a), bm=bm)[-1]
            if save_trajectory or callback is not None:
                state = y.reshape(u.shape)
                if save_trajectory:
                    trajectory.append(state)
                if callback is not None:
                    callback(i, b, state)
        calls = len(times) - 1
    # each sdeint call evaluates the drift once to check its contract (shapes) before stepping
    nfe = reverse_sde.evaluations - calls
    solution = Solution(state=_check_sample("the torchsde sample", y.reshape(u.shape)), nfe=nfe, times=times,
                        trajectory=trajectory)
    return _denoise(reverse_sde, solution, eps)
