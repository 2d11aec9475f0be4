r"""The exact flow of a linear SDE: :math:`u \mapsto \Phi(t + h, t)\,u + L\,\xi`, :math:`LL^\top = Q(t + h, t)`.

For CLD's reverse linear part this is the paper's :math:`e^{\frac h2\hat{\mathcal L}^*_A}` (eq. 85-90). The
plan computes every interval's :math:`(\Phi, L)` at once in float64; a time-homogeneous SDE (constant
:math:`\beta`) computes one kernel per distinct step size and needs no time horizon, so an Ornstein-Uhlenbeck
part of a long MCMC chain may run past ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..gaussian import psd_cholesky
from ..linear_sde import LinearSDE, LinearSDEBase
from ..schedules import ConstantBeta
from .base import AffineMap, Intervals, Plan, Step, kron_identity
from .noise import NoiseSource, brownian_flow_tables

__all__ = ["ExactLinearFlow", "linear_kernels"]


def linear_kernels(sde: LinearSDEBase, intervals: Intervals) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    r"""Float64 kernels :math:`(\Phi_j, Q_j)` of ``sde`` and the row ``index[i]`` that interval ``i`` uses.

    A :class:`~splitdyn.linear_sde.LinearSDE` with a constant rate depends on the span alone: one kernel per
    distinct span, no range check against ``T`` (memory does not grow with the number of steps). Otherwise
    one row per interval, ``sde.kernel(t_i + h_i, t_i)`` (batched).
    """
    spans = intervals.spans
    if bool((spans < 0).any()):
        raise ValueError("the exact flow needs non-negative spans (go backwards with the reverse-time SDE)")
    if isinstance(sde, LinearSDE) and isinstance(sde.rescaling, ConstantBeta):
        distinct, index = torch.unique(spans, return_inverse=True)
        Phi, Q = sde.increment_kernel(sde.rescaling.value * distinct)
        return Phi, Q, index.tolist()
    Phi, Q = sde.kernel(intervals.starts + spans, intervals.starts)
    return Phi, Q, list(range(len(intervals)))


class _ExactFlowPlan(Plan):
    def __init__(self, sde: LinearSDEBase, intervals: Intervals, like: torch.Tensor) -> None:
        Phi, Q, index = linear_kernels(sde, intervals)
        L = psd_cholesky(Q, "the transition noise covariance")
        self.n = len(intervals)
        self.Q = Q
        self.sde, self.intervals, self.Phi, self.index = sde, intervals, Phi, index
        self.brownian_map = None  # built on the first draw from a Brownian path (see splitdyn.steps.noise)
        self.map = AffineMap([Phi, L], like, index)
        self.compiled: Callable[..., torch.Tensor] | None = None
        k = Phi.shape[-1]
        moved = ((Phi - torch.eye(k, dtype=torch.float64)).abs().amax(dim=(0, 2)) > 0) | (L.abs().amax(dim=(0, 2)) > 0)
        #: the components this flow changes (a velocity-only Ornstein-Uhlenbeck part leaves positions alone)
        self.writes = frozenset(int(c) for c in torch.nonzero(moved).flatten().tolist())

    def __call__(self, u, i, noise: NoiseSource):
        if noise.brownian:
            return self._on_path(u, i, noise)
        if self.compiled is not None:
            xi = torch.randn(u.shape, generator=noise.generator, dtype=u.dtype, device=u.device)
            return self.compiled(self.map.prepared(i), [u, xi])
        return self.map(i, u, self.map.noise(1, u.shape[0], noise.generator, u.dtype, u.device))

    def compile(self, **options) -> None:
        self.map = self.map.tensor_only()
        self.compiled = torch.compile(self.map.apply, **options)

    def _on_path(self, u, i, source):
        r""":math:`\Phi u + B_0 \Delta W + B_1 U + R \zeta` (exact law given the path, see splitdyn.steps.noise)."""
        start, span = float(self.intervals.starts[i]), float(self.intervals.spans[i])
        m = int(self.sde.diffusion_matrix(self.intervals.starts[:1]).shape[-1])
        if self.brownian_map is None or self.brownian_map[0] != source.levy_area:
            B0, B1, R = brownian_flow_tables(self.sde, self.intervals.starts, self.intervals.spans, source.levy_area)
            Phi = self.Phi[self.index]
            tables = [Phi, B0, R] + ([B1] if source.levy_area else [])
            self.brownian_map = (source.levy_area, AffineMap(tables, u))
        dW, U = source.increments(start, span, u, m)
        inputs = [u, dW, source.independent_normal(u.shape, u)] + ([U] if U is not None else [])
        return self.brownian_map[1](i, *inputs)

    def gaussian_moments(self, mean, covariance, i):
        Phi = self.map.matrices(i)[0]
        A = kron_identity(Phi, mean[0, 0].numel())
        new_mean = (A @ mean.reshape(-1).to(torch.float64)).reshape(mean.shape)
        return new_mean, A @ covariance @ A.T + kron_identity(self.Q[self.map.index[i]], mean[0, 0].numel())


class ExactLinearFlow(Step):
    r"""Exact transition of a linear SDE: :math:`u \mapsto \Phi(t+h, t)\,u + L\,\xi`, :math:`LL^\top = Q(t+h, t)`.

    Parameters
    ----------
    sde:
        The linear SDE to follow, in its own time variable (e.g. ``sde.reverse_linear_part()``); accepts any
        :class:`~splitdyn.linear_sde.LinearSDEBase`.
    """

    nfe = 0
    weak_order = math.inf
    strong_order = math.inf

    def __init__(self, sde: LinearSDEBase) -> None:
        if not isinstance(sde, LinearSDEBase):
            raise TypeError(f"sde must be a splitdyn.LinearSDEBase (a linear SDE), got {type(sde).__name__}")
        self.sde = sde

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _ExactFlowPlan(self.sde, intervals, like)

    def __repr__(self) -> str:
        return f"ExactLinearFlow({self.sde!r})"
