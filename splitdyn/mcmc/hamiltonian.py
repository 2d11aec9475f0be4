r"""Hamiltonian Monte Carlo (HMC) and generalized HMC (GHMC, Horowitz 1991): leapfrog proposals with MH.

With the Hamiltonian :math:`H(q, p) = U(q) + \tfrac12 p^\top M^{-1} p` (a scalar, diagonal or dense mass
matrix, :mod:`splitdyn.mcmc.metric`) the leapfrog map :math:`\Psi_h` (B(h/2) A(h) B(h/2), :func:`leapfrog`)
is volume-preserving and reversible, :math:`F\Psi_h F\Psi_h = \mathrm{id}` for the momentum flip
:math:`F(q, p) = (q, -p)`. Accepting :math:`\Psi_h^L(q, p)` with probability
:math:`\min(1, e^{H(q, p) - H(\Psi_h^L(q, p))})` is then a Metropolis-Hastings step that leaves
:math:`e^{-H}` invariant (see :mod:`splitdyn.mcmc.metropolis`: MH steps declare ``weak_order = inf``).

- :class:`HMC` (Duane et al. 1987; Neal 2011) draws a fresh momentum :math:`p \sim \mathcal N(0, M)` at
  every step and keeps positions only: states ``(chains, 1, *event)``. Its number of leapfrog steps is
  jittered by default: iteration :math:`k` takes :math:`L_k = \max(1, \mathrm{round}(L(1 + j(2u_k - 1))))`
  steps with :math:`u_k` the base-2 van der Corput (Halton) sequence, so trajectory lengths cover
  :math:`[(1-j)L, (1+j)L]` evenly with mean :math:`L`. A fixed length resonates with the periods of a
  Gaussian target (Neal 2011, Sec. 5.4.2: some coordinates then barely move); quasi-random jitter of the
  trajectory length, as in ChEES-HMC (Hoffman, Radul & Sountsov 2021), removes that without drawing random
  numbers or synchronising with the device. Each :math:`L_k` is a valid HMC kernel, so any sequence of them
  leaves the target invariant.
- :class:`GHMC` keeps the momentum in the state ``(chains, 2, *event)`` and refreshes it partially: an
  OBABO step whose BAB part (``n_leapfrog`` leapfrog steps) is Metropolised, with the momentum flipped on
  rejection, :math:`(q, p) \mapsto (q, -p)`. Each O is the exact :math:`e^{-\gamma h/2}` refresh
  (:func:`~splitdyn.mcmc.underdamped.refresh_momentum`, the one O-step of the package). As :math:`h \to 0`
  rejections vanish (the energy error of leapfrog is :math:`O(h^3)` per step) and GHMC follows kinetic
  Langevin dynamics.

Over an interval of length :math:`h` both take leapfrog steps of size :math:`h`. Both have the explicit-state
interface of :mod:`splitdyn.mcmc.metropolis` (``init``, ``transition``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..checks import check_count, check_nonnegative, check_positive, check_state
from ..steps.base import Intervals, Plan, Step
from .metric import MassMatrix, as_mass_matrix
from .metropolis import MetropolisPlan, metropolis_decision, select
from .state import ChainState, TransitionInfo
from .targets import Potential, as_potential
from .underdamped import refresh_momentum

__all__ = ["leapfrog", "hamiltonian", "leapfrog_log_acceptance", "van_der_corput", "HMC", "GHMC"]


def _metric(mass: float | MassMatrix) -> MassMatrix:
    return mass if isinstance(mass, MassMatrix) else MassMatrix(1.0 / check_positive("mass", mass))


def hamiltonian(potential, q: torch.Tensor, p: torch.Tensor, mass: float | MassMatrix = 1.0,
                energy: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`H(q, p) = U(q) + \tfrac12 p^\top M^{-1} p` per chain, shape ``(chains,)`` (``energy``: a known
    :math:`U(q)`; ``mass``: a scalar :math:`M` or a :class:`~splitdyn.mcmc.metric.MassMatrix`)."""
    U = potential.energy(q) if energy is None else energy
    return U + _metric(mass).kinetic(p)


def _leapfrog(potential, q, p, h, n_steps, m: MassMatrix, g):
    # new tensors owned here, updated in place from then on, unless autograd (or torch.func) differentiates
    in_place = not torch.is_grad_enabled()
    p = torch.add(p, g, alpha=-0.5 * h)
    U = None
    for step in range(n_steps):
        q = m.drift(q, p, h, in_place and step > 0)
        if step == n_steps - 1:  # the energy is needed at the end point only
            U, g = potential.energy_and_gradient(q)
        else:
            g = potential.gradient(q)
        alpha = -0.5 * h if step == n_steps - 1 else -h
        p = p.add_(g, alpha=alpha) if in_place else torch.add(p, g, alpha=alpha)
    return q, p, U, g


def leapfrog(potential, q: torch.Tensor, p: torch.Tensor, h: float, n_steps: int = 1,
             mass: float | MassMatrix = 1.0, gradient: torch.Tensor | None = None):
    r""":math:`\Psi_h^L(q, p)`: ``n_steps`` velocity-Verlet steps, :math:`p \mathrel{-}= \frac h2\nabla U`,
    :math:`q \mathrel{+}= hM^{-1}p`, :math:`p \mathrel{-}= \frac h2\nabla U`.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential`.
    q, p:
        Positions and momenta ``(chains, *event)`` of the same shape.
    h:
        Step size (any finite sign; ``-h`` runs the map backwards).
    n_steps:
        :math:`L \ge 1`.
    mass:
        A scalar :math:`M > 0` or a :class:`~splitdyn.mcmc.metric.MassMatrix`.
    gradient:
        :math:`\nabla U(q)` if known (saves one evaluation).

    Returns
    -------
    tuple
        ``(q', p', U(q'), grad U(q'))``: ``n_steps`` gradient evaluations (``n_steps + 1`` without ``gradient``).
    """
    n_steps = check_count("n_steps", n_steps)
    if not isinstance(q, torch.Tensor) or not isinstance(p, torch.Tensor):
        raise TypeError(f"q and p must be torch.Tensors, got {type(q).__name__} and {type(p).__name__}")
    if q.shape != p.shape:
        raise ValueError(f"q and p must have the same shape (chains, *event), got {tuple(q.shape)} and "
                         f"{tuple(p.shape)}")
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h):
        raise ValueError(f"h must be a finite number, got {h!r}")
    potential = as_potential(potential)
    g = potential.gradient(q) if gradient is None else gradient
    return _leapfrog(potential, q, p, float(h), n_steps, _metric(mass), g)


def leapfrog_log_acceptance(potential, q: torch.Tensor, p: torch.Tensor, h: float, n_leapfrog: int,
                            mass: float | MassMatrix = 1.0) -> torch.Tensor:
    r""":math:`H(q, p) - H(\Psi_h^L(q, p))` per chain: the uncapped log Metropolis ratio of ``n_leapfrog`` leapfrog
    steps of size ``h`` (HMC, and the Metropolised part of generalized HMC)."""
    m = _metric(mass)
    q1, p1, U1, _ = leapfrog(potential, q, p, h, n_leapfrog, m)
    return hamiltonian(potential, q, p, m) - hamiltonian(potential, q1, p1, m, U1)


def van_der_corput(k: int) -> float:
    """The ``k``-th point (``k >= 1``) of the base-2 van der Corput sequence in (0, 1): 1/2, 1/4, 3/4, 1/8, ..."""
    value, denominator = 0.0, 1.0
    while k:
        denominator *= 2.0
        k, bit = divmod(k, 2)
        value += bit / denominator
    return value


def _metropolised_leapfrog(potential, state: ChainState, p: torch.Tensor, h: float, n_leapfrog: int,
                           m: MassMatrix, generator):
    """Leapfrog from ``(state.position, p)`` and the MH decision: ``(decision, q1, p1, U1, g1, log_alpha)``."""
    x, U, g = state.position, state.energy, state.gradient
    H0 = U + m.kinetic(p)
    q1, p1, U1, g1 = _leapfrog(potential, x, p, h, n_leapfrog, m, g)
    log_alpha = H0 - (U1 + m.kinetic(p1))
    return metropolis_decision(log_alpha, generator), q1, p1, U1, g1, log_alpha


class _HMCPlan(MetropolisPlan):
    def __init__(self, step: "HMC", intervals: Intervals) -> None:
        super().__init__(step, intervals)
        self.iteration = 0  # global iteration count: indexes the jitter sequence (never reset)

    def transition(self, state, i, generator):
        self.iteration += 1
        return self.kernel.transition(state, self.spans[i], generator, potential=self.potential,
                                      n_leapfrog=self.kernel.leapfrog_steps(self.iteration))


class HMC(Step):
    r"""Hamiltonian Monte Carlo: fresh momentum, about ``n_leapfrog`` leapfrog steps of size :math:`h`, MH accept.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    n_leapfrog:
        Mean leapfrog steps per proposal :math:`L \ge 1` (``nfe``; :math:`L = 1` without jitter is MALA with
        step :math:`h^2/2M`).
    mass:
        A scalar :math:`M > 0`.
    inverse_mass:
        Instead of ``mass``: :math:`M^{-1}` as a number, a diagonal of the event shape, a dense matrix or a
        :class:`~splitdyn.mcmc.metric.MassMatrix` (e.g. from :func:`~splitdyn.mcmc.adaptation.warmup`).
    jitter:
        :math:`j \in [0, 1]`: the number of leapfrog steps of iteration :math:`k` is
        :math:`\max(1, \mathrm{round}(L(1 + j(2u_k - 1))))` with :math:`u_k` quasi-random (module docstring);
        ``0`` for a fixed :math:`L`.

    Examples
    --------
    >>> import torch
    >>> from splitdyn.mcmc import HMC, Potential, run_chain
    >>> step = HMC(Potential(lambda x: 0.5 * (x**2).sum(-1)), n_leapfrog=5, jitter=0.0)
    >>> out = run_chain(step, torch.zeros(4, 1, 3), 20, 0.3, generator=torch.Generator().manual_seed(0))
    >>> out.nfe  # one gradient for the initial state, then five per iteration
    101
    """

    weak_order = math.inf  # exact invariant law (see splitdyn.mcmc.metropolis)

    def __init__(self, potential, n_leapfrog: int = 10, mass: float = 1.0, *, inverse_mass: Any = None,
                 jitter: float = 1.0) -> None:
        self.potential = as_potential(potential)
        self.n_leapfrog = check_count("n_leapfrog", n_leapfrog)
        self.mass_matrix = as_mass_matrix(mass, inverse_mass)
        self.mass = 1.0 / self.mass_matrix.scalar if self.mass_matrix.kind == "scalar" else None
        self.jitter = check_nonnegative("jitter", jitter)
        if self.jitter > 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter}")
        self.nfe = self.n_leapfrog

    def leapfrog_steps(self, k: int) -> int:
        """:math:`L_k`, the number of leapfrog steps of iteration ``k >= 1`` (module docstring)."""
        if self.jitter == 0.0:
            return self.n_leapfrog
        u = van_der_corput(k)
        return max(1, round(self.n_leapfrog * (1.0 + self.jitter * (2.0 * u - 1.0))))

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        self.mass_matrix.check(tuple(like.shape[2:]))
        return _HMCPlan(self, intervals)

    def init(self, position: torch.Tensor, potential: Potential | None = None) -> ChainState:
        """The :class:`~splitdyn.mcmc.state.ChainState` of positions ``(chains, *event)`` (one evaluation)."""
        U, g = (potential or self.potential).energy_and_gradient(position)
        return ChainState(position, U, g)

    def state_of(self, u: torch.Tensor, potential: Potential | None = None) -> ChainState:
        """:meth:`init` from a plain state ``(chains, 1, *event)``."""
        return self.init(u[:, 0], potential)

    def transition(self, state: ChainState, step_size: float, generator: torch.Generator | None = None,
                   potential: Potential | None = None, n_leapfrog: int | None = None,
                   ) -> tuple[ChainState, TransitionInfo]:
        """One HMC transition with leapfrog step ``step_size`` and ``n_leapfrog`` steps (default :math:`L`)."""
        potential = potential or self.potential
        x = state.position
        p = self.mass_matrix.momentum(x, generator)
        decision, q1, p1, U1, g1, log_alpha = _metropolised_leapfrog(
            potential, state, p, step_size, n_leapfrog or self.n_leapfrog, self.mass_matrix, generator)
        new = ChainState(select(decision, q1, x), torch.where(decision, U1, state.energy),
                         select(decision, g1, state.gradient))
        return new, TransitionInfo(log_alpha, decision, q1, p1)

    def log_acceptance(self, q: torch.Tensor, p: torch.Tensor, h: float) -> torch.Tensor:
        r""":math:`H(q, p) - H(\Psi_h^L(q, p))` per chain (the uncapped log acceptance ratio, :math:`L` steps)."""
        return leapfrog_log_acceptance(self.potential, q, p, h, self.n_leapfrog, self.mass_matrix)

    def __repr__(self) -> str:
        metric = f"mass={self.mass:g}" if self.mass is not None else repr(self.mass_matrix)
        return f"HMC({self.potential!r}, n_leapfrog={self.n_leapfrog}, {metric}, jitter={self.jitter:g})"


class _GHMCPlan(MetropolisPlan):
    def __init__(self, step: "GHMC", intervals: Intervals) -> None:
        super().__init__(step, intervals)
        decay = torch.exp(-0.5 * step.friction * intervals.spans)
        self.refresh = list(zip(decay.tolist(), (1.0 - decay**2).clamp_min(0.0).sqrt().tolist()))

    def transition(self, state, i, generator):
        return self.kernel.transition(state, self.spans[i], generator, potential=self.potential,
                                      refresh=self.refresh[i])


class GHMC(Step):
    r"""Generalized HMC: O(h/2), Metropolised leapfrog with a momentum flip on rejection, O(h/2).

    States ``(chains, 2, *event)`` (positions, momenta); one gradient per leapfrog step.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    friction:
        :math:`\gamma \ge 0` of the O parts (:math:`\gamma h \to \infty` is HMC's full refresh).
    mass:
        A scalar :math:`M > 0`.
    n_leapfrog:
        Leapfrog steps in the Metropolised part (default 1: Metropolised OBABO).
    inverse_mass:
        Instead of ``mass``: :math:`M^{-1}` (see :class:`HMC`).
    """

    weak_order = math.inf  # exact invariant law (see splitdyn.mcmc.metropolis)

    def __init__(self, potential, friction: float = 1.0, mass: float = 1.0, n_leapfrog: int = 1, *,
                 inverse_mass: Any = None) -> None:
        self.potential = as_potential(potential)
        self.friction = check_nonnegative("friction", friction)
        self.mass_matrix = as_mass_matrix(mass, inverse_mass)
        self.mass = 1.0 / self.mass_matrix.scalar if self.mass_matrix.kind == "scalar" else None
        self.n_leapfrog = check_count("n_leapfrog", n_leapfrog)
        self.nfe = self.n_leapfrog

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 2)
        self.mass_matrix.check(tuple(like.shape[2:]))
        return _GHMCPlan(self, intervals)

    def init(self, position: torch.Tensor, momentum: torch.Tensor | None = None, potential: Potential | None = None,
             generator: torch.Generator | None = None) -> ChainState:
        """The :class:`~splitdyn.mcmc.state.ChainState` of positions and momenta (drawn from
        :math:`\\mathcal N(0, M)` if not given); one evaluation."""
        U, g = (potential or self.potential).energy_and_gradient(position)
        if momentum is None:
            momentum = self.mass_matrix.momentum(position, generator)
        return ChainState(position, U, g, momentum)

    def state_of(self, u: torch.Tensor, potential: Potential | None = None) -> ChainState:
        """:meth:`init` from a plain state ``(chains, 2, *event)``."""
        return self.init(u[:, 0], u[:, 1], potential)

    def transition(self, state: ChainState, step_size: float, generator: torch.Generator | None = None,
                   potential: Potential | None = None, refresh: tuple[float, float] | None = None,
                   n_leapfrog: int | None = None) -> tuple[ChainState, TransitionInfo]:
        """One GHMC transition (O, Metropolised leapfrog, O) with leapfrog step ``step_size``.

        ``refresh``: the O part's ``(decay, sqrt(1 - decay^2))``, default from :math:`e^{-\\gamma h/2}`.
        """
        potential = potential or self.potential
        if refresh is None:
            decay = math.exp(-0.5 * self.friction * step_size)
            refresh = (decay, math.sqrt(max(0.0, 1.0 - decay * decay)))
        m = self.mass_matrix
        q = state.position
        if state.momentum is None:
            raise ValueError("a GHMC state must carry a momentum (GHMC.init draws one)")
        p = refresh_momentum(state.momentum, refresh[0], refresh[1], generator, m)
        decision, q1, p1, U1, g1, log_alpha = _metropolised_leapfrog(
            potential, state, p, step_size, n_leapfrog or self.n_leapfrog, m, generator)
        p_new = refresh_momentum(select(decision, p1, -p), refresh[0], refresh[1], generator, m, in_place=True)
        new = ChainState(select(decision, q1, q), torch.where(decision, U1, state.energy),
                         select(decision, g1, state.gradient), p_new)
        return new, TransitionInfo(log_alpha, decision, q1, p1)

    def log_acceptance(self, q: torch.Tensor, p: torch.Tensor, h: float) -> torch.Tensor:
        r""":math:`H(q, p) - H(\Psi_h^L(q, p))` per chain for the Metropolised part (after the first O)."""
        return leapfrog_log_acceptance(self.potential, q, p, h, self.n_leapfrog, self.mass_matrix)

    def __repr__(self) -> str:
        metric = f"mass={self.mass:g}" if self.mass is not None else repr(self.mass_matrix)
        return f"GHMC({self.potential!r}, friction={self.friction:g}, {metric}, n_leapfrog={self.n_leapfrog})"
