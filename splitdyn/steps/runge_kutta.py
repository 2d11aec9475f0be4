r"""Fixed-grid explicit Runge-Kutta steps of the probability-flow ODE: Heun (order 2) and RK4 (order 4).

In reverse time :math:`\tau = T - t` the probability flow of a forward SDE is

.. math::

    \frac{du}{d\tau} = v(u, \tau) = -f(u, T - \tau) + \tfrac12 GG^\top(T - \tau)\,s(u, T - \tau),

and an explicit Runge-Kutta method with tableau :math:`(a, b, c)` takes
:math:`k_r = v(u + h\sum_{m<r} a_{rm}k_m,\ \tau + c_r h)`, :math:`u' = u + h\sum_r b_r k_r`. For a linear
forward SDE the plan folds :math:`-F` and :math:`\tfrac12GG^\top` of every stage time into per-step tables
(one score evaluation per stage); any grid works. The adaptive path is
:class:`splitdyn.interop.AdaptiveProbabilityFlow`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..protocols import ReverseDynamics, require
from .base import AffineMap, Intervals, Plan, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..reverse import ReverseSDE

__all__ = ["ProbabilityFlowHeun", "ProbabilityFlowRK4"]


class _RungeKuttaPlan(Plan):
    def __init__(self, step: "_RungeKutta", intervals: Intervals, like: torch.Tensor) -> None:
        reverse = step.reverse
        self.reverse = reverse
        self.a, self.b = step.a, step.b
        self.spans = intervals.spans.tolist()
        self.n = len(intervals)
        self.maps, self.score_times = [], []
        for c in step.c:
            t = reverse.T - (intervals.starts + c * intervals.spans)
            F, GGt, _ = reverse.coefficient_tables(t.clamp(0.0, reverse.T))
            self.maps.append(AffineMap([-F, 0.5 * GGt], like))
            self.score_times.append(t.tolist())
        self.counters = (reverse.counter,)

    def velocity(self, r: int, y: torch.Tensor, i: int) -> torch.Tensor:
        return self.maps[r](i, y, self.reverse.evaluate_score(y, self.score_times[r][i]))

    def __call__(self, u, i, noise=None):
        h = self.spans[i]
        stages = []
        for r, row in enumerate(self.a):
            y = u
            for a, k in zip(row, stages):
                if a != 0.0:
                    y = torch.add(y, k, alpha=h * a)
            stages.append(self.velocity(r, y, i))
        out = u
        for b, k in zip(self.b, stages):
            if b != 0.0:
                out = torch.add(out, k, alpha=h * b)
        return out

    def gaussian_moments(self, mean, covariance, i):
        shape, n = mean.shape, mean.numel()

        def f(x):
            return self(x.reshape(shape), i).reshape(n)

        x = mean.reshape(n).to(torch.float64)
        J = torch.func.jacrev(f)(x)
        return f(x).reshape(shape), J @ covariance @ J.T


class _RungeKutta(Step):
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    strong_order = None

    def __init__(self, reverse: "ReverseSDE") -> None:
        require("reverse", reverse, ReverseDynamics)
        if not reverse.linear:
            raise TypeError(f"the planned probability flow needs a linear forward SDE, got {type(reverse.sde).__name__}")
        self.reverse = reverse
        self.nfe = len(self.b)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _RungeKuttaPlan(self, intervals, like)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ProbabilityFlowHeun(_RungeKutta):
    r"""Heun's method (explicit trapezoid) on the probability-flow ODE: 2 score evaluations per step, order 2.

    Parameters
    ----------
    reverse:
        A :class:`~splitdyn.reverse.ReverseSDE` of a linear forward SDE (its score is used).
    """

    a = ((), (1.0,))
    b = (0.5, 0.5)
    c = (0.0, 1.0)
    weak_order = 2.0


class ProbabilityFlowRK4(_RungeKutta):
    r"""The classical Runge-Kutta method on the probability-flow ODE: 4 score evaluations per step, order 4.

    Parameters
    ----------
    reverse:
        A :class:`~splitdyn.reverse.ReverseSDE` of a linear forward SDE (its score is used).
    """

    a = ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0))
    b = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)
    c = (0.0, 0.5, 0.5, 1.0)
    weak_order = 4.0
