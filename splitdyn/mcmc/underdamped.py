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

from typing import Any

from ..checks import check_nonnegative, check_positive, check_state
from ..steps.base import Intervals, Plan, Step
from ..steps.composition import splitting
from ..steps.drift import Drift, DriftPlan
from ..steps.euler import EulerDrift
from .metric import MassMatrix, as_mass_matrix
from .state import CountedPotential, StateCache
from .targets import as_potential

__all__ = ["MomentumOU", "PositionDrift", "ForceDrift", "KineticLangevin", "langevin_parts", "kinetic_langevin",
           "refresh_momentum"]


def refresh_momentum(p: torch.Tensor, decay: float, scale: float, generator: torch.Generator | None = None,
                     mass_matrix: MassMatrix | None = None, in_place: bool = False) -> torch.Tensor:
    r"""O, the exact Ornstein-Uhlenbeck flow of the momentum: :math:`p \mapsto a\,p + s\,M^{1/2}\xi`.

    The one O-step of :mod:`splitdyn.mcmc` (the :class:`MomentumOU` part, the in-place kinetic Langevin step and
    generalized HMC all call it). With :math:`a = e^{-\gamma h}` and :math:`s = \sqrt{1 - a^2}` it preserves
    :math:`\mathcal N(0, M)` exactly.

    Parameters
    ----------
    p:
        Momenta ``(chains, *event)``.
    decay, scale:
        :math:`a` and :math:`s` (for a scalar metric passed as ``mass_matrix=None``, :math:`s` includes
        :math:`\sqrt M`).
    generator:
        Source of the standard normals :math:`\xi`.
    mass_matrix:
        A :class:`~splitdyn.mcmc.metric.MassMatrix` whose :math:`M^{1/2}` scales the noise, or ``None``.
    in_place:
        Update ``p`` itself.
    """
    noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
    if mass_matrix is not None:
        if mass_matrix.kind == "scalar":
            scale = scale / math.sqrt(mass_matrix.scalar)
        else:
            noise = mass_matrix.scale_momentum(noise)
    if in_place:
        return p.mul_(decay).add_(noise, alpha=scale)
    return torch.add(p * decay, noise, alpha=scale)


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
        return torch.stack((u[:, 0], refresh_momentum(u[:, 1], self.decay[i], self.scale[i], generator)), 1)

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
        self.evaluations = 0
        self.energy_evaluations = 0
        self.potential = CountedPotential(step.potential, self)
        self.step = step
        self.intervals = intervals
        m = self.mass_matrix = step.mass_matrix
        scalar = m.kind == "scalar"
        self.ops = []
        for letter, fraction in zip(step.letters, step.fractions):
            h = fraction * intervals.spans
            if letter == "A":
                self.ops.append(("A", (h * m.scalar).tolist()) if scalar else ("A*", h.tolist()))
            elif letter == "B":
                self.ops.append(("B", (-h).tolist()))
            else:
                decay = torch.exp(-step.friction * h)
                scale = (1.0 - decay**2).clamp_min(0.0).sqrt()
                if scalar:  # the metric's sqrt(M) folded into the table
                    self.ops.append(("O", list(zip(decay.tolist(), (scale / math.sqrt(m.scalar)).tolist()))))
                else:
                    self.ops.append(("O*", list(zip(decay.tolist(), scale.tolist()))))
        #: when True, each step also computes its energy error (see KineticLangevin.energy_error)
        self.track_energy = False
        self.energy_error: torch.Tensor | None = None
        # the contiguous buffers behind the state returned last, handed back only for that unmodified tensor
        self.cache = StateCache()

    def __call__(self, u, i, noise):
        generator = noise.generator
        buffers = self.cache.lookup(u)
        if buffers is not None:  # continue from the buffers behind the last state
            q, p, force, energy = buffers
        else:
            q, p, force, energy = u[:, 0].clone(), u[:, 1].clone(), None, None
        if self.track_energy:
            return self._tracked(q, p, force, energy, i, generator)
        m = self.mass_matrix
        for kind, table in self.ops:
            if kind == "A":
                q.add_(p, alpha=table[i])
                force = None
            elif kind == "B":
                if force is None:
                    force, _ = self._force(q)
                p.add_(force, alpha=table[i])
            elif kind == "O":
                decay, scale = table[i]
                refresh_momentum(p, decay, scale, generator, in_place=True)
            elif kind == "A*":
                m.drift(q, p, table[i], in_place=True)
                force = None
            else:
                decay, scale = table[i]
                refresh_momentum(p, decay, scale, generator, m, in_place=True)
        return self.cache.remember(torch.stack((q, p), 1), (q, p, force, None))

    def _force(self, q, with_energy=False):
        if with_energy:
            energy, force = self.potential.energy_and_gradient(q)
        else:
            energy, force = None, self.potential.gradient(q)
        if force.untyped_storage().data_ptr() == q.untyped_storage().data_ptr():
            force = force.clone()  # a gradient that returns q itself would move with it
        return force, energy

    def _tracked(self, q, p, force, energy, i, generator):
        """The same step, also computing the energy error of its deterministic parts (A and B): the change of
        :math:`H` over the step minus the kinetic-energy changes made by its O parts (which do not move q)."""
        m = self.mass_matrix
        if energy is None:
            if force is None:
                force, energy = self._force(q, True)
            else:
                energy = self.potential.energy(q)
        H0 = energy + m.kinetic(p)
        refreshed = torch.zeros_like(H0)
        for kind, table in self.ops:
            if kind in ("A", "A*"):
                if kind == "A":
                    q.add_(p, alpha=table[i])
                else:
                    m.drift(q, p, table[i], in_place=True)
                force = energy = None
            elif kind == "B":
                if force is None:
                    force, energy = self._force(q, True)
                p.add_(force, alpha=table[i])
            else:
                decay, scale = table[i]
                before = m.kinetic(p)
                refresh_momentum(p, decay, scale, generator, m if kind == "O*" else None, in_place=True)
                refreshed += m.kinetic(p) - before
        if energy is None:
            energy = self.potential.energy(q)
        self.energy_error = energy + m.kinetic(p) - H0 - refreshed
        return self.cache.remember(torch.stack((q, p), 1), (q, p, force, energy))

    def gaussian_moments(self, mean, covariance, i):
        """Exact moments for a linear force, through the equivalent composition of the parts."""
        if self.mass_matrix.kind != "scalar":
            raise NotImplementedError("exact moments of the kinetic step are computed for a scalar mass only")
        plan = self.step.composition.plan(self.intervals.without_fusion(), mean.to(torch.float64))
        return plan.gaussian_moments(mean, covariance, i)


class KineticLangevin(Step):
    r"""A splitting of kinetic Langevin dynamics (e.g. ``"BAOAB"``) planned as one in-place step.

    Draw for draw the composition ``splitting(sequence, langevin_parts(potential, friction, mass))`` (same
    updates, noise and first-same-as-last reuse of the force, also across steps), updating contiguous
    position and momentum buffers in place and assembling the state once per step. States ``(chains, 2, *event)``.

    The buffers (and the force) behind the state a plan returned are reused only for that very tensor, and
    only while it is unmodified (see :mod:`splitdyn.mcmc.state`); a state edited in place starts afresh.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    sequence:
        Letters ``A``, ``B``, ``O``; each occurrence gets ``1 / count`` of the step.
    friction:
        :math:`\gamma \ge 0`.
    mass:
        A scalar :math:`M > 0`.
    inverse_mass:
        Instead of ``mass``: :math:`M^{-1}` as a number, a diagonal of the event shape, a dense matrix or a
        :class:`~splitdyn.mcmc.metric.MassMatrix` (A becomes :math:`q \mathrel{+}= hM^{-1}p`, O refreshes to
        :math:`\mathcal N(0, M)`).
    """

    strong_order = None

    def __init__(self, potential, sequence: str = "BAOAB", friction: float = 1.0, mass: float = 1.0, *,
                 inverse_mass: Any = None) -> None:
        if not isinstance(sequence, str):
            raise TypeError(f"sequence must be a string of the letters A, B, O, got {type(sequence).__name__}")
        self.potential = as_potential(potential)
        self.friction = check_nonnegative("friction", friction)
        self.mass_matrix = as_mass_matrix(mass, inverse_mass)
        scalar = self.mass_matrix.kind == "scalar"
        self.mass = 1.0 / self.mass_matrix.scalar if scalar else None
        self.composition = splitting(sequence, langevin_parts(self.potential, self.friction,
                                                              1.0 / self.mass_matrix.scalar if scalar else 1.0))
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
        self.mass_matrix.check(tuple(like.shape[2:]))
        return _KineticPlan(self, intervals, like)

    def __repr__(self) -> str:
        metric = f"mass={self.mass:g}" if self.mass is not None else repr(self.mass_matrix)
        return f"KineticLangevin({self.potential!r}, {self.sequence!r}, friction={self.friction:g}, {metric})"


def kinetic_langevin(potential, sequence: str = "BAOAB", friction: float = 1.0, mass: float = 1.0, *,
                     inverse_mass: Any = None) -> KineticLangevin:
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
    return KineticLangevin(potential, sequence, friction, mass, inverse_mass=inverse_mass)
