r"""The integrator loop: apply one propagator step after another over a time grid.

Samplers are plain functions over a grid (as in k-diffusion): the grid stays on the CPU as Python floats, so
the loop issues no device synchronisation per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .checks import check_finite_tensor
from .grids import check_grid
from .propagators import ExactLinearFlow
from .splitting import Composition

__all__ = ["Solution", "integrate"]


@dataclass
class Solution:
    """Result of :func:`integrate`.

    Attributes
    ----------
    state:
        The final state.
    nfe:
        Score / network evaluations made (each propagator declares its ``nfe`` per call).
    times:
        The grid (Python floats).
    trajectory:
        States at every grid time (``len(times)`` tensors, the first being the initial state) if requested,
        else ``None``.
    """

    state: torch.Tensor
    nfe: int
    times: list[float]
    trajectory: list[torch.Tensor] | None = field(default=None, repr=False)


def integrate(
    step: Callable,
    u: torch.Tensor,
    grid,
    *,
    generator: torch.Generator | None = None,
    save_trajectory: bool = False,
    progress: bool = False,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
    check_finite: bool = True,
    fuse_exact_flows: bool = True,
) -> Solution:
    r"""Advance ``u`` over ``grid`` with a propagator ``step(u, t, h, generator)``.

    Parameters
    ----------
    step:
        A propagator (e.g. ``strang(ExactLinearFlow(...), EulerDrift(...))``).
    u:
        Initial state of shape ``(batch, k, *event)``.
    grid:
        Strictly increasing times ``t_0 < ... < t_n`` in the dynamics' own time variable.
    generator:
        ``torch.Generator`` on ``u``'s device for reproducible noise.
    save_trajectory:
        Keep the state at every grid time.
    progress:
        Show a tqdm progress bar.
    callback:
        Called as ``callback(i, t_{i+1}, u)`` after each step.
    check_finite:
        Raise ``ValueError`` if the final state holds NaN/inf (one synchronisation at the end).
    fuse_exact_flows:
        If ``step`` is a :class:`~splitdyn.splitting.Composition` that starts and ends with the same
        :class:`~splitdyn.propagators.ExactLinearFlow` (Strang's :math:`A(h/2)\,B(h)\,A(h/2)`, e.g. SSCS), take
        the last sub-step of each step and the first of the next as one exact step over their joint interval.
        Exact Gaussian transitions compose (Chapman-Kolmogorov), so the samples have the same law, with
        ``n + 1`` instead of ``2n`` linear-flow noise draws. Not done with ``save_trajectory`` or ``callback``,
        which need the state at the grid times.
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    times = check_grid(grid)
    trajectory = [u] if save_trajectory else None
    steps = range(len(times) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
    flow = _fusable_flow(step) if fuse_exact_flows and not save_trajectory and callback is None else None
    if flow is not None:
        u = _integrate_fused(step, flow, u, times, steps, generator)
    else:
        for i in steps:
            u = step(u, times[i], times[i + 1] - times[i], generator)
            if save_trajectory:
                trajectory.append(u)
            if callback is not None:
                callback(i, times[i + 1], u)
    if check_finite:
        try:
            check_finite_tensor("the final state", u)
        except ValueError as exc:
            raise ValueError(f"{exc}: the integration diverged (step too large, or a bad score?)") from None
    return Solution(state=u, nfe=getattr(step, "nfe", 0) * (len(times) - 1), times=times, trajectory=trajectory)


def _fusable_flow(step) -> ExactLinearFlow | None:
    """The exact flow that both starts and ends ``step`` (a Composition), covering the step's end; else None."""
    if not isinstance(step, Composition) or len(step.steps) < 3:
        return None
    first, last = step.steps[0][0], step.steps[-1][0]
    if first is not last or not isinstance(first, ExactLinearFlow):
        return None
    *_, (op, s, dh) = step._sub_steps(0.0, 1.0)
    return first if abs(s + dh - 1.0) <= 1e-12 else None  # the flow's clock must end at the step's end


def _integrate_fused(step: Composition, flow: ExactLinearFlow, u, times, steps, generator):
    pending = None  # (start, span) of the deferred closing flow sub-step of the previous step
    for i in steps:
        sub_steps = list(step._sub_steps(times[i], times[i + 1] - times[i]))
        if pending is not None:
            _, _, first_span = sub_steps[0]
            u = flow(u, pending[0], pending[1] + first_span, generator)
            sub_steps = sub_steps[1:]
        *sub_steps, (_, last_start, last_span) = sub_steps
        for op, s, dh in sub_steps:
            u = op(u, s, dh, generator)
        pending = (last_start, last_span)
    if pending is not None:
        u = flow(u, pending[0], pending[1], generator)
    return u
