r"""Euler-type steps: :class:`EulerDrift` (a drift alone) and :class:`EulerMaruyama` (an SDE).

- :class:`EulerDrift` takes :math:`u \mapsto u + h\,b(u, t + \theta h)` (the paper's score step
  :math:`e^{h\hat{\mathcal L}^*_S}`, App. D, with :math:`\theta = 0`).
- :class:`EulerMaruyama` takes :math:`u \mapsto u + h\,f(u, t) + \sqrt h\,(G(t) \otimes I_d)\,\xi`. For a linear
  SDE, or the reverse SDE of one, the plan folds :math:`h_i` and the coefficient matrices into per-step
  tables: the loop then applies :math:`(I + h_i F_i)\,u + h_i C_i\,s + \sqrt{h_i}\,G_i\,\xi` as one
  multiply-add chain, drawing noise only for the columns of :math:`G` that are not zero at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..checks import check_count, check_flag
from ..linear_sde import LinearSDEBase
from ..protocols import SDE, require
from ..reverse import ReverseSDE
from .base import AffineMap, EvaluationCounter, Intervals, Plan, Step, kron_identity
from .drift import Drift, as_drift, check_drift_output
from .noise import NoiseSource

__all__ = ["EulerDrift", "EulerMaruyama"]


def _components(name: str, value, k: int | None = None) -> frozenset[int] | None:
    if value is None:
        return None
    out = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, int) or c < 0 or (k is not None and c >= k):
            raise ValueError(f"{name} must be distinct non-negative component indices, got {list(value)!r}")
        out.append(c)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a component, got {list(value)!r}")
    return frozenset(out)


class _EulerDriftPlan(Plan):
    def __init__(self, step: "EulerDrift", intervals: Intervals, like: torch.Tensor) -> None:
        times = intervals.starts + step.time_point * intervals.spans
        self.drift = step.drift.plan(times, intervals.spans, like)
        self.times = times
        self.n = len(intervals)
        self.reads = step.reads
        self.writes = step.writes if step.writes is not None else self.drift.writes
        self.time_dependent = step.time_dependent
        self.source = step.drift
        # the composable protocol's two halves are the drift plan's own (no extra call in the loop)
        self.evaluate = self.drift.evaluate
        self.advance = self.drift.advance
        self.counters = self.drift.counters

    @property
    def evaluations(self) -> int:  # type: ignore[override]
        return self.drift.evaluations  # drift plans that still count by hand (splitdyn.mcmc); 0 otherwise

    def __call__(self, u, i, noise):
        return self.drift.advance(u, self.drift.evaluate(u, i), i)

    def compile(self, **options) -> None:
        self.drift.compile(**options)

    def gaussian_moments(self, mean, covariance, i):
        return self.drift.gaussian_moments(mean, covariance, i)


class EulerDrift(Step):
    r"""Euler step of a drift: :math:`u \mapsto u + h\,b(u, t + \theta h)`.

    Parameters
    ----------
    drift:
        A :class:`~splitdyn.steps.drift.Drift` (e.g. :meth:`splitdyn.reverse.ReverseSDE.score_part`) or a
        callable ``b(u, t) -> du/dt`` (``t`` a Python float).
    nfe:
        Score evaluations per call of a callable ``drift`` (default 1; a cheap analytic drift has 0).
    time_point:
        :math:`\theta \in [0, 1]`: where in the step the drift is evaluated. The CLD paper's SSCS uses the
        step's start (``0``, Algorithm 1); ``0.5`` gives the midpoint rule.
    reads, writes:
        The components the drift depends on and the components it changes (default: all). A drift that
        reads none of the components it writes, and does not depend on time (``time_dependent=False``), is
        followed exactly by the Euler step (a force kick): it declares ``weak_order = inf``. A composition
        reuses such a drift's value when nothing it reads changed since its last evaluation
        (first-same-as-last).
    time_dependent:
        Whether :math:`b` depends on :math:`t` (first-same-as-last then also needs equal evaluation times).
    """

    strong_order = None

    def __init__(self, drift, nfe: int | None = None, time_point: float = 0.0, *,
                 reads: Sequence[int] | None = None, writes: Sequence[int] | None = None,
                 time_dependent: bool = True) -> None:
        self.drift: Drift = as_drift(drift, nfe)
        self.nfe = self.drift.nfe
        if isinstance(time_point, bool) or not isinstance(time_point, (int, float)) \
                or not 0.0 <= float(time_point) <= 1.0:
            raise ValueError(f"time_point must be a number in [0, 1], got {time_point!r}")
        self.time_point = float(time_point)
        self.reads = _components("reads", reads)
        self.writes = _components("writes", writes)
        self.time_dependent = check_flag("time_dependent", time_dependent)

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        exact = (self.reads is not None and self.writes is not None and not (self.reads & self.writes)
                 and not self.time_dependent)
        return math.inf if exact else 1.0

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _EulerDriftPlan(self, intervals, like)

    def __repr__(self) -> str:
        return f"EulerDrift({self.drift!r}, time_point={self.time_point:g})"


class _LinearEMPlan(Plan):
    """Euler-Maruyama of an SDE whose drift is affine in ``u`` apart from an optional score term."""

    def __init__(self, sde, tables, intervals: Intervals, like: torch.Tensor) -> None:
        M, C, L, score_times = tables
        nonzero = L.abs().amax(dim=(0, 1)) > 0  # noise columns that ever act
        self.L_full = L
        self.columns = torch.nonzero(nonzero).flatten().tolist()
        self.starts, self.spans = intervals.starts.tolist(), intervals.spans.tolist()
        L = L[..., nonzero]
        self.noise_width = int(L.shape[-1])
        self.sde = sde
        self.n = len(intervals)
        self.score_times = score_times
        tables = [M] + ([C] if C is not None else []) + ([L] if self.noise_width else [])
        self.map = AffineMap(tables, like)
        self.has_score = C is not None
        self.compiled: Callable[..., torch.Tensor] | None = None
        if self.has_score:
            self.counters = (sde.counter,)
            self.score = sde.score
            self.score_shape = torch.Size([C.shape[-1], *like.shape[2:]])

    def compile(self, **options) -> None:
        self.map = self.map.tensor_only()
        times = self.score_times if self.score_times is not None else [0.0] * self.n
        self.tensor_times = torch.tensor(times, dtype=torch.float64, device=self.map.device)  # exact times
        compiled = torch.compile(self._update, **options)
        self.compiled = self.sde.counter.wrap(compiled, int(self.has_score)) if self.has_score else compiled

    def _update(self, u, t, noise, matrices):
        # the score first, into a local: a score that breaks the graph (e.g. a table indexed by a tensor time)
        # must not find a list that is new at every step alive across the break, or each step recompiles
        s = self.sde.checked_score(u, t) if self.has_score else None
        inputs = [u] + ([s] if s is not None else []) + ([noise] if noise is not None else [])
        return self.map.apply(matrices, inputs)

    def __call__(self, u, i, noise: NoiseSource):
        if self.compiled is not None:
            xi = None
            if self.noise_width:
                xi = noise.standard_normal((u.shape[0], self.L_full.shape[-1], *u.shape[2:]), self.starts[i],
                                           self.spans[i], u, self.columns)
            return self.compiled(u, self.tensor_times[i], xi, self.map.prepared(i))
        if self.has_score:
            s = self.score(u, self.score_times[i])
            if type(s) is not torch.Tensor or s.dtype != u.dtype or s.shape[1:] != self.score_shape \
                    or s.shape[0] != u.shape[0] or s.device != u.device:
                s = self.sde.check_score_output(s, u)  # the full check: it says what is wrong
            if self.noise_width:
                return self.map(i, u, s, self._noise(u, i, noise, 2))
            return self.map(i, u, s)
        if self.noise_width:
            return self.map(i, u, self._noise(u, i, noise, 1))
        return self.map(i, u)

    def _noise(self, u, i, noise: NoiseSource, j: int):
        """The standard normals of the active noise columns: drawn flat for the fast map, or along a path."""
        if not noise.brownian:
            return self.map.noise(j, u.shape[0], noise.generator, u.dtype, u.device)
        return noise.standard_normal((u.shape[0], self.L_full.shape[-1], *u.shape[2:]), self.starts[i],
                                     self.spans[i], u, self.columns)

    def gaussian_moments(self, mean, covariance, i):
        d = mean[0, 0].numel()
        M = self.map.matrices(i)[0]
        shape, n = mean.shape, mean.numel()

        def flat_map(x):
            y = x.reshape(shape)
            out = kron_identity(M, d) @ x
            if self.has_score:
                C = self.map.matrices(i)[1]
                out = out + kron_identity(C, d) @ self.sde.evaluate_score(y, self.score_times[i]).reshape(-1)
            return out

        x = mean.reshape(n).to(torch.float64)
        J = torch.func.jacrev(flat_map)(x)
        noise = kron_identity(self.L_full[i] @ self.L_full[i].T, d)
        return flat_map(x).reshape(shape), J @ covariance @ J.T + noise


class _GenericEMPlan(Plan):
    """Euler-Maruyama of any object with ``drift(u, t)`` and ``diffusion_matrix(t)`` (drift at float times)."""

    def __init__(self, sde, drift, counter: EvaluationCounter, intervals: Intervals, like: torch.Tensor) -> None:
        self.sde = sde
        self.drift = drift
        self.counters = (counter,)
        self.n = len(intervals)
        self.times = intervals.starts.tolist()
        self.spans = intervals.spans.tolist()
        G = torch.stack([torch.as_tensor(sde.diffusion_matrix(t), dtype=torch.float64) for t in self.times])
        self.L_full = G * intervals.spans.sqrt()[:, None, None]
        self.noise = AffineMap([self.L_full], like)

    def __call__(self, u, i, noise: NoiseSource):
        drift = check_drift_output("the SDE's drift", self.drift(u, self.times[i]), u, u.shape)
        xi = noise.standard_normal((u.shape[0], self.L_full.shape[-1], *u.shape[2:]), self.times[i], self.spans[i], u)
        return torch.add(u, drift, alpha=self.spans[i]) + self.noise(i, xi)

    def gaussian_moments(self, mean, covariance, i):
        shape, n, d = mean.shape, mean.numel(), mean[0, 0].numel()

        def flat_map(x):
            y = x.reshape(shape)
            return (y + self.spans[i] * self.sde.drift(y, self.times[i])).reshape(n)

        x = mean.reshape(n).to(torch.float64)
        J = torch.func.jacrev(flat_map)(x)
        noise = kron_identity(self.L_full[i] @ self.L_full[i].T, d)
        return flat_map(x).reshape(shape), J @ covariance @ J.T + noise


class EulerMaruyama(Step):
    r"""Euler-Maruyama step :math:`u \mapsto u + h\,f(u, t) + \sqrt{h}\,(G(t) \otimes I_d)\,\xi`.

    Parameters
    ----------
    sde:
        A :class:`~splitdyn.reverse.ReverseSDE` or a :class:`~splitdyn.linear_sde.LinearSDEBase` (planned as
        per-step matrix tables), or any object with ``drift(u, t)`` and ``diffusion_matrix(t)`` (``k x m``).
    nfe:
        Score evaluations per step (default: ``sde.nfe`` if defined, else 0).
    """

    weak_order = 1.0
    strong_order = 0.5

    def __init__(self, sde, nfe: int | None = None) -> None:
        require("sde", sde, SDE)
        self.sde = sde
        self.nfe = int(getattr(sde, "nfe", 0)) if nfe is None else check_count("nfe", nfe, minimum=0)
        if isinstance(sde, ReverseSDE):  # its score is counted already
            self.counter, self.drift = sde.counter, sde.drift
        else:  # count the drift's calls, nfe each
            self.counter = EvaluationCounter()
            self.drift = self.counter.wrap(sde.drift, self.nfe)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        tables = None
        if isinstance(self.sde, ReverseSDE):
            tables = self.sde.euler_maruyama_tables(intervals)
        elif isinstance(self.sde, LinearSDEBase):
            tables = _forward_linear_tables(self.sde, intervals)
        if tables is not None:
            return _LinearEMPlan(self.sde, tables, intervals, like)
        return _GenericEMPlan(self.sde, self.drift, self.counter, intervals, like)

    def __repr__(self) -> str:
        return f"EulerMaruyama({type(self.sde).__name__})"


def _forward_linear_tables(sde: LinearSDEBase, intervals: Intervals):
    """Euler-Maruyama tables of a forward linear SDE: ``M = I + h F(t)``, ``L = sqrt(h) G(t)``, no score."""
    t, h = intervals.starts, intervals.spans
    F = sde.drift_matrix(t)
    G = sde.diffusion_matrix(t)
    eye = torch.eye(F.shape[-1], dtype=torch.float64)
    return eye + h[:, None, None] * F, None, h.sqrt()[:, None, None] * G, None
