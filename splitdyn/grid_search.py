r"""Time grids optimised for a sampler and a budget of score evaluations, using only the model.

Few-step samplers depend on where their steps are. :func:`search_grid` chooses the grid of a given sampler
and NFE budget that minimises the discrepancy to a many-step solution of the same dynamics, on a calibration
batch drawn from the prior (the idea of Align Your Steps, LD3, GITS and DMN; no data samples are used):

.. math::

    D(\mathcal{T}) = \frac{1}{B}\sum_{b=1}^{B} \big\| \mathrm{out}\big(\Psi_{\mathcal{T}}(u_T^{(b)})\big)
    - \mathrm{out}\big(\Psi_{\mathrm{ref}}(u_T^{(b)})\big) \big\|^2,

where :math:`\Psi_{\mathcal{T}}` is the sampler on grid :math:`\mathcal{T}`, :math:`\Psi_{\mathrm{ref}}` the same
sampler on a fine grid (``reference_steps`` power-3 steps to the same cutoff, or a given reference grid), and
``out`` the data component of the final state (or a user's ``finish`` map, e.g. a score-free final step).
For stochastic samplers both runs read the same Brownian path (a ``torchsde`` ``BrownianInterval`` with
space-time Lévy area, fixed by the seed, through :class:`~splitdyn.steps.noise.BrownianNoise`), so :math:`D`
is the strong error of the grid and the optimum is a property of the grid, not of one noise draw.

**Parameterisation and optimiser.** A grid of ``n`` steps is ``n - 1`` interior forward times
:math:`T > t_1 > \dots > t_{n-1} > \epsilon` (the ends are fixed). The search is cyclic coordinate descent over
the interior points in :math:`\log t`: point :math:`k` moves inside the bracket of its neighbours,
:math:`\log t_k = \log t_{k+1} + r\,(\log t_{k-1} - \log t_{k+1})`, with :math:`r \in [0.02, 0.98]` found by a
golden-section search of ``evaluations_per_point`` evaluations; the move is kept only if it lowers
:math:`D`. This keeps every iterate a strictly increasing grid with the fixed ends, it never increases
:math:`D`, it is deterministic (no random proposals), and it needs no derivative of the sampler with respect
to its grid (our plans compute their float64 coefficient tables on the host, so autograd through the times
is not available; a derivative-free search of a handful of coordinates costs a few hundred sampler runs,
seconds on a toy problem). Before the search, the closed-form candidates (power-:math:`\rho` grids for
:math:`\rho \in \{1, 2, 3, 4, 5, 7\}`, the quadratic grid and the log-SNR-uniform grid, see
:class:`~splitdyn.grids.InformationLogSNR`) are scored, and the search starts from the best of them.

The result carries the optimised :class:`~splitdyn.grids.GivenGrid` (save it with
:meth:`~splitdyn.grids.GivenGrid.to_dict`), the discrepancies of the candidates and of the result, and the
NFE the grid uses. Evaluate a searched grid on fresh prior draws, never on its calibration batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .checks import check_count, check_nonnegative, check_positive
from .grids import GivenGrid, Grid, InformationLogSNR, LogSNRGrid, PowerGrid, QuadraticGrid
from .reverse import ReverseSDE
from .sample import sample, sampler_step
from .steps.base import Step
from .steps.noise import BrownianNoise

__all__ = ["GridSearchResult", "search_grid", "candidate_grids", "grid_discrepancy"]

F64 = torch.float64
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_EDGE = 0.02  # a moved point stays this fraction of its bracket away from its neighbours


@dataclass
class GridSearchResult:
    """What :func:`search_grid` found.

    Attributes
    ----------
    grid:
        The optimised grid (``n + 1`` reverse times from 0 to :math:`T - \\epsilon`).
    discrepancy:
        Its mean squared discrepancy :math:`D` to the reference on the calibration batch.
    start:
        The name of the closed-form candidate the search started from.
    candidates:
        :math:`D` of every closed-form candidate (name -> value).
    steps, nfe:
        The grid's step count and the score evaluations one run uses (``denoise`` included).
    evaluations:
        Sampler runs the search made (candidates and reference excluded).
    history:
        :math:`D` after each sweep (the first entry is the start).
    """

    grid: GivenGrid
    discrepancy: float
    start: str
    candidates: dict[str, float]
    steps: int
    nfe: int
    evaluations: int
    history: list[float] = field(default_factory=list)


def candidate_grids(process, steps: int, eps: float) -> dict[str, Grid]:
    r"""The closed-form grids the search starts from: ``power-rho`` for :math:`\rho \in \{1, 2, 3, 4, 5, 7\}`,
    ``quadratic`` and ``log-snr`` (the process's own log-SNR, else :class:`~splitdyn.grids.InformationLogSNR`;
    left out when ``eps`` is 0 or the process is not a linear SDE)."""
    grids: dict[str, Grid] = {f"power-{rho:g}": PowerGrid(steps, rho, eps) for rho in (1.0, 2.0, 3.0, 4.0, 5.0, 7.0)}
    grids["quadratic"] = QuadraticGrid(steps, eps)
    if eps > 0:
        try:
            snr = process if callable(getattr(process, "time_from_log_snr", None)) else InformationLogSNR(process)
            grids["log-snr"] = LogSNRGrid(steps, snr, eps)
        except (TypeError, ValueError):
            pass
    return grids


class _Objective:
    """The discrepancy of a grid to the reference on one calibration batch (counts its evaluations)."""

    def __init__(self, process, score, step, batch, eps, seed, denoise, finish, score_components, noise_levy):
        self.process, self.score, self.step = process, score, step
        self.batch, self.eps, self.seed = batch, eps, seed
        self.denoise, self.finish, self.score_components = denoise, finish, score_components
        self.T = float(process.T)
        import torchsde  # a deterministic sampler never queries the path

        width = int(process.noise_dimension) * math.prod(int(s) for s in batch.shape[2:])
        self.bm = torchsde.BrownianInterval(0.0, (self.T - eps) * (1 + 1e-12), size=(batch.shape[0], width), dtype=F64,
                                            entropy=seed, levy_area_approximation=noise_levy)
        self.reference: torch.Tensor | None = None
        self.evaluations = 0
        self.last_nfe = 0

    def run(self, times: torch.Tensor) -> torch.Tensor:
        noise = BrownianNoise(self.bm, torch.Generator().manual_seed(self.seed + 1))
        try:
            solution = sample(self.process, self.score, self.batch, times, step=self.step, denoise=self.denoise,
                              score_components=self.score_components, noise=noise,
                              generator=torch.Generator().manual_seed(self.seed + 2))
        except TypeError as error:
            if "generator" not in str(error):
                raise
            raise ValueError(f"{type(self.step).__name__} draws its noise from a torch.Generator only, so it cannot "
                             "share a Brownian path with its reference run: the grid search takes deterministic "
                             "samplers and stochastic ones that accept a NoiseSource") from None
        self.last_nfe = int(solution.nfe)
        out = self.finish(solution.state) if self.finish is not None else solution.state[:, 0]
        return out.to(F64).reshape(out.shape[0], -1)

    def __call__(self, times: torch.Tensor) -> float:
        self.evaluations += 1
        value = ((self.run(times) - self.reference) ** 2).sum(-1).mean().item()
        return value if math.isfinite(value) else math.inf


def grid_discrepancy(process, score, step, grid, reference, *, initial: torch.Tensor, seed: int = 0,
                     denoise: bool = False, finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     score_components: Sequence[int] | None = None, levy_area: str = "space-time"):
    r"""The discrepancy :math:`D` of ``grid`` to ``reference`` (both grids, or reverse times, to the same cutoff)
    for the sampler ``step`` on the prior draws ``initial`` (a state ``(batch, k, *event)``), as in
    :func:`search_grid`. ``seed`` fixes the shared Brownian path of a stochastic sampler.

    ``grid`` may be a list of grids: then the reference runs once and a list of discrepancies is returned.
    """
    T = float(process.T)
    many = isinstance(grid, list) and len(grid) > 0 and not isinstance(grid[0], (int, float))
    grids = [_times(g, T) for g in (grid if many else [grid])]
    ref_times = _times(reference, T)
    if any(abs(g[-1].item() - ref_times[-1].item()) > 1e-12 for g in grids):
        raise ValueError("grid and reference must end at the same cutoff")
    objective = _objective(process, score, step, initial, T - ref_times[-1].item(), seed, denoise, finish,
                           score_components, levy_area)
    objective.reference = objective.run(ref_times)
    values = [objective(g) for g in grids]
    return values if many else values[0]


def _times(grid, T: float) -> torch.Tensor:
    if hasattr(grid, "reverse_times"):
        return grid.reverse_times(T)
    return torch.as_tensor(grid, dtype=F64)


def _objective(process, score, step, initial, eps, seed, denoise, finish, score_components, levy_area):
    if score_components is None:
        score_components = getattr(process, "score_components", None)
    reverse = ReverseSDE(process, score, score_components)
    solver = sampler_step(step, reverse)
    if not isinstance(solver, Step):
        raise TypeError(f"step must be a fixed-grid sampler (a splitdyn Step or its name), got {type(solver).__name__}")
    return _Objective(process, score, solver, initial, eps, seed, denoise, finish, score_components, levy_area)


def search_grid(
    process,
    score,
    step,
    nfe: int,
    *,
    event_shape: Sequence[int],
    batch: int = 512,
    eps: float = 1e-3,
    denoise: bool | str = False,
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reference_steps: int = 256,
    reference=None,
    seed: int = 0,
    sweeps: int = 3,
    evaluations_per_point: int = 10,
    tolerance: float = 1e-3,
    score_components: Sequence[int] | None = None,
    levy_area: str = "space-time",
) -> GridSearchResult:
    r"""The grid that minimises the discrepancy of ``step`` at ``nfe`` score evaluations to a many-step
    solution, on a calibration batch from the prior (see the module docstring).

    Parameters
    ----------
    process:
        The forward SDE (anything :func:`~splitdyn.sample.sample` accepts, with ``prior_sample``).
    score:
        ``score(u, t)`` in forward time (the model; no data is used).
    step:
        A fixed-grid sampler: a name in :data:`~splitdyn.sample.SAMPLERS`, a Step or a factory.
    nfe:
        The budget of score evaluations of one run. The grid has ``(nfe - e) // step.nfe`` steps (``e = 1`` with
        the denoising Euler step, else 0); a budget that allows no step is refused.
    event_shape:
        The event shape of the samples (e.g. ``(2,)``).
    batch:
        The size of the calibration batch (prior draws with ``seed``).
    eps:
        The forward-time cutoff where the grid ends.
    denoise:
        The final step of each run, as in :func:`~splitdyn.sample.sample`: ``True`` the denoising Euler step (one
        more NFE, counted in the budget), ``"score-free"`` the score-free one (CLD, no NFE), ``False`` none.
    finish:
        A map from the final state ``(batch, k, *event)`` to the output that is compared (default its data
        component ``state[:, 0]``); e.g. CLD's score-free update :math:`x_0 = x_\epsilon - \epsilon\beta M^{-1}v_\epsilon`.
    reference_steps, reference:
        The reference run: ``reference`` (a grid or reverse times ending at the same cutoff) if given, else
        ``reference_steps`` steps of a power-3 grid.
    seed:
        Fixes the calibration batch, the shared Brownian path and every other draw: the search is
        deterministic for a seed.
    sweeps, evaluations_per_point, tolerance:
        At most ``sweeps`` passes over the interior points, each point searched with
        ``evaluations_per_point`` runs; the search stops early when a sweep lowers :math:`D` by less than
        the relative ``tolerance``.
    score_components:
        As in :func:`~splitdyn.sample.sample`.
    levy_area:
        The Brownian path's Lévy-area approximation for stochastic samplers (``torchsde`` names).

    Returns
    -------
    GridSearchResult
    """
    nfe = check_count("nfe", nfe)
    eps = check_positive("eps", eps)
    T = float(process.T)
    if eps >= T:
        raise ValueError(f"eps must be smaller than T = {T}, got {eps}")
    batch = check_count("batch", batch)
    sweeps = check_count("sweeps", sweeps, minimum=0)
    evaluations_per_point = check_count("evaluations_per_point", evaluations_per_point, minimum=2)
    tolerance = check_nonnegative("tolerance", tolerance)
    shape = (batch, *[check_count("event_shape", s) for s in event_shape])
    if not (isinstance(denoise, bool) or denoise == "score-free"):
        raise ValueError(f"denoise must be True, False or 'score-free', got {denoise!r}")
    extra = 1 if denoise is True else 0  # evaluations of the final step
    if not hasattr(process, "prior_sample"):
        raise TypeError(f"{type(process).__name__} has no prior_sample: the calibration batch comes from the prior")
    initial = process.prior_sample(shape, generator=torch.Generator().manual_seed(int(seed)), dtype=F64)
    objective = _objective(process, score, step, initial, eps, int(seed), denoise, finish, score_components,
                           levy_area)
    per_step = int(getattr(objective.step, "nfe", 1))
    steps = (nfe - extra) // max(per_step, 1)
    if steps < 1:
        raise ValueError(f"nfe = {nfe} is below what the sampler needs: one step costs {per_step} evaluation(s)"
                         + (" and the denoising step one more" if extra else "")
                         + f", so the budget must be at least {per_step + extra}")
    ref_times = (_times(reference, T) if reference is not None
                 else PowerGrid(check_count("reference_steps", reference_steps), 3.0, eps).reverse_times(T))
    if abs(ref_times[-1].item() - (T - eps)) > 1e-12 * max(1.0, T):
        raise ValueError(f"reference must end at the cutoff T - eps = {T - eps}, got {ref_times[-1].item()}")
    objective.reference = objective.run(ref_times)

    candidates = {}
    best_name, best_value, best_times = "", math.inf, None
    for name, grid in candidate_grids(process, steps, eps).items():
        times = grid.reverse_times(T)
        value = objective(times)
        candidates[name] = value
        if value < best_value:
            best_name, best_value, best_times = name, value, times
    if best_times is None:
        raise RuntimeError("every candidate grid diverged: the sampler cannot run at this budget")
    used = objective.last_nfe
    if used > nfe:
        raise ValueError(f"the sampler used {used} evaluations on {steps} steps, more than the budget nfe = {nfe}")
    objective.evaluations = 0

    log_t = torch.log(T - best_times).clone()  # forward times, decreasing: log T ... log eps
    value = best_value
    history = [value]
    for _ in range(sweeps):
        before = value
        for k in range(1, steps):
            value = _search_point(objective, log_t, k, value, evaluations_per_point, T)
        history.append(value)
        if not before - value > tolerance * before:
            break
    times = _reverse(log_t, T)
    return GridSearchResult(GivenGrid(times, T), value, best_name, candidates, steps, used, objective.evaluations,
                            history)


def _reverse(log_t: torch.Tensor, T: float) -> torch.Tensor:
    times = T - torch.exp(log_t)
    times[0] = 0.0
    return times


def _search_point(objective, log_t: torch.Tensor, k: int, value: float, evaluations: int, T: float) -> float:
    """Golden-section search of interior point ``k`` between its neighbours (in log t); keeps the best point."""
    lo, hi = log_t[k + 1].item(), log_t[k - 1].item()

    def at(r: float) -> float:
        trial = log_t.clone()
        trial[k] = lo + r * (hi - lo)
        return objective(_reverse(trial, T))

    a, b = _EDGE, 1.0 - _EDGE
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = at(c), at(d)
    best_r, best = (c, fc) if fc <= fd else (d, fd)
    for _ in range(evaluations - 2):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = at(c)
            if fc < best:
                best_r, best = c, fc
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = at(d)
            if fd < best:
                best_r, best = d, fd
    if best < value:
        log_t[k] = lo + best_r * (hi - lo)
        return best
    return value
