r"""The splitting sampler of a reverse SDE whose forward SDE is linear: SSCS (Strang) and its Trotter variant.

The reverse drift splits into a linear part followed exactly (:class:`~splitdyn.steps.exact_flow.ExactLinearFlow`)
and a score part followed by an Euler step (:class:`~splitdyn.steps.euler.EulerDrift`); :func:`split_step`
composes them (:mod:`splitdyn.steps.composition`). Named ``"sscs"`` and ``"trotter-split"`` in
:data:`splitdyn.sample.SAMPLERS`.
"""

from __future__ import annotations

from ..reverse import ReverseSDE
from .base import Step
from .composition import strang, trotter
from .euler import EulerDrift
from .exact_flow import ExactLinearFlow

__all__ = ["split_step"]


def split_step(reverse: ReverseSDE, *, precision=None, time_point: float = 0.0, scheme: str = "strang") -> Step:
    r"""The splitting sampler's step for a reverse SDE whose forward SDE is a :class:`~splitdyn.LinearSDE`.

    The reverse drift splits as :math:`-f + GG^\top s = \underbrace{(-F - GG^\top P)u}_{A} +
    \underbrace{GG^\top (s + P u)}_{S}` for a reference precision :math:`P` (default the stationary precision;
    for CLD :math:`\mathrm{diag}(1, M^{-1})`, the paper's split, eq. 76-77). :math:`A` with the noise is
    followed exactly, :math:`S` by an Euler step with the score at :math:`\tau + \theta h`
    (``time_point`` :math:`\theta`; 0 is Algorithm 1). ``scheme="strang"``: :math:`A(h/2)\,S(h)\,A(h/2)`
    (SSCS for CLD); ``"trotter"``: :math:`A(h)\,S(h)`.
    """
    if not isinstance(reverse, ReverseSDE):
        raise TypeError(f"reverse must be a splitdyn.ReverseSDE, got {type(reverse).__name__}")
    if scheme not in ("strang", "trotter"):
        raise ValueError(f"scheme must be 'strang' or 'trotter', got {scheme!r}")
    if not hasattr(reverse.sde, "reverse_linear_part"):
        raise TypeError("the splitting sampler needs a LinearSDE forward process (to split off its linear part)")
    linear = ExactLinearFlow(reverse.sde.reverse_linear_part(precision))
    score_step = EulerDrift(reverse.score_part(precision), time_point=time_point)
    return (strang if scheme == "strang" else trotter)(linear, score_step)
