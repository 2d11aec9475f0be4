r"""Splitting: composing steps into one step, with the composition's own plan doing fusion and reuse.

For dynamics :math:`\partial_t p = (\mathcal L_A + \mathcal L_B) p` whose parts can be followed separately,

- Lie-Trotter, :math:`e^{h\mathcal L_A} e^{h\mathcal L_B}`, has global order 1;
- Strang, :math:`e^{\frac h2\mathcal L_A} e^{h\mathcal L_B} e^{\frac h2\mathcal L_A}`, is symmetric with global
  order 2 (paper App. D; Strang 1968); any symmetric (palindromic) composition has even order.

A :class:`Composition` is a list of ``(step, fraction)`` sub-steps; each sub-step advances its own step's clock
by ``fraction * h`` from the step's start ``t``. For Strang the two ``A`` half-steps cover
:math:`[t, t + h/2]` and :math:`[t + h/2, t + h]` and ``B`` covers :math:`[t, t + h]` (so a time-dependent
:math:`\beta(t)` is integrated over each sub-step's own interval).

The plan of a composition does two things a hand-written loop would:

- **Fusion.** When the same :class:`~splitdyn.steps.exact_flow.ExactLinearFlow` opens and closes the step
  (Strang's :math:`A(h/2)\,B(h)\,A(h/2)`, e.g. SSCS), the closing sub-step of step ``i`` and the opening one
  of step ``i + 1`` are one exact step over their joint interval: exact Gaussian transitions compose
  (Chapman-Kolmogorov), so the law is the same with ``n + 1`` instead of ``2n`` noise draws. The state
  between two steps is then not the state at the grid time, so the loop asks for fusion only when no
  state at the grid times is needed (no callback, no saved times).
- **First-same-as-last (FSAL).** A drift sub-step whose drift was last evaluated (by an earlier sub-step of
  the same drift, possibly in the previous step) at the same time, with none of the components it reads
  changed since, reuses that value: BAOAB and OBABO cost one force evaluation per step. ``nfe`` in results
  counts real evaluations only.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence

import torch

from ..checks import check_flag
from .base import Intervals, Plan, Step, unique_counters
from ..protocols import ComposablePlan
from .exact_flow import ExactLinearFlow

__all__ = ["Composition", "strang", "trotter", "splitting", "palindromic"]

_TOL = 1e-12


def _schedule(steps) -> list[tuple[Step, float, float]]:
    """``(step, offset, fraction)`` of each sub-step: each step's clock starts at 0 and advances by its fractions."""
    clocks: dict[int, float] = {}
    out = []
    for op, fraction in steps:
        start = clocks.get(id(op), 0.0)
        clocks[id(op)] = start + fraction
        out.append((op, start, fraction))
    return out


class _CompositionPlan(Plan):
    def __init__(self, comp: "Composition", intervals: Intervals, like: torch.Tensor) -> None:
        schedule = _schedule(comp.steps)
        self.n = len(intervals)
        self.fused = None
        first, last = schedule[0], schedule[-1]
        if (intervals.fusable and intervals.contiguous and len(schedule) >= 3 and first[0] is last[0]
                and isinstance(first[0], ExactLinearFlow) and abs(first[1]) <= _TOL
                and abs(last[1] + last[2] - 1.0) <= _TOL):
            opening = intervals.sub(first[1], first[2])
            closing = intervals.sub(last[1], last[2])
            starts = torch.cat([opening.starts[:1], closing.starts])
            spans = torch.cat([opening.spans[:1], closing.spans[:-1] + opening.spans[1:], closing.spans[-1:]])
            #: the intervals of the fused exact flow: the opening sub-step, n - 1 joined ones, the closing one
            self.fused_intervals = Intervals(starts, spans)
            self.fused = first[0].plan(self.fused_intervals, like)
            schedule = schedule[1:-1]
        self.plans = [op.plan(intervals.sub(offset, fraction), like) for op, offset, fraction in schedule]
        self.reuse = self._find_reuse(schedule, intervals)
        self.counters = unique_counters(self.plans)
        #: whether any value is carried from one interval to the next (then the returned state is remembered)
        self.carries = any(rule is not None and rule[1] for rule in self.reuse)
        self.values: list = [None] * len(self.plans)
        #: (weak reference to the state last returned, its version counter, its interval): what validates the
        #: values carried into the next interval (first-same-as-last across steps)
        self.returned: tuple | None = None
        # per sub-step: (index, the drift plan that evaluates/advances or None, the plan, the reuse rule)
        self.calls = [(j, p if isinstance(p, ComposablePlan) else None, p, self.reuse[j])
                      for j, p in enumerate(self.plans)]

    def _find_reuse(self, schedule, intervals) -> list:
        """For each sub-step: ``None`` or ``(j, across)``: reuse sub-step ``j``'s value (of the previous step
        if ``across``), because it evaluated the same drift at the same time and nothing it reads changed."""
        m = len(self.plans)
        reuse: list = [None] * m
        for j, plan in enumerate(self.plans):
            if not isinstance(plan, ComposablePlan) or schedule[j][0].nfe == 0:
                continue
            blocked = self.fused is not None  # a fused exact flow between two steps changes every component
            for back in range(1, m + 1):
                k = (j - back) % m
                across = j - back < 0
                if across and blocked:
                    break
                other = self.plans[k]
                writes = other.writes
                if writes is None or plan.reads is None or (writes & plan.reads):
                    break  # what sub-step k changed (after any evaluation of its own) reaches this drift
                if other.source is plan.source:
                    if self._same_times(plan, other, across):
                        reuse[j] = (k, across)
                    break
        return reuse

    @staticmethod
    def _same_times(plan, other, across: bool) -> bool:
        if not plan.time_dependent:
            return True
        a = plan.times[1:] if across else plan.times
        b = other.times[:-1] if across else other.times
        return a.numel() == 0 or bool(((a - b).abs() <= _TOL * (1.0 + a.abs())).all())

    @property
    def evaluations(self) -> int:  # type: ignore[override]
        return sum(p.evaluations for p in self.plans)  # plans that still count by hand (splitdyn.mcmc); else 0

    def compile(self, **options) -> None:
        for plan in self.plans + ([self.fused] if self.fused is not None else []):
            plan.compile(**options)

    def _continues(self, u: torch.Tensor, i: int) -> bool:
        """Whether ``u`` is the unmodified state this plan returned for interval ``i - 1``."""
        last = self.returned
        if last is None or i == 0 or last[2] != i - 1 or last[0]() is not u:
            return False
        try:
            return u._version == last[1]
        except RuntimeError:  # an inference tensor has no version counter: nothing to validate with
            return False

    def _remember(self, u: torch.Tensor, i: int) -> None:
        try:
            self.returned = (weakref.ref(u), u._version, i)
        except RuntimeError:
            self.returned = None

    def __call__(self, u, i, noise):
        carried = self._continues(u, i)
        if self.fused is not None and i == 0:
            u = self.fused(u, 0, noise)
        values = self.values
        for j, drift, plan, rule in self.calls:
            if drift is None:
                u = plan(u, i, noise)
                continue
            if rule is not None and (not rule[1] or carried):
                value = values[rule[0]]
            else:
                value = drift.evaluate(u, i)
            values[j] = value
            u = drift.advance(u, value, i)
        if self.fused is not None:
            u = self.fused(u, i + 1, noise)
        if self.carries:
            self._remember(u, i)
        return u

    def gaussian_moments(self, mean, covariance, i):
        if self.fused is not None and i == 0:
            mean, covariance = self.fused.gaussian_moments(mean, covariance, 0)
        for plan in self.plans:
            mean, covariance = plan.gaussian_moments(mean, covariance, i)
        if self.fused is not None:
            mean, covariance = self.fused.gaussian_moments(mean, covariance, i + 1)
        return mean, covariance


class Composition(Step):
    """A sequence of ``(step, fraction)`` sub-steps applied in order.

    Parameters
    ----------
    steps:
        ``[(step, fraction), ...]``; fractions must be positive unless ``check_fractions=False``.
    check_fractions:
        Require the fractions of each distinct step (by identity) to sum to 1, and each to be positive.
    order:
        Declared weak order of the splitting itself (e.g. 4 for Yoshida's coefficients). Default: 2 for a
        symmetric (palindromic) composition, else 1. The composition's ``weak_order`` is this, capped by the
        orders of its parts.
    """

    strong_order = None

    def __init__(self, steps: Sequence[tuple[Step, float]], check_fractions: bool = True,
                 order: float | None = None) -> None:
        check_flag("check_fractions", check_fractions)
        steps = list(steps)
        if not steps:
            raise ValueError("steps must hold at least one (step, fraction) pair")
        totals: dict[int, float] = {}
        for i, item in enumerate(steps):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"steps[{i}] must be a (step, fraction) pair, got {item!r}")
            op, fraction = item
            if not isinstance(op, Step):
                raise TypeError(f"steps[{i}][0] must be a splitdyn Step, got {type(op).__name__}")
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
                raise TypeError(f"steps[{i}][1] (the fraction) must be a finite number, got {fraction!r}")
            if check_fractions and not fraction > 0:
                raise ValueError(f"steps[{i}] has fraction {fraction}; fractions must be positive")
            totals[id(op)] = totals.get(id(op), 0.0) + float(fraction)
        if check_fractions:
            for op, _ in steps:
                if abs(totals[id(op)] - 1.0) > _TOL:
                    raise ValueError(
                        f"the fractions of {op!r} sum to {totals[id(op)]}, not 1: each part of the dynamics must "
                        "be followed for the whole step (pass check_fractions=False to allow it)"
                    )
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float)) or order <= 0):
            raise ValueError(f"order must be a positive number, got {order!r}")
        self.steps = [(op, float(f)) for op, f in steps]
        self.nfe = sum(op.nfe for op, _ in self.steps)
        symmetric = [(id(op), f) for op, f in self.steps] == [(id(op), f) for op, f in reversed(self.steps)]
        self.splitting_order = float(order) if order is not None else (2.0 if symmetric else 1.0)

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        return min([self.splitting_order] + [op.weak_order for op, _ in self.steps])

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        """Plan every sub-step; fusable contiguous ``intervals`` let adjacent exact flows fuse (module docstring)."""
        return _CompositionPlan(self, intervals, like)

    def __repr__(self) -> str:
        inner = ", ".join(f"({type(op).__name__}, {f:g})" for op, f in self.steps)
        return f"Composition([{inner}])"


def strang(A: Step, B: Step) -> Composition:
    r"""Strang splitting :math:`A(h/2)\,B(h)\,A(h/2)` (order 2). SSCS is ``strang(exact_flow, score_step)``."""
    return Composition([(A, 0.5), (B, 1.0), (A, 0.5)])


def trotter(A: Step, B: Step) -> Composition:
    r"""Lie-Trotter splitting :math:`A(h)\,B(h)` (order 1)."""
    return Composition([(A, 1.0), (B, 1.0)])


def palindromic(operators: Sequence[Step], coefficients: Sequence[float], order: float | None = None) -> Composition:
    r"""Alternate two steps with a palindromic coefficient list, e.g. ``[1/2, 1, 1/2]`` (Strang / velocity
    Verlet) or Yoshida's fourth-order coefficients (pass ``order=4``). Step ``i % 2`` gets ``coefficients[i]``;
    negative coefficients (backward sub-steps) are allowed here; each step's coefficients must sum to 1.
    """
    operators = list(operators)
    if len(operators) != 2:
        raise ValueError("operators must hold exactly two steps (A, B)")
    for i, op in enumerate(operators):
        if not isinstance(op, Step):
            raise TypeError(f"operators[{i}] must be a splitdyn Step, got {type(op).__name__}")
    coefficients = [float(c) for c in coefficients]
    if coefficients != coefficients[::-1]:
        raise ValueError(f"coefficients must be palindromic, got {coefficients}")
    for j in range(2):
        total = sum(c for i, c in enumerate(coefficients) if i % 2 == j)
        if abs(total - 1.0) > _TOL:
            raise ValueError(f"the coefficients of operator {j} sum to {total}, not 1")
    return Composition([(operators[i % 2], c) for i, c in enumerate(coefficients)], check_fractions=False,
                       order=order)


def splitting(sequence: str, operators: Mapping[str, Step], fractions: Sequence[float] | None = None,
              order: float | None = None) -> Composition:
    """Build a composition from a string of step letters, e.g. ``"OBABO"`` or ``"BAOAB"``.

    Parameters
    ----------
    sequence:
        Letters naming the sub-steps in order (whitespace ignored).
    operators:
        Mapping from each letter to its step.
    fractions:
        Explicit fraction of each sub-step. Default: each occurrence of a letter gets ``1 / count`` of the
        step (so ``"OBABO"`` is ``O(h/2) B(h/2) A(h) B(h/2) O(h/2)``). Each letter's fractions must sum to one.
    order:
        Declared splitting order (see :class:`Composition`).

    Examples
    --------
    >>> from splitdyn import splitting, EulerDrift
    >>> A = EulerDrift(lambda u, t: -u, nfe=0)
    >>> B = EulerDrift(lambda u, t: u, nfe=1)
    >>> splitting("ABA", {"A": A, "B": B})
    Composition([(EulerDrift, 0.5), (EulerDrift, 1), (EulerDrift, 0.5)])
    """
    if not isinstance(sequence, str):
        raise TypeError(f"sequence must be a string of operator letters, got {type(sequence).__name__}")
    letters = [c for c in sequence if not c.isspace()]
    if not letters:
        raise ValueError("sequence must name at least one operator")
    unknown = sorted(set(letters) - set(operators))
    if unknown:
        raise ValueError(f"sequence uses letters {unknown} that operators does not define (has {sorted(operators)})")
    if fractions is None:
        counts = {c: letters.count(c) for c in set(letters)}
        fractions = [1.0 / counts[c] for c in letters]
    elif len(fractions) != len(letters):
        raise ValueError(f"fractions must have one entry per letter ({len(letters)}), got {len(fractions)}")
    return Composition([(operators[c], f) for c, f in zip(letters, fractions)], order=order)
