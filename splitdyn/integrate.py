r"""The integrator loop: apply one propagator step after another over a time grid.

Samplers are plain functions over a grid (as in k-diffusion): the grid stays on the CPU as Python floats, so
the loop issues no device synchronisation per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ._validation import check_finite_tensor
from .grids import check_grid

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
) -> Solution:
    """Advance ``u`` over ``grid`` with a propagator ``step(u, t, h, generator)``.

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
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    times = check_grid(grid)
    trajectory = [u] if save_trajectory else None
    steps = range(len(times) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
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
