r"""Drifts that Euler-type steps follow, planned once per grid like the steps themselves.

A :class:`Drift` is a vector field :math:`b(u, t)`. Planned for evaluation times :math:`t_i` and step sizes
:math:`h_i`, its :class:`DriftPlan` splits an Euler step :math:`u + h_i\,b(u, t_i)` into

- ``evaluate(u, i)``: the expensive part (the score / network call), returning an opaque value, and
- ``advance(u, value, i)``: the arithmetic that turns that value into :math:`u + h_i\,b(u, t_i)`,

so that a composition can reuse a value evaluated at the same state and time (first-same-as-last) and a
drift that is affine in ``u`` apart from a score term can fold its matrices and :math:`h_i` into one table.
A plain callable ``b(u, t)`` becomes a :class:`CallableDrift` (Python float times, no precomputation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch

from ..checks import check_arity, check_count
from .base import EvaluationCounter

__all__ = ["Drift", "DriftPlan", "CallableDrift", "as_drift", "check_drift_output"]


def check_drift_output(name: str, value, u: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Check that a user callable returned a tensor of ``shape`` in ``u``'s dtype; name the callable if not."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(value).__name__}")
    if value.device != u.device:
        raise ValueError(f"{name} returned a tensor on {value.device} for a state on {u.device}: return the "
                         "state's device")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} returned shape {tuple(value.shape)}, expected {tuple(shape)}")
    if value.dtype != u.dtype:
        raise TypeError(
            f"{name} returned dtype {value.dtype} for a state of dtype {u.dtype}: return the state's dtype "
            "(a silent promotion would change the sampler's precision)"
        )
    return value


class DriftPlan(ABC):
    """A drift planned for evaluation times ``times[i]`` and Euler step sizes ``spans[i]``.

    ``counters`` are the :class:`~splitdyn.steps.base.EvaluationCounter` of what :meth:`evaluate` calls (see
    :class:`~splitdyn.steps.base.Plan`); ``evaluations`` is for drift plans that still count by hand.
    """

    counters: tuple[EvaluationCounter, ...] = ()
    evaluations: int = 0
    #: the components :meth:`advance` changes (``None``: all)
    writes: frozenset[int] | None = None

    @abstractmethod
    def evaluate(self, u: torch.Tensor, i: int):
        """The expensive part of :math:`b(u, t_i)` (a score call, counted by its counter)."""

    @abstractmethod
    def advance(self, u: torch.Tensor, value, i: int) -> torch.Tensor:
        """:math:`u + h_i\\,b(u, t_i)` given ``value = evaluate(u, i)``."""

    def compile(self, **options) -> None:
        """Compile the tensor arithmetic with ``torch.compile(**options)`` (default: nothing to compile)."""
        return None

    def gaussian_moments(self, mean: torch.Tensor, covariance: torch.Tensor, i: int):
        """Exact moments through the Euler step, from the Jacobian of the (affine) map."""
        shape = mean.shape
        n = mean.numel()

        def flat_map(x):
            y = x.reshape(shape)
            return self.advance(y, self.evaluate(y, i), i).reshape(n)

        x = mean.reshape(n).to(torch.float64)
        J = torch.func.jacrev(flat_map)(x).to(torch.float64)
        return flat_map(x).reshape(shape), J @ covariance @ J.T


class Drift(ABC):
    """A vector field :math:`b(u, t)` with ``nfe`` score evaluations per call, planned by :meth:`plan`."""

    nfe: int = 0

    @abstractmethod
    def plan(self, times: torch.Tensor, spans: torch.Tensor, like: torch.Tensor) -> DriftPlan:
        """Plan for evaluation times ``times`` and Euler step sizes ``spans`` (float64, shape ``(n,)``)."""


class _CallablePlan(DriftPlan):
    def __init__(self, drift: "CallableDrift", times: torch.Tensor, spans: torch.Tensor) -> None:
        self.fn = drift.counted
        self.counters = (drift.counter,)
        self.times = times.tolist()
        self.spans = spans.tolist()

    def evaluate(self, u, i):
        return check_drift_output("drift", self.fn(u, self.times[i]), u, u.shape)

    def advance(self, u, value, i):
        return torch.add(u, value, alpha=self.spans[i])


class CallableDrift(Drift):
    """A user drift ``b(u, t) -> du/dt`` (``t`` a Python float) making ``nfe`` score evaluations per call."""

    def __init__(self, fn: Callable[[torch.Tensor, float], torch.Tensor], nfe: int = 1) -> None:
        self.fn = check_arity("drift", fn, 2, "b(u, t)")
        self.nfe = check_count("nfe", nfe, minimum=0)
        #: counts the calls of ``fn`` (``nfe`` each)
        self.counter = EvaluationCounter()
        self.counted = self.counter.wrap(fn, self.nfe)

    def plan(self, times, spans, like):
        return _CallablePlan(self, times, spans)

    def __repr__(self) -> str:
        return f"CallableDrift({getattr(self.fn, '__name__', type(self.fn).__name__)}, nfe={self.nfe})"


def as_drift(drift, nfe: int | None) -> Drift:
    """A :class:`Drift` as is, or a callable wrapped as a :class:`CallableDrift` (``nfe`` default 1)."""
    if isinstance(drift, Drift):
        if nfe is not None and check_count("nfe", nfe, minimum=0) != drift.nfe:
            raise ValueError(f"nfe={nfe} contradicts the drift's own nfe={drift.nfe}")
        return drift
    return CallableDrift(drift, 1 if nfe is None else nfe)
