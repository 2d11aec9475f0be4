r"""The step protocol: a step declares what it is, plans once per grid, and runs on tensors only.

A :class:`Step` advances a state ``u`` of shape ``(batch, k, *event)`` over an interval :math:`[t, t + h]` of
its dynamics' own time (reverse time :math:`\tau = T - t` for samplers). Every step declares

- ``nfe``: score / network evaluations per call (before first-same-as-last reuse, see
  :mod:`splitdyn.steps.composition`);
- ``weak_order`` (and ``strong_order`` where meaningful): the global order it converges with, ``math.inf``
  for an exact step; the table-driven order test measures every registered step against its declaration;
- which dynamics it accepts: a mismatch is refused at construction.

Before a loop runs, :meth:`Step.plan` turns the grid into a :class:`Plan`: all float64 host work (transition
matrices, Cholesky factors, per-step scalars) is done once and stored as device tensors indexed by step. The
plan's ``plan(u, i, noise)`` then does only tensor arithmetic (``noise`` is always a
:class:`~splitdyn.steps.noise.NoiseSource`; entry points wrap a plain generator once). No cache is keyed by
float times, so memory does not grow with the number of steps apart from the plan's small tables.

The concrete public subclasses of :class:`Step` defined in the packages that opted in with
``REGISTRY.include(package_name)`` (``splitdyn`` and ``splitdyn_cld`` do, in their ``__init__``; any other
package may) are listed in ``REGISTRY`` by class name, which the order table of the test suite walks.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from dataclasses import dataclass

import torch

from ..checks import check_state
from .noise import NoiseSource, as_noise_source

__all__ = ["Step", "Plan", "Intervals", "AffineMap", "REGISTRY", "StepRegistry", "EvaluationCounter", "CountedCall",
           "evaluation_count", "unique_counters", "kron_identity"]

class StepRegistry(Mapping[str, type]):
    """Class name -> concrete public :class:`Step` subclass, for the packages that opted in with :meth:`include`.

    Every such subclass is recorded when it is defined; a package's steps are listed once it is included, so a
    package may opt in before or after defining them.
    """

    def __init__(self) -> None:
        self._classes: list[type] = []
        self._packages: set[str] = set()

    def include(self, package: str) -> None:
        """List the steps of the top-level package ``package`` (e.g. ``__name__`` in its ``__init__``)."""
        if not isinstance(package, str) or not package:
            raise TypeError(f"package must be a package name (a non-empty str), got {package!r}")
        self._packages.add(package.split(".")[0])

    def exclude(self, package: str) -> None:
        """Stop listing the steps of ``package`` (undoes :meth:`include`)."""
        self._packages.discard(package.split(".")[0])

    def record(self, cls: type) -> None:
        """Record a newly defined concrete public step class (called by :class:`Step`)."""
        self._classes.append(cls)

    def _listed(self) -> dict[str, type]:
        return {c.__name__: c for c in self._classes if c.__module__.split(".")[0] in self._packages}

    def __getitem__(self, name: str) -> type:
        return self._listed()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._listed())

    def __len__(self) -> int:
        return len(self._listed())


#: The registered :class:`Step` subclasses by class name (see :class:`StepRegistry`).
#:
#: :meta hide-value:
REGISTRY = StepRegistry()


@dataclass(frozen=True)
class Intervals:
    """The sub-intervals a step is planned for: ``starts[i]`` and ``spans[i]`` (float64 CPU, shape ``(n,)``).

    ``contiguous`` says whether interval ``i + 1`` starts where interval ``i`` ends (true for a grid), which
    compositions need to fuse adjacent exact flows; ``fusable`` whether the caller lets a plan do so, i.e.
    needs no state at the interval boundaries (the loop decides: no callback, nothing saved).
    """

    starts: torch.Tensor
    spans: torch.Tensor
    contiguous: bool = False
    fusable: bool = False

    @classmethod
    def from_grid(cls, times: Sequence[float] | torch.Tensor, fusable: bool = False) -> "Intervals":
        """The ``n`` intervals between consecutive grid times (``fusable``: see the class docstring)."""
        g = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
        return cls(g[:-1].clone(), g[1:] - g[:-1], True, fusable)

    def without_fusion(self) -> "Intervals":
        """The same intervals, not fusable (for a plan whose states at the boundaries are needed)."""
        return Intervals(self.starts, self.spans, self.contiguous, False)

    @classmethod
    def single(cls, t: float, h: float) -> "Intervals":
        """One interval :math:`[t, t + h]`."""
        return cls(torch.tensor([float(t)], dtype=torch.float64), torch.tensor([float(h)], dtype=torch.float64))

    def __len__(self) -> int:
        return int(self.starts.numel())

    def sub(self, offset: float, fraction: float) -> "Intervals":
        """The sub-intervals :math:`[t_i + \\text{offset}\\,h_i,\\ t_i + (\\text{offset} + \\text{fraction})\\,h_i]`."""
        return Intervals(self.starts + offset * self.spans, fraction * self.spans, False)


def kron_identity(matrix: torch.Tensor, d: int) -> torch.Tensor:
    r""":math:`A \otimes I_d` in float64 (``matrix`` of shape ``(k, m)`` gives ``(k d, m d)``)."""
    return torch.kron(matrix.to(torch.float64), torch.eye(d, dtype=torch.float64))


def _batched_kron_identity(tables: torch.Tensor, d: int) -> torch.Tensor:
    """``(n, k, m)`` -> ``(n, k d, m d)``: :math:`A_i \\otimes I_d` for every step."""
    n, k, m = tables.shape
    eye = torch.eye(d, dtype=tables.dtype)
    return torch.einsum("nkm,de->nkdme", tables, eye).reshape(n, k * d, m * d)


_ROW_VIEWS_MAX = 4096

# Tiny events (k * d at most this) are applied as one small GEMM with A (x) I_d on the flattened state;
# larger CPU events as multiply-adds over the components that skip zero entries.
_KRON_MAX_SIZE = 16


class AffineMap:
    r"""Per-step linear combinations :math:`u' = \sum_j (A_j[i] \otimes I_d)\,x_j` prepared for one state layout.

    The step tables ``A_j`` (float64, shape ``(n, k, m_j)``) are converted once, at plan time, into the
    cheapest form for the state's device and event size:

    - CPU, tiny events (:math:`k d \le 16`): transposed :math:`A_j \otimes I_d` tables, applied as one
      ``addmm`` chain on the flattened batch-major states (no strided views);
    - CPU, larger events: per-step Python scalars, applied as multiply-adds that skip zero entries (CLD's
      :math:`G` and :math:`GG^\top` are mostly zeros);
    - other devices: device tables applied with ``torch.matmul``.

    Parameters
    ----------
    tables:
        The ``A_j``, each of shape ``(n, k, m_j)``.
    like:
        A state ``(batch, k, *event)`` with the dtype, device and event shape to prepare for.
    index:
        Optional step -> table row map (a time-homogeneous step stores one row per distinct step size).
    tensor_only:
        Never use the Python-scalar form (for compiled arithmetic).
    """

    def __init__(self, tables: Sequence[torch.Tensor], like: torch.Tensor, index: Sequence[int] | None = None,
                 tensor_only: bool = False) -> None:
        self.index = list(range(int(tables[0].shape[0]))) if index is None else list(index)
        self.dtype, self.device = like.dtype, like.device
        self.k = int(tables[0].shape[-2])
        self.widths = [int(t.shape[-1]) for t in tables]
        self.event = tuple(like.shape[2:])
        self.d = math.prod(self.event)
        self.float64 = [t.to(torch.float64) for t in tables]
        cpu = like.device.type == "cpu"
        if cpu and max([self.k, *self.widths]) * self.d <= _KRON_MAX_SIZE:
            self.mode = "kron"
            self.tables = [_batched_kron_identity(t, self.d).transpose(-1, -2).to(like.dtype).contiguous()
                           for t in self.float64]
        elif cpu and not tensor_only:
            self.mode = "scalars"
            self.scalars = [t.tolist() for t in self.float64]
        else:
            self.mode = "matmul"
            self.tables = [t.to(dtype=like.dtype, device=like.device) for t in self.float64]
        # per-row views made once (indexing a tensor costs about a microsecond); bounded for long tables
        self.rows = None
        if self.mode != "scalars" and int(tables[0].shape[0]) <= _ROW_VIEWS_MAX:
            self.rows = [[t[j] for t in self.tables] for j in range(int(tables[0].shape[0]))]

    def tensor_only(self) -> "AffineMap":
        """The same map without the Python-scalar form (for arithmetic compiled with ``torch.compile``)."""
        like = torch.empty((1, self.k, *self.event), dtype=self.dtype, device=self.device)
        return self if self.mode != "scalars" else AffineMap(self.float64, like, self.index, tensor_only=True)

    def prepared(self, i: int) -> list[torch.Tensor]:
        """The step-``i`` matrices in the form :meth:`apply` takes (not in the ``"scalars"`` mode)."""
        j = self.index[i]
        return self.rows[j] if self.rows is not None else [t[j] for t in self.tables]

    def apply(self, matrices: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """:math:`\\sum_j A_j x_j` from :meth:`prepared` matrices: tensor arithmetic only (compilable)."""
        batch = inputs[0].shape[0]
        out: torch.Tensor | None = None
        if self.mode == "kron":
            out = torch.mm(inputs[0].reshape(batch, -1), matrices[0])
            for x, table in zip(inputs[1:], matrices[1:]):
                out = torch.addmm(out, x.reshape(batch, -1), table)
        else:
            for x, table in zip(inputs, matrices):
                term = torch.matmul(table, x.reshape(batch, x.shape[1], -1))
                out = term if out is None else out + term
        assert out is not None  # at least one input
        return out.reshape(batch, self.k, *self.event)

    def __call__(self, i: int, *inputs: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_j A_j[i]\\,x_j` for inputs ``x_j`` of shape ``(batch, m_j, *event)``."""
        if self.mode == "kron" and self.rows is not None:  # the hot path of small CPU states, spelled out
            matrices = self.rows[self.index[i]]
            x = inputs[0]
            b = x.shape[0]
            out = torch.mm(x.reshape(b, -1), matrices[0])
            for x, m in zip(inputs[1:], matrices[1:]):
                out = torch.addmm(out, x.reshape(b, -1), m)
            return out.view(b, self.k, *self.event)
        if self.mode != "scalars":
            return self.apply(self.prepared(i), inputs)
        i = self.index[i]
        rows = []
        for r in range(self.k):
            acc = None
            for x, table in zip(inputs, self.scalars):
                for j, a in enumerate(table[i][r]):
                    if a == 0.0:
                        continue
                    acc = x[:, j] * a if acc is None else torch.add(acc, x[:, j], alpha=a)
            if acc is None:  # an all-zero row; multiplying keeps the graph when autograd needs one
                acc = inputs[0][:, 0] * 0.0 if inputs[0].requires_grad else torch.zeros_like(inputs[0][:, 0])
            rows.append(acc)
        return torch.stack(rows, dim=1)

    def noise(self, j: int, batch: int, generator, dtype, device) -> torch.Tensor:
        """Standard normal input ``j`` for a batch, drawn in the layout this map reads (flat in the kron mode)."""
        if self.mode == "kron":
            return torch.randn((batch, self.widths[j] * self.d), generator=generator, dtype=dtype, device=device)
        return torch.randn((batch, self.widths[j], *self.event), generator=generator, dtype=dtype, device=device)

    def matrices(self, i: int) -> list[torch.Tensor]:
        """The float64 ``A_j[i]`` (for exact moment propagation)."""
        return [t[self.index[i]] for t in self.float64]


class EvaluationCounter:
    """Counts the calls of the functions it wraps (a score, a drift): the number of evaluations is what was called.

    A function is wrapped once, where it enters the library (:class:`~splitdyn.reverse.ReverseSDE` wraps its
    score, :class:`~splitdyn.steps.drift.CallableDrift` its function), and every plan calls the wrapper. A
    compiled function is wrapped after compiling (:meth:`wrap` of the compiled callable), so the count stays
    out of the graph.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, fn: Callable[..., Any], weight: int = 1) -> "CountedCall":
        """``fn`` counted: each call adds ``weight`` (e.g. 0 for a cheap analytic drift)."""
        return CountedCall(self, fn, weight)

    def __repr__(self) -> str:
        return f"EvaluationCounter(count={self.count})"


class CountedCall:
    """A function whose calls an :class:`EvaluationCounter` counts (made by :meth:`EvaluationCounter.wrap`)."""

    __slots__ = ("counter", "fn", "weight")

    def __init__(self, counter: EvaluationCounter, fn: Callable[..., Any], weight: int = 1) -> None:
        self.counter, self.fn, self.weight = counter, fn, weight

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.counter.count += self.weight
        return self.fn(*args, **kwargs)


def unique_counters(plans: Sequence[Any]) -> tuple[EvaluationCounter, ...]:
    """The counters of ``plans``, each once (plans of one reverse SDE share its counter)."""
    out: dict[int, EvaluationCounter] = {}
    for plan in plans:
        for counter in plan.counters:
            out.setdefault(id(counter), counter)
    return tuple(out.values())


def evaluation_count(*plans: "Plan") -> int:
    """The evaluations made so far through the counters of ``plans`` (each counter once, plus any count a plan
    keeps by hand); the loop reports the difference over a run."""
    return sum(c.count for c in unique_counters(plans)) + sum(p.evaluations for p in plans)


class Plan(ABC):
    """A step planned for ``n`` intervals: call ``plan(u, i, noise)`` for interval ``i``.

    ``noise`` is a :class:`~splitdyn.steps.noise.NoiseSource` (wrap a ``torch.Generator`` with
    :func:`~splitdyn.steps.noise.as_noise_source`); a plan draws all its randomness from it.

    Attributes
    ----------
    n:
        Number of intervals.
    counters:
        The :class:`EvaluationCounter` of every function the plan calls that counts as an evaluation (the
        score, a drift): the loop reads them before and after a run (:func:`evaluation_count`); a plan never
        counts by hand.
    evaluations:
        Only for plans that still count by hand (added to the counters by :func:`evaluation_count`); 0 for
        every plan of :mod:`splitdyn.steps`.
    """

    n: int
    counters: tuple[EvaluationCounter, ...] = ()
    evaluations: int = 0
    #: the components a call changes (``None``: unknown, all); compositions use it for first-same-as-last reuse
    writes: frozenset[int] | None = None
    #: the drift a composable plan evaluates (``None``: none; see :class:`~splitdyn.protocols.ComposablePlan`)
    source: object = None

    @abstractmethod
    def __call__(self, u: torch.Tensor, i: int, noise: NoiseSource) -> torch.Tensor:
        """Advance ``u`` over interval ``i``, drawing from ``noise``."""

    def gaussian_moments(self, mean: torch.Tensor, covariance: torch.Tensor, i: int):
        r"""Push :math:`\mathcal N(\text{mean}, \text{covariance})` of one state through interval ``i``.

        ``mean`` has shape ``(1, k, *event)``; ``covariance`` is the float64 ``(n, n)`` covariance of the
        flattened state. Exact when the step is affine-Gaussian in ``u`` (e.g. a linear score).
        """
        raise NotImplementedError(f"{type(self).__name__} does not propagate Gaussian moments")

    def compile(self, **options) -> None:
        """Compile the plan's tensor arithmetic with ``torch.compile(**options)``: once per plan, never per time
        (per-step matrices and times enter as tensor arguments; scores then receive the time as a 0-d float64
        tensor on the state's device).
        The default does nothing (a plan with nothing worth compiling)."""


class Step(ABC):
    """One step :math:`u_t \\mapsto u_{t+h}` of some dynamics; see the module docstring for the protocol.

    Attributes
    ----------
    nfe:
        Score evaluations per call.
    weak_order:
        Declared global weak order (``math.inf`` for an exact step).
    strong_order:
        Declared strong order, or ``None`` where it is not meaningful or not claimed.

    Examples
    --------
    The Euler step of the analytic drift :math:`b(u) = -u` costs no score evaluation and is first order; a
    step can be called for one manual step :math:`[t, t + h]`:

    >>> import torch
    >>> from splitdyn import EulerDrift
    >>> step = EulerDrift(lambda u, t: -u, nfe=0)
    >>> step.nfe, step.weak_order
    (0, 1.0)
    >>> step(torch.ones(1, 1, 2), 0.0, 0.1)  # u + h b(u) = 0.9 u
    tensor([[[0.9000, 0.9000]]])
    """

    nfe: int = 0
    weak_order: float
    strong_order: float | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None) and not cls.__name__.startswith("_"):
            REGISTRY.record(cls)

    @abstractmethod
    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        """Do all host work for ``intervals`` once and return the :class:`Plan` for states like ``like``."""

    def __call__(self, u: torch.Tensor, t: float, h: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """One step over :math:`[t, t + h]` (plans a one-interval table: for manual stepping, not for loops)."""
        check_state("u", u, u.shape[1] if isinstance(u, torch.Tensor) and u.ndim >= 2 else 1)
        return self.plan(Intervals.single(t, h), u)(u, 0, as_noise_source(generator, u.device))

    def gaussian_moments(self, mean: torch.Tensor, covariance: torch.Tensor, t: float, h: float):
        """Exact Gaussian moments through one step over :math:`[t, t + h]` (see :meth:`Plan.gaussian_moments`)."""
        return self.plan(Intervals.single(t, h), mean.to(torch.float64)).gaussian_moments(mean, covariance, 0)
