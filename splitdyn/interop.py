r"""The reference solvers as samplers: ``torchsde.sdeint`` on the reverse SDE and ``torchdiffeq.odeint`` on the
probability-flow ODE, behind the same entry point as our steps (:func:`splitdyn.sample`).

A :class:`ReferenceSolver` runs its own loop: :func:`splitdyn.sample` hands it the reverse-time dynamics, the
initial state and the grid, and gets a :class:`~splitdyn.integrate.Solution` back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .checks import check_finite_tensor, check_positive
from .integrate import DivergenceError, Solution
from .reverse import ProbabilityFlowODE, ReverseSDE

__all__ = ["ReferenceSolver", "TorchsdeSolver", "AdaptiveProbabilityFlow"]

# the Brownian information each torchsde method needs from a BrownianInterval we build for it
_LEVY_AREA = {"srk": "space-time", "log_ode": "foster"}
_TORCHSDE_METHODS = ("euler", "milstein", "srk", "heun", "midpoint", "reversible_heun", "euler_heun")
_TORCHDIFFEQ_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")


def _finite(what: str, state: torch.Tensor) -> torch.Tensor:
    try:
        return check_finite_tensor(what, state)
    except ValueError as exc:
        raise DivergenceError(f"{exc}: the sampler diverged (steps too large, or a score returning NaN/inf?)") from None


class ReferenceSolver(ABC):
    """A sampler with its own loop (:class:`~splitdyn.protocols.ReferenceSolverProtocol`).

    ``needs_grid`` says whether it follows a grid; one that does not picks its own steps and stops at forward
    time ``eps`` (a positive float it must set).
    """

    needs_grid: bool = True
    eps: float | None = None

    @abstractmethod
    def solve(self, reverse: ReverseSDE, u: torch.Tensor, times: list[float] | None, eps: float, *,
              generator=None, progress=False, callback=None, save_at=None) -> Solution:
        """Integrate from the prior (reverse time 0) to forward time ``eps``."""


class TorchsdeSolver(ReferenceSolver):
    r"""The reverse SDE solved by ``torchsde.sdeint`` with exactly one step per grid interval.

    On a uniform grid (without callback or saved states) this is one ``sdeint`` call over
    :math:`[\tau_0, \tau_n]` with ``dt`` the step enlarged by :math:`10^{-11}` relative (with ``dt`` exactly
    the step, rounding of :math:`\tau_0 + k\,dt` can add a spurious tiny step): the call a user benchmarking
    torchsde writes. Otherwise ``sdeint`` is called once per interval with a ``dt`` larger than the interval.
    Each ``sdeint`` call first evaluates the drift once to check shapes; those evaluations are not counted.

    Parameters
    ----------
    method:
        A torchsde Itô method (``"euler"``, ``"milstein"``, ``"srk"``); ``"srk"`` needs ``noise_type="additive"``.
    noise_type:
        ``"diagonal"`` (``G`` diagonal, as for CLD and VP), ``"additive"`` or ``"general"``.
    bm:
        A torchsde Brownian motion of size ``(batch, noise channels)`` covering the grid; default a
        ``torchsde.BrownianInterval`` whose entropy is drawn from the sampler's ``generator``.
    """

    def __init__(self, method: str = "euler", noise_type: str = "diagonal", bm=None) -> None:
        if method not in _TORCHSDE_METHODS:
            raise ValueError(f"method must be one of {_TORCHSDE_METHODS}, got {method!r}")
        if noise_type not in ("diagonal", "additive", "general"):
            raise ValueError(f"noise_type must be 'diagonal', 'additive' or 'general', got {noise_type!r}")
        self.method, self.noise_type, self.bm = method, noise_type, bm

    def solve(self, reverse, u, times, eps, *, generator=None, progress=False, callback=None, save_at=None):
        import torchsde

        adapter = reverse.as_torchsde(u.shape[2:], noise_type=self.noise_type)
        batch = u.shape[0]
        bm = self.bm
        if bm is None:
            channels = int(reverse.diffusion_matrix(0.0).shape[-1]) * adapter.d
            entropy = None
            if generator is not None:
                entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
            bm = torchsde.BrownianInterval(t0=times[0], t1=times[-1], size=(batch, channels), dtype=u.dtype,
                                           device=u.device, entropy=entropy,
                                           levy_area_approximation=_LEVY_AREA.get(self.method, "none"))
        y = u.reshape(batch, -1)
        saved = set(save_at or [])
        trajectory = [u] if 0 in saved else []
        widths = [b - a for a, b in zip(times[:-1], times[1:])]
        uniform = max(widths) - min(widths) <= 1e-12 * max(widths)
        reverse.reset_count()
        if uniform and not (callback is not None or any(j > 0 for j in saved) or progress):
            ts = torch.tensor([times[0], times[-1]], dtype=torch.float64, device=u.device)
            y = torchsde.sdeint(adapter, y, ts, method=self.method, dt=widths[0] * (1.0 + 1e-11), bm=bm)[-1]
            calls = 1
        else:
            steps = range(len(times) - 1)
            if progress:
                from tqdm.auto import tqdm

                steps = tqdm(steps, desc=progress if isinstance(progress, str) else f"torchsde {self.method}",
                             leave=False)
            for i in steps:
                a, b = times[i], times[i + 1]
                ts = torch.tensor([a, b], dtype=torch.float64, device=u.device)
                y = torchsde.sdeint(adapter, y, ts, method=self.method, dt=2.0 * (b - a), bm=bm)[-1]
                if i + 1 in saved:
                    trajectory.append(y.reshape(u.shape))
                if callback is not None:
                    callback(i, b, y.reshape(u.shape))
            calls = len(times) - 1
        state = _finite("the torchsde sample", y.reshape(u.shape))
        return Solution(state=state, nfe=reverse.evaluations - calls, times=times,
                        trajectory=trajectory or None, saved_times=[times[j] for j in sorted(saved)] or None)


class AdaptiveProbabilityFlow(ReferenceSolver):
    r"""The probability-flow ODE (eq. 58) from forward time ``T`` down to ``eps`` with ``torchdiffeq.odeint``.

    The solver picks its own steps, so it takes no grid: pass ``grid=None`` and the cutoff here. ``nfe``
    counts every vector-field evaluation. The paper's setting is ``dopri5`` with ``rtol = atol = 1e-5``.

    Parameters
    ----------
    rtol, atol:
        Positive tolerances (relative and absolute) of the adaptive solver.
    method:
        An adaptive torchdiffeq method (``"dopri5"``, ``"tsit5"``, ``"bosh3"``, ...).
    eps:
        Forward time where the solve stops (the cutoff :math:`\epsilon`).
    """

    needs_grid = False

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", eps: float = 1e-3) -> None:
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        if method not in _TORCHDIFFEQ_METHODS:
            raise ValueError(f"method must be an adaptive torchdiffeq method {_TORCHDIFFEQ_METHODS}, got {method!r}")
        self.method = method
        self.eps = check_positive("eps", eps)

    def solve(self, reverse, u, times, eps, *, generator=None, progress=False, callback=None, save_at=None):
        import torchdiffeq

        if callback is not None or progress:
            raise ValueError("the adaptive probability-flow solver picks its own steps: it takes no callback or "
                             "progress bar (use a fixed-grid step for those)")
        if u.dtype == torch.float16 or u.dtype == torch.bfloat16:
            raise TypeError(f"dtype must be float32 or float64 for the adaptive ODE solver (its step-size control "
                            f"needs the precision), got {u.dtype}")
        ode = ProbabilityFlowODE(reverse.sde, reverse.score, reverse.score_components)
        T = reverse.T
        if not eps < T:
            raise ValueError(f"eps must be smaller than T = {T}, got {eps}")

        def field(t, y):
            v = ode(t, y)
            # one sync per evaluation, as the adaptive step control makes anyway: a NaN score would otherwise
            # surface as a NaN time deep inside the solver
            if not bool(torch.isfinite(v).all()):
                raise DivergenceError(
                    f"the probability-flow vector field is non-finite (NaN or inf) at forward time t = "
                    f"{float(t):.6g}: the score returned NaN/inf, or the solve diverged"
                )
            return v

        wanted = [T - tau for tau in (save_at or [])]
        out_times = sorted({T, eps, *wanted}, reverse=True)
        ts = torch.tensor(out_times, dtype=torch.float64, device=u.device)
        path = torchdiffeq.odeint(field, u, ts, rtol=self.rtol, atol=self.atol, method=self.method)
        state = _finite("the probability-flow sample", path[-1])
        trajectory = [path[out_times.index(t)] for t in sorted(wanted, reverse=True)] if wanted else None
        return Solution(state=state, nfe=ode.evaluations, times=[0.0, T - eps], trajectory=trajectory,
                        saved_times=[T - t for t in sorted(wanted, reverse=True)] or None)

