r"""What the sampler core relies on, written down: the protocols of forward processes, reverse dynamics, plans
of composable drift steps and reference solvers, and one check that names what an object lacks.

Each protocol is a :class:`typing.Protocol` (so a class need not inherit from anything to satisfy it) and is
checked once, where an object enters the library (a constructor or an entry point), with :func:`require`:

>>> import torch
>>> from splitdyn.protocols import ForwardProcess, missing_members, require
>>> class Half:
...     T = 1.0
...     num_components = 1
...     def drift(self, u, t): return -u
>>> missing_members(Half(), ForwardProcess)
['diffusion_matrix']
>>> require("process", Half(), ForwardProcess)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
TypeError: process must provide diffusion_matrix (a forward process: ...); Half lacks it

Algorithms then use the members without probing (no ``hasattr``/``getattr`` inside a loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["SDE", "ForwardProcess", "LinearProcess", "ReverseDynamics", "ComposablePlan", "ReferenceSolverProtocol",
           "require", "missing_members"]


@runtime_checkable
class SDE(Protocol):
    """An SDE :math:`du = f(u, t)\\,dt + G(t)\\,dw` (what Euler-Maruyama needs)."""

    def drift(self, u: torch.Tensor, t: Any) -> torch.Tensor:
        """:math:`f(u, t)`."""

    def diffusion_matrix(self, t: Any) -> torch.Tensor:
        """:math:`G(t)`, float64 ``(..., k, m)``."""


@runtime_checkable
class ForwardProcess(SDE, Protocol):
    """A forward SDE on states ``(batch, num_components, *event)`` over :math:`[0, T]`."""

    T: float
    num_components: int


@runtime_checkable
class LinearProcess(ForwardProcess, Protocol):
    """A linear forward SDE with matrix coefficients (what moment ODEs and exact kernels need)."""

    def drift_matrix(self, t: Any, check_range: bool = True) -> torch.Tensor:
        """:math:`F(t)`, float64 ``(..., k, k)``."""

    def diffusion_matrix(self, t: Any, check_range: bool = True) -> torch.Tensor:
        """:math:`G(t)`, float64 ``(..., k, m)``."""


@runtime_checkable
class ReverseDynamics(Protocol):
    """The reverse-time dynamics of a forward process with a score (:class:`~splitdyn.reverse.ReverseSDE`)."""

    sde: Any
    T: float
    num_components: int
    score_components: Sequence[int] | None
    #: whether the forward SDE is linear (then steps plan matrix tables)
    linear: bool

    def evaluate_score(self, u: torch.Tensor, t: Any) -> torch.Tensor:
        """The checked score at forward time ``t``."""

    def coefficient_tables(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float64 :math:`F`, :math:`GG^\\top` (score columns) and :math:`G` at forward times ``t``."""


@runtime_checkable
class ComposablePlan(Protocol):
    """A plan of a drift step a :class:`~splitdyn.steps.composition.Composition` can reuse values of
    (first-same-as-last): the evaluation and the update are separate, and it says what it reads and writes."""

    #: the components the drift reads (``None``: all)
    reads: frozenset[int] | None
    #: the components the step changes (``None``: all)
    writes: frozenset[int] | None
    #: the drift whose values may be shared (plans of the same source evaluate the same function)
    source: object
    #: float64 evaluation times of every interval
    times: torch.Tensor
    #: whether the drift depends on time (then shared values also need equal times)
    time_dependent: bool

    def evaluate(self, u: torch.Tensor, i: int) -> Any:
        """The expensive part (the score call) at interval ``i``."""

    def advance(self, u: torch.Tensor, value: Any, i: int) -> torch.Tensor:
        """The update given ``value = evaluate(u, i)``."""


@runtime_checkable
class ReferenceSolverProtocol(Protocol):
    """A sampler with its own loop (:class:`~splitdyn.interop.ReferenceSolver`)."""

    #: whether it follows the grid it is given (else it picks its own steps and stops at ``eps``)
    needs_grid: bool
    #: the forward cutoff of a solver that picks its own steps (``None`` for one that follows a grid)
    eps: float | None

    def solve(self, reverse: Any, u: torch.Tensor, times: list[float] | None, eps: float, *,
              generator: torch.Generator | None = None, progress: bool | str = False, callback: Any = None,
              save_at: Any = None) -> Any:
        """Integrate from reverse time 0 to forward time ``eps``."""


_DESCRIPTIONS: dict[type, str] = {
    SDE: "an SDE: drift(u, t), diffusion_matrix(t)",
    ForwardProcess: "a forward process: T, num_components, drift(u, t), diffusion_matrix(t)",
    LinearProcess: "a linear process: T, num_components, drift_matrix(t), diffusion_matrix(t)",
    ReverseDynamics: "reverse dynamics such as splitdyn.ReverseSDE",
    ComposablePlan: "a composable plan: evaluate, advance, reads, writes, source, times, time_dependent",
    ReferenceSolverProtocol: "a reference solver: needs_grid, eps, solve(...)",
}


def _members(protocol: type) -> list[str]:
    names: list[str] = []
    for cls in reversed(protocol.__mro__):
        if cls in (object, Protocol) or not getattr(cls, "_is_protocol", False):
            continue
        for name in [*getattr(cls, "__annotations__", {}), *vars(cls)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` does not have (empty when it satisfies it)."""
    return [name for name in _members(protocol) if not hasattr(obj, name)]


def require(name: str, obj: object, protocol: type) -> Any:
    """Return ``obj`` if it provides every member of ``protocol``; else a ``TypeError`` naming ``name``, the
    protocol and the missing members."""
    missing = missing_members(obj, protocol)
    if missing:
        what = _DESCRIPTIONS.get(protocol, protocol.__name__)
        raise TypeError(f"{name} must provide {', '.join(missing)} ({what}); {type(obj).__name__} lacks "
                        f"{'it' if len(missing) == 1 else 'them'}")
    return obj
