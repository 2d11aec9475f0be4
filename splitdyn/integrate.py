r"""The one loop: plan a step for a grid once, then apply it interval after interval.

The grid stays on the CPU as float64 (k-diffusion style): the loop issues no device synchronisation per
step, and all coefficient work happened when the step was planned (:mod:`splitdyn.steps.base`).

**NFE convention** (written once, here): ``nfe`` counts the score (network) evaluations actually made — the
calls the plan's :class:`~splitdyn.steps.base.EvaluationCounter` saw during the run (the score is wrapped
once, by the reverse SDE; a composition's reused values are not calls) — plus one for a denoising step.
Evaluations a reference solver makes only to check shapes are not counted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import torch

from .checks import check_arity, check_compile, check_flag, check_positive, check_progress
from .grids import check_grid
from .steps.base import Intervals, Plan, Step, evaluation_count
from .steps.noise import NoiseSource, as_noise_source

__all__ = ["Solution", "integrate", "plan_step", "save_indices", "DivergenceError"]

#: Type of a per-step callback: ``callback(i, t_{i+1}, u)`` after step ``i``.
Callback = Callable[[int, float, torch.Tensor], None]


class DivergenceError(ValueError):
    """The integration diverged: a non-finite state or one far beyond its starting scale."""


@dataclass
class Solution:
    """Result of :func:`integrate` (and of :func:`splitdyn.sample`).

    Attributes
    ----------
    state:
        The final state ``(batch, k, *event)``.
    nfe:
        Score / network evaluations made (see the module's NFE convention).
    times:
        The grid (Python floats, the dynamics' own time; reverse time for samplers).
    trajectory:
        The states at :attr:`saved_times` (the first being the initial state if it was asked for), or
        ``None`` when nothing was saved.
    saved_times:
        The grid times of :attr:`trajectory`.
    """

    state: torch.Tensor
    nfe: int
    times: list[float]
    trajectory: list[torch.Tensor] | None = field(default=None, repr=False)
    saved_times: list[float] | None = None

    def components(self) -> tuple[torch.Tensor, ...]:
        """The state's components, each ``(batch, *event)`` (for CLD: data ``x`` and velocity ``v``)."""
        return tuple(self.state.unbind(1))


def plan_step(step: Step, times: Sequence[float], like: torch.Tensor, *, fuse: bool = True) -> Plan:
    """Plan ``step`` for the intervals of a grid, for states like ``like``; ``fuse`` lets the plan fuse across
    grid times (``Intervals.fusable``: no state at the grid times is needed)."""
    if not isinstance(step, Step):
        raise TypeError(f"step must be a splitdyn Step (see splitdyn.steps), got {type(step).__name__}")
    return step.plan(Intervals.from_grid(times, fusable=fuse), like)


def save_indices(save_at, times: list[float]) -> list[int]:
    """Grid indices for ``save_at`` (``None``, ``"all"`` or grid times; anything off the grid is refused)."""
    if save_at is None:
        return []
    if isinstance(save_at, str):
        if save_at != "all":
            raise ValueError(f"save_at must be 'all' or a sequence of grid times, got {save_at!r}")
        return list(range(len(times)))
    grid = torch.tensor(times, dtype=torch.float64)
    wanted = torch.as_tensor(save_at, dtype=torch.float64).reshape(-1)
    indices = []
    for t in wanted.tolist():
        distance = (grid - t).abs()
        j = int(distance.argmin())
        if not distance[j] <= 1e-9 * max(1.0, abs(t)):
            raise ValueError(f"save_at times must be grid times; {t} is not on the grid")
        indices.append(j)
    return sorted(set(indices))


def _scale(u: torch.Tensor) -> float:
    return float(u.detach().abs().amax()) if u.numel() else 0.0


def integrate(
    step: Step,
    u: torch.Tensor,
    grid,
    *,
    generator: torch.Generator | None = None,
    save_at=None,
    progress: bool | str = False,
    callback: Callback | None = None,
    fuse: bool = True,
    differentiable: bool = False,
    divergence_factor: float | None = 1e4,
    compile: bool | dict = False,
    noise: NoiseSource | None = None,
    plan: Plan | None = None,
) -> Solution:
    r"""Advance ``u`` over ``grid`` with ``step``: plan once, then one planned call per interval.

    Parameters
    ----------
    step:
        A :class:`~splitdyn.steps.base.Step` (e.g. ``strang(ExactLinearFlow(...), EulerDrift(...))``).
    u:
        Initial state ``(batch, k, *event)``.
    grid:
        Strictly increasing times ``t_0 < ... < t_n`` in the dynamics' own time variable.
    generator:
        ``torch.Generator`` on ``u``'s device for reproducible noise.
    save_at:
        ``"all"`` or a sequence of grid times at which to keep the state (:attr:`Solution.trajectory`).
    progress:
        Show a tqdm progress bar (a string sets its label).
    callback:
        Called as ``callback(i, t_{i+1}, u)`` after each step.
    fuse:
        Let compositions fuse adjacent exact flows (same law, fewer noise draws); only when no state at the
        grid times is needed (no ``callback``, nothing saved after the start).
    differentiable:
        Keep the autograd graph through the loop (default: the loop runs under ``torch.no_grad()``).
    divergence_factor:
        The final state must be finite and within this factor of the starting scale
        :math:`\max(1, \max|u_0|)`; otherwise the loop is replayed with the same noise to find the first
        step that crossed it, and a :class:`DivergenceError` names it. With ``generator=None`` the replay
        rewinds the device's default generator (CPU and CUDA; on another backend it draws fresh noise and may
        name a different step). ``None`` disables the magnitude check.
    compile:
        ``True`` or a dict of ``torch.compile`` options: compile the plans' tensor arithmetic (once per plan,
        never per time; see :meth:`~splitdyn.steps.base.Plan.compile`).
    noise:
        A :class:`~splitdyn.steps.noise.NoiseSource` the stochastic steps take their increments from instead
        of ``torch.randn`` (e.g. :class:`~splitdyn.steps.noise.BrownianNoise` around a ``torchsde``
        Brownian motion, to run on the same path as ``torchsde``); ``generator`` is then not used.
    plan:
        A plan of ``step`` for this grid and states like ``u`` made earlier (:func:`plan_step`, compiled or
        not), to skip planning; default: planned here.

    Examples
    --------
    Ten Euler steps of size 0.1 of :math:`du/dt = -u` multiply the state by :math:`0.9^{10} \approx 0.3487`:

    >>> import torch
    >>> from splitdyn import EulerDrift, integrate
    >>> solution = integrate(EulerDrift(lambda u, t: -u, nfe=0), torch.ones(1, 1, 1), torch.linspace(0.0, 1.0, 11))
    >>> solution.state
    tensor([[[0.3487]]])
    >>> solution.nfe, len(solution.times)
    (0, 11)
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    if not u.is_floating_point():
        raise TypeError(f"u must have a floating dtype, got {u.dtype}")
    if u.ndim < 2 or u.shape[0] == 0:
        raise ValueError(f"u must have shape (batch >= 1, k, *event), got {tuple(u.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise ValueError("u (the initial state) contains NaN or inf")
    check_flag("fuse", fuse)
    check_flag("differentiable", differentiable)
    if callback is not None:
        check_arity("callback", callback, 3, "callback(i, t, u)")
    check_progress("progress", progress)
    check_compile("compile", compile)
    if divergence_factor is not None:
        divergence_factor = check_positive("divergence_factor", divergence_factor)
    if noise is not None and not isinstance(noise, NoiseSource):
        raise TypeError(f"noise must be a splitdyn NoiseSource (e.g. BrownianNoise(bm)), got {type(noise).__name__}")
    source = noise if noise is not None else as_noise_source(generator, u.device)
    times = check_grid(grid)
    saved = save_indices(save_at, times)
    needs_grid_states = callback is not None or any(j > 0 for j in saved)
    if plan is None:
        plan = plan_step(step, times, u, fuse=fuse and not needs_grid_states)
        if compile:
            plan.compile(**(compile if isinstance(compile, dict) else {}))
    elif not isinstance(plan, Plan) or plan.n != len(times) - 1:
        raise ValueError(f"plan must be a Plan of step for the {len(times) - 1} intervals of the grid, got "
                         f"{type(plan).__name__}" + (f" for {plan.n}" if isinstance(plan, Plan) else ""))
    rng_state = source.get_state(u.device)
    context = torch.no_grad() if not differentiable else contextlib.nullcontext()
    before = evaluation_count(plan)
    with context:
        state, trajectory = _run(plan, u, times, source, saved, progress, callback)
        nfe = evaluation_count(plan) - before
        _check_divergence(plan, u, state, times, source, rng_state, divergence_factor)
    return Solution(state=state, nfe=nfe, times=times,
                    trajectory=trajectory if saved else None, saved_times=[times[j] for j in saved] or None)


def _run(plan: Plan, u, times, noise: NoiseSource, saved, progress, callback, watch: float | None = None):
    trajectory = [u] if 0 in saved else []
    wanted = set(saved)
    steps = range(len(times) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=progress if isinstance(progress, str) else "steps", leave=False)
    for i in steps:
        u = plan(u, i, noise)
        if i + 1 in wanted:
            trajectory.append(u)
        if callback is not None:
            callback(i, times[i + 1], u)
        if watch is not None and not _scale(u) <= watch:  # replay only: find the first bad step
            return u, i
    return u, trajectory


def _check_divergence(plan, u0, state, times, noise: NoiseSource, rng_state, factor) -> None:
    bound = math.inf if factor is None else factor * max(1.0, _scale(u0))
    final = _scale(state)
    if final <= bound:  # False for NaN too
        return
    noise.set_state(rng_state, u0.device)  # the replay draws the same noise (see NoiseSource.get_state)
    _, bad = _run(plan, u0, times, noise, [], False, None, watch=bound)
    where = ""
    if isinstance(bad, int):
        where = (f" at step {bad} (from t = {times[bad]:.6g} to {times[bad + 1]:.6g}, "
                 f"h = {times[bad + 1] - times[bad]:.3g})")
    what = "non-finite (NaN or inf)" if not math.isfinite(final) else (
        f"of magnitude {final:.3g}, beyond {factor:g} x its starting scale {max(1.0, _scale(u0)):.3g}")
    raise DivergenceError(
        f"the integration diverged{where}: the state became {what}. Take smaller steps (more steps, or a grid finer where the dynamics is "
        "stiff), check that the score is finite and of the right sign, or lower the rate beta"
    )
