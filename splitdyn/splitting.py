r"""Splitting: composing propagators into one step.

For dynamics :math:`\partial_t p = (\mathcal L_A + \mathcal L_B) p` whose parts can be propagated separately,

- Lie-Trotter, :math:`e^{h\mathcal L_A} e^{h\mathcal L_B}`, has local error :math:`O(h^2)` (global order 1);
- Strang, :math:`e^{\frac h2\mathcal L_A} e^{h\mathcal L_B} e^{\frac h2\mathcal L_A}`, is symmetric with global
  order 2 (paper App. D; Strang 1968).

A :class:`Composition` is a list of ``(propagator, fraction)`` sub-steps; each sub-step advances its own
operator's clock by ``fraction * h``, starting from the step's start ``t``. For Strang this means the two
``A`` half-steps cover :math:`[t, t + h/2]` and :math:`[t + h/2, t + h]` and the ``B`` step covers
:math:`[t, t + h]` (so a time-dependent :math:`\beta(t)` is integrated over each sub-step's own interval).
By default the fractions of each operator must sum to one, so that every part of the dynamics is followed
for exactly the step size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .propagators import Propagator

__all__ = ["Composition", "strang", "trotter", "splitting", "palindromic"]


class Composition(Propagator):
    """A sequence of ``(propagator, fraction)`` sub-steps applied in order.

    Parameters
    ----------
    steps:
        ``[(propagator, fraction), ...]``; fractions must be positive.
    check_fractions:
        Require the fractions of each distinct propagator (by identity) to sum to 1.
    """

    def __init__(self, steps: Sequence[tuple[Propagator, float]], check_fractions: bool = True) -> None:
        steps = list(steps)
        if not steps:
            raise ValueError("steps must hold at least one (propagator, fraction) pair")
        totals: dict[int, float] = {}
        for i, item in enumerate(steps):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"steps[{i}] must be a (propagator, fraction) pair, got {item!r}")
            op, fraction = item
            if not callable(op):
                raise TypeError(f"steps[{i}][0] must be a propagator, got {type(op).__name__}")
            fraction = float(fraction)
            if not fraction > 0:
                raise ValueError(f"steps[{i}] has fraction {fraction}; fractions must be positive")
            totals[id(op)] = totals.get(id(op), 0.0) + fraction
        if check_fractions:
            for op, _ in steps:
                total = totals[id(op)]
                if abs(total - 1.0) > 1e-12:
                    raise ValueError(
                        f"the fractions of {op!r} sum to {total}, not 1: each part of the dynamics must be "
                        "followed for the whole step (pass check_fractions=False to allow it)"
                    )
        self.steps = [(op, float(f)) for op, f in steps]
        self.nfe = sum(getattr(op, "nfe", 0) for op, _ in self.steps)

    def _sub_steps(self, t: float, h: float):
        clocks: dict[int, float] = {}
        for op, fraction in self.steps:
            start = clocks.get(id(op), 0.0)
            clocks[id(op)] = start + fraction
            yield op, t + start * h, fraction * h

    def __call__(self, u, t, h, generator=None):
        for op, s, dh in self._sub_steps(t, h):
            u = op(u, s, dh, generator)
        return u

    def gaussian_moments(self, mean, covariance, t, h):
        for op, s, dh in self._sub_steps(t, h):
            mean, covariance = op.gaussian_moments(mean, covariance, s, dh)
        return mean, covariance

    def __repr__(self) -> str:
        inner = ", ".join(f"({type(op).__name__}, {f:g})" for op, f in self.steps)
        return f"Composition([{inner}])"


def strang(A: Propagator, B: Propagator) -> Composition:
    r"""Strang splitting :math:`A(h/2)\,B(h)\,A(h/2)` (second order). SSCS is ``strang(exact_flow, score_step)``."""
    return Composition([(A, 0.5), (B, 1.0), (A, 0.5)])


def trotter(A: Propagator, B: Propagator) -> Composition:
    r"""Lie-Trotter splitting :math:`A(h)\,B(h)` (first order)."""
    return Composition([(A, 1.0), (B, 1.0)])


def palindromic(operators: Sequence[Propagator], coefficients: Sequence[float]) -> Composition:
    r"""Alternate two operators with a palindromic coefficient list, e.g. ``[1/2, 1, 1/2]`` (Strang/velocity
    Verlet) or Yoshida's fourth-order coefficients. Operator ``i % 2`` gets ``coefficients[i]``; negative
    coefficients (backward sub-steps) are allowed here.
    """
    if len(operators) != 2:
        raise ValueError("operators must hold exactly two propagators (A, B)")
    coefficients = [float(c) for c in coefficients]
    if coefficients != coefficients[::-1]:
        raise ValueError(f"coefficients must be palindromic, got {coefficients}")
    comp = Composition.__new__(Composition)
    comp.steps = [(operators[i % 2], c) for i, c in enumerate(coefficients)]
    for j in range(2):
        total = sum(c for i, c in enumerate(coefficients) if i % 2 == j)
        if abs(total - 1.0) > 1e-12:
            raise ValueError(f"the coefficients of operator {j} sum to {total}, not 1")
    comp.nfe = sum(getattr(op, "nfe", 0) for op, _ in comp.steps)
    return comp


def splitting(sequence: str, operators: Mapping[str, Propagator], fractions: Sequence[float] | None = None) -> Composition:
    """Build a composition from a string of operator letters, e.g. ``"OBABO"`` or ``"BAOAB"``.

    Parameters
    ----------
    sequence:
        Letters naming the sub-steps in order (whitespace ignored).
    operators:
        Mapping from each letter to its propagator.
    fractions:
        Explicit fraction of each sub-step. Default: each occurrence of a letter gets ``1 / count`` of the
        step (so ``"OBABO"`` is ``O(h/2) B(h/2) A(h) B(h/2) O(h/2)``). Explicit fractions are preferred for
        anything non-obvious; each letter's fractions must sum to one.

    Examples
    --------
    >>> from splitdyn import splitting, EulerDrift
    >>> A = EulerDrift(lambda u, t: -u, nfe=0)
    >>> B = EulerDrift(lambda u, t: u, nfe=1)
    >>> splitting("ABA", {"A": A, "B": B})
    Composition([(EulerDrift, 0.5), (EulerDrift, 1), (EulerDrift, 0.5)])
    """
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
    return Composition([(operators[c], f) for c, f in zip(letters, fractions)])
