r"""Kinetic (underdamped) Langevin dynamics for a potential, and its splittings (BAOAB, OBABO, ABOBA, ...).

With positions :math:`q`, momenta :math:`p`, a scalar mass :math:`M` and a friction :math:`\gamma \ge 0`,

.. math::

    dq = M^{-1} p\,dt, \qquad dp = -\nabla U(q)\,dt - \gamma p\,dt + \sqrt{2\gamma M}\,dw

has the invariant law :math:`\pi(q, p) \propto e^{-U(q) - |p|^2/(2M)}` (the potential tempered, see
:mod:`splitdyn.mcmc.targets`). Its generator splits into three parts, each followed exactly
(Leimkuhler & Matthews 2013):

- **A** (:class:`PositionDrift`): :math:`q \mathrel{+}= h\,M^{-1} p`;
- **B** (:class:`ForceDrift`): the force kick :math:`p \mathrel{-}= h\,\nabla U(q)`;
- **O** (:class:`MomentumOU`): the Ornstein-Uhlenbeck flow of the momentum,
  :math:`p \mapsto e^{-\gamma h} p + \sqrt{M(1 - e^{-2\gamma h})}\,\xi`.

:func:`langevin_parts` returns them as steps acting on the right component of a state ``(chains, 2,
*event)`` (:math:`q` in component 0, :math:`p` in component 1), and :func:`kinetic_langevin` composes any
string of them with :func:`splitdyn.splitting`. The kick declares that it reads :math:`q` and writes
:math:`p` and does not depend on time, so a composition reuses the force of the previous step when
:math:`q` has not moved since (first-same-as-last): BAOAB and OBABO cost one gradient per step.

:class:`KineticLangevin` (what :func:`kinetic_langevin` returns) is the same splitting planned as one step:
the same updates, the same noise draws and the same first-same-as-last reuse, applied in place to
contiguous position and momentum buffers (the state is assembled once per step). That removes the
per-sub-step allocations, strided views and dispatch of a generic composition, which dominate the cost for
cheap potentials (see ``benchmarks/bench_mcmc.py``).
"""

from __future__ import annotations

import math

import torch

from ..checks import check_nonnegative, check_positive, check_state
from ..steps.base import Intervals, Plan, Step
from ..steps.composition import Composition, splitting
from ..steps.drift import Drift, DriftPlan
from ..steps.euler import EulerDrift
from .targets import as_potential

__all__ = ["MomentumOU", "PositionDrift", "ForceDrift", "KineticLangevin", "langevin_parts", "kinetic_langevin"]


class _MomentumOUPlan(Plan):
    def __init__(self, friction: float, mass: float, intervals: Intervals) -> None:
        self.n = len(intervals)
        decay = torch.exp(-friction * intervals.spans)
        self.decay = decay.tolist()
        self.scale = (mass * (1.0 - decay**2)).clamp_min(0.0).sqrt().tolist()
        self.mass = mass
        self.evaluations = 0
        #: the components this step changes (the momentum only)
        self.writes = frozenset({1})

    def __call__(self, u, i, noise):
        generator = noise.generator
        p = u[:, 1]
        noise = torch.randn(p.shape, generator=generator, dtype=u.dtype, device=u.device)
        return torch.stack((u[:, 0], torch.add(p * self.decay[i], noise, alpha=self.scale[i])), 1)

    def gaussian_moments(self, mean, covariance, i):
        d = mean[0, 0].numel()
        A = torch.diag(torch.tensor([1.0] * d + [self.decay[i]] * d, dtype=torch.float64))
        noise = torch.diag(torch.tensor([0.0] * d + [self.scale[i] ** 2] * d, dtype=torch.float64))
        new_mean = (A @ mean.reshape(-1).to(torch.float64)).reshape(mean.shape)
        return new_mean, A @ covariance @ A.T + noise


class MomentumOU(Step):
    r"""O: the exact Ornstein-Uhlenbeck flow of the momentum, :math:`p \mapsto e^{-\gamma h}p + \sqrt{M(1-e^{-2\gamma h})}\,\xi`.

    Time-homogeneous (needs no horizon); draws noise for the momentum only and leaves :math:`q` alone.

    Parameters
    ----------
    friction:
        :math:`\gamma \ge 0` (``0``: no refresh).
    mass:
        :math:`M > 0`.
    """

    nfe = 0
    weak_order = math.inf
    strong_order = math.inf

    def __init__(self, friction: float = 1.0, mass: float = 1.0) -> None:
        self.friction = check_nonnegative("friction", friction)
        self.mass = check_positive("mass", mass)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 2)
        return _MomentumOUPlan(self.friction, self.mass, intervals)

    def __repr__(self) -> str:
        return f"MomentumOU(friction={self.friction:g}, mass={self.mass:g})"


class _PositionPlan(DriftPlan):
    def __init__(self, mass: float, spans: torch.Tensor) -> None:
        self.steps = (spans / mass).tolist()
        self.evaluations = 0

    def evaluate(self, u, i):
        return None

    def advance(self, u, value, i):
        return torch.stack((torch.add(u[:, 0], u[:, 1], alpha=self.steps[i]), u[:, 1]), 1)


class PositionDrift(Drift):
    r"""A: the position drift :math:`(q, p) \mapsto (q + h M^{-1} p,\ p)` (no gradient evaluation).

    Parameters
    ----------
    mass:
        :math:`M > 0`.
    """

    nfe = 0

    def __init__(self, mass: float = 1.0) -> None:
        self.mass = check_positive("mass", mass)

    def plan(self, times, spans, like):
        return _PositionPlan(self.mass, spans)

    def __repr__(self) -> str:
        return f"PositionDrift(mass={self.mass:g})"


class _ForcePlan(DriftPlan):
    def __init__(self, potential, spans: torch.Tensor) -> None:
        self.potential = potential
        self.steps = (-spans).tolist()
        self.evaluations = 0

    def evaluate(self, u, i):
        self.evaluations += 1
        return self.potential.gradient(u[:, 0])

    def advance(self, u, value, i):
        return torch.stack((u[:, 0], torch.add(u[:, 1], value, alpha=self.steps[i])), 1)


class ForceDrift(Drift):
    r"""B: the force kick :math:`(q, p) \mapsto (q,\ p - h\,\nabla U(q))` (one gradient evaluation).

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    """

    nfe = 1

    def __init__(self, potential) -> None:
        self.potential = as_potential(potential)

    def plan(self, times, spans, like):
        return _ForcePlan(self.potential, spans)

    def __repr__(self) -> str:
        return f"ForceDrift({self.potential!r})"


def langevin_parts(potential, friction: float = 1.0, mass: float = 1.0) -> dict[str, Step]:
    r"""The exact parts ``{"A": ..., "B": ..., "O": ...}`` of kinetic Langevin dynamics for ``potential``.

    ``A`` and ``B`` are :class:`~splitdyn.steps.euler.EulerDrift` steps of :class:`PositionDrift` and
    :class:`ForceDrift` declaring what they read and write (so each is exact, ``weak_order = inf``, and the
    kick is reused first-same-as-last); ``O`` is :class:`MomentumOU`.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    friction:
        :math:`\gamma \ge 0`.
    mass:
        :math:`M > 0`.
    """
    mass = check_positive("mass", mass)
    return {
        "A": EulerDrift(PositionDrift(mass), reads=[1], writes=[0], time_dependent=False),
        "B": EulerDrift(ForceDrift(potential), reads=[0], writes=[1], time_dependent=False),
        "O": MomentumOU(friction, mass),
    }


class _KineticPlan(Plan):
    def __init__(self, step: "KineticLangevin", intervals: Intervals, like: torch.Tensor) -> None:
        self.n = len(intervals)
        self.potential = step.potential
        self.generic = step.composition
        self.intervals = intervals
        self.ops = []
        for letter, fraction in zip(step.letters, step.fractions):
            h = fraction * intervals.spans
            if letter == "A":
                self.ops.append(("A", (h / step.mass).tolist()))
            elif letter == "B":
                self.ops.append(("B", (-h).tolist()))
            else:
                decay = torch.exp(-step.friction * h)
                scale = (step.mass * (1.0 - decay**2)).clamp_min(0.0).sqrt()
                self.ops.append(("O", list(zip(decay.tolist(), scale.tolist()))))
        self.evaluations = 0
        self._last = None  # (state returned last, contiguous q and p buffers, the force at q or None)

    def __call__(self, u, i, noise):
        generator = noise.generator
        if self._last is not None and self._last[0] is u:  # continue from the buffers behind the last state
            _, q, p, force = self._last
        else:
            q, p, force = u[:, 0].clone(), u[:, 1].clone(), None
        for kind, table in self.ops:
            if kind == "A":
                q.add_(p, alpha=table[i])
                force = None
            elif kind == "B":
                if force is None:
                    force = self.potential.gradient(q)
                    self.evaluations += 1
                    if force.untyped_storage().data_ptr() == q.untyped_storage().data_ptr():
                        force = force.clone()  # a gradient that returns q itself would move with it
                p.add_(force, alpha=table[i])
            else:
                decay, scale = table[i]
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
                p.mul_(decay).add_(noise, alpha=scale)
        out = torch.stack((q, p), 1)
        self._last = (out, q, p, force)
        return out

    def gaussian_moments(self, mean, covariance, i):
        """Exact moments for a linear force, through the equivalent composition of the parts."""
        plan = self.generic.plan(self.intervals.without_fusion(), mean.to(torch.float64))
        return plan.gaussian_moments(mean, covariance, i)


class KineticLangevin(Step):
    r"""A splitting of kinetic Langevin dynamics (e.g. ``"BAOAB"``) planned as one in-place step.

    Draw for draw the composition ``splitting(sequence, langevin_parts(potential, friction, mass))`` (same
    updates, noise and first-same-as-last reuse of the force, also across steps), updating contiguous
    position and momentum buffers in place and assembling the state once per step. States ``(chains, 2, *event)``.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    sequence:
        Letters ``A``, ``B``, ``O``; each occurrence gets ``1 / count`` of the step.
    friction:
        :math:`\gamma \ge 0`.
    mass:
        :math:`M > 0`.
    """

    strong_order = None

    def __init__(self, potential, sequence: str = "BAOAB", friction: float = 1.0, mass: float = 1.0) -> None:
        if not isinstance(sequence, str):
            raise TypeError(f"sequence must be a string of the letters A, B, O, got {type(sequence).__name__}")
        self.potential = as_potential(potential)
        self.friction = check_nonnegative("friction", friction)
        self.mass = check_positive("mass", mass)
        self.composition = splitting(sequence, langevin_parts(self.potential, self.friction, self.mass))
        self.letters = [c for c in sequence if not c.isspace()]
        self.fractions = [f for _, f in self.composition.steps]
        self.sequence = "".join(self.letters)
        self.nfe = self.letters.count("B")

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        """That of the composition of the exact parts: 2 for a palindromic sequence, else 1."""
        return self.composition.weak_order

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 2)
        return _KineticPlan(self, intervals, like)

    def __repr__(self) -> str:
        return (f"KineticLangevin({self.potential!r}, {self.sequence!r}, friction={self.friction:g}, "
                f"mass={self.mass:g})")


def kinetic_langevin(potential, sequence: str = "BAOAB", friction: float = 1.0, mass: float = 1.0) -> KineticLangevin:
    r"""A splitting of kinetic Langevin dynamics, e.g. ``"BAOAB"``, ``"OBABO"``, ``"ABOBA"`` (any string of A, B, O).

    Each occurrence of a letter gets ``1 / count`` of the step (see :func:`splitdyn.splitting`); a
    palindromic string is second order. Returns the in-place :class:`KineticLangevin`; the generic
    composition of the same parts is ``splitting(sequence, langevin_parts(potential, friction, mass))``.
    States have shape ``(chains, 2, *event)``.

    Examples
    --------
    >>> from splitdyn.mcmc import Potential, kinetic_langevin
    >>> step = kinetic_langevin(Potential(lambda q: 0.5 * (q**2).sum(-1)), "BAOAB", friction=1.0)
    >>> step.weak_order, step.nfe
    (2.0, 2)
    """
    return KineticLangevin(potential, sequence, friction, mass)
