r"""Hamiltonian Monte Carlo (HMC) and generalized HMC (GHMC, Horowitz 1991): leapfrog proposals with MH.

With the Hamiltonian :math:`H(q, p) = U(q) + |p|^2/(2M)` the leapfrog map :math:`\Psi_h` (B(h/2) A(h) B(h/2),
:func:`leapfrog`) is volume-preserving and reversible, :math:`F\Psi_h F\Psi_h = \mathrm{id}` for the momentum
flip :math:`F(q, p) = (q, -p)`. Accepting :math:`\Psi_h^L(q, p)` with probability
:math:`\min(1, e^{H(q, p) - H(\Psi_h^L(q, p))})` is then a Metropolis-Hastings step that leaves
:math:`e^{-H}` invariant (see :mod:`splitdyn.mcmc.metropolis`: MH steps declare ``weak_order = inf``).

- :class:`HMC` (Duane et al. 1987; Neal 2011) draws a fresh momentum :math:`p \sim \mathcal N(0, M)` at
  every step and keeps positions only: states ``(chains, 1, *event)``.
- :class:`GHMC` keeps the momentum in the state ``(chains, 2, *event)`` and refreshes it partially: an
  OBABO step whose BAB part (``n_leapfrog`` leapfrog steps) is Metropolised, with the momentum flipped on
  rejection, :math:`(q, p) \mapsto (q, -p)`. Each O is the exact :math:`e^{-\gamma h/2}` refresh of
  :class:`~splitdyn.mcmc.underdamped.MomentumOU`. As :math:`h \to 0` rejections vanish (the energy error of
  leapfrog is :math:`O(h^3)` per step) and GHMC follows kinetic Langevin dynamics.

Over an interval of length :math:`h` both take ``n_leapfrog`` leapfrog steps of size :math:`h`.
"""

from __future__ import annotations

import math

import torch

from ..checks import check_count, check_nonnegative, check_positive, check_state
from ..steps.base import Intervals, Plan, Step
from .metropolis import MetropolisPlan
from .targets import as_potential

__all__ = ["leapfrog", "hamiltonian", "leapfrog_log_acceptance", "HMC", "GHMC"]


def hamiltonian(potential, q: torch.Tensor, p: torch.Tensor, mass: float = 1.0,
                energy: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`H(q, p) = U(q) + |p|^2 / (2M)` per chain, shape ``(chains,)`` (``energy``: a known :math:`U(q)`)."""
    U = potential.energy(q) if energy is None else energy
    return U + p.reshape(p.shape[0], -1).square().sum(1) / (2.0 * mass)


def leapfrog(potential, q: torch.Tensor, p: torch.Tensor, h: float, n_steps: int = 1, mass: float = 1.0,
             gradient: torch.Tensor | None = None):
    r""":math:`\Psi_h^L(q, p)`: ``n_steps`` velocity-Verlet steps, :math:`p \mathrel{-}= \frac h2\nabla U`,
    :math:`q \mathrel{+}= hM^{-1}p`, :math:`p \mathrel{-}= \frac h2\nabla U`.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential`.
    q, p:
        Positions and momenta ``(chains, *event)``.
    h:
        Step size (any sign; ``-h`` runs the map backwards).
    n_steps:
        :math:`L \ge 1`.
    mass:
        :math:`M > 0`.
    gradient:
        :math:`\nabla U(q)` if known (saves one evaluation).

    Returns
    -------
    tuple
        ``(q', p', U(q'), grad U(q'))``: ``n_steps`` gradient evaluations (``n_steps + 1`` without ``gradient``).
    """
    g = potential.gradient(q) if gradient is None else gradient
    # new tensors owned here, updated in place from then on, unless autograd (or torch.func) differentiates
    in_place = not torch.is_grad_enabled()
    p = torch.add(p, g, alpha=-0.5 * h)
    U = None
    for step in range(n_steps):
        q = q.add_(p, alpha=h / mass) if in_place and step else torch.add(q, p, alpha=h / mass)
        if step == n_steps - 1:  # the energy is needed at the end point only
            U, g = potential.energy_and_gradient(q)
        else:
            g = potential.gradient(q)
        alpha = -0.5 * h if step == n_steps - 1 else -h
        p = p.add_(g, alpha=alpha) if in_place else torch.add(p, g, alpha=alpha)
    return q, p, U, g



def leapfrog_log_acceptance(potential, q: torch.Tensor, p: torch.Tensor, h: float, n_leapfrog: int,
                            mass: float) -> torch.Tensor:
    r""":math:`H(q, p) - H(\Psi_h^L(q, p))` per chain: the uncapped log Metropolis ratio of ``n_leapfrog`` leapfrog
    steps of size ``h`` (HMC, and the Metropolised part of generalized HMC)."""
    q1, p1, U1, _ = leapfrog(potential, q, p, h, n_leapfrog, mass)
    return hamiltonian(potential, q, p, mass) - hamiltonian(potential, q1, p1, mass, U1)

class _HMCPlan(MetropolisPlan):
    def __init__(self, step: "HMC", intervals: Intervals) -> None:
        super().__init__(step.potential, intervals)
        self.n_leapfrog, self.mass, self.root_mass = step.n_leapfrog, step.mass, math.sqrt(step.mass)

    def __call__(self, u, i, noise):
        generator = noise.generator
        x = u[:, 0]
        U, g = self.current(u, x)
        p = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if self.root_mass != 1.0:
            p = p * self.root_mass
        H0 = hamiltonian(self.potential, x, p, self.mass, U)
        q1, p1, U1, g1 = leapfrog(self.potential, x, p, self.spans[i], self.n_leapfrog, self.mass, g)
        self.evaluations += self.n_leapfrog
        decision = self.accept(H0 - hamiltonian(self.potential, q1, p1, self.mass, U1), generator)
        x_new = self.select(decision, q1, x)
        return self.remember(x_new.unsqueeze(1), torch.where(decision, U1, U), self.select(decision, g1, g))


class HMC(Step):
    r"""Hamiltonian Monte Carlo: fresh momentum, ``n_leapfrog`` leapfrog steps of size :math:`h`, MH accept.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(q)``.
    n_leapfrog:
        Leapfrog steps per proposal :math:`L \ge 1` (``nfe``; :math:`L = 1` is MALA with step :math:`h^2/2M`).
    mass:
        :math:`M > 0`.
    """

    weak_order = math.inf  # exact invariant law (see splitdyn.mcmc.metropolis)

    def __init__(self, potential, n_leapfrog: int = 10, mass: float = 1.0) -> None:
        self.potential = as_potential(potential)
        self.n_leapfrog = check_count("n_leapfrog", n_leapfrog)
        self.mass = check_positive("mass", mass)
        self.nfe = self.n_leapfrog

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        return _HMCPlan(self, intervals)

    def log_acceptance(self, q: torch.Tensor, p: torch.Tensor, h: float) -> torch.Tensor:
        r""":math:`H(q, p) - H(\Psi_h^L(q, p))` per chain (the uncapped log acceptance ratio)."""
        return leapfrog_log_acceptance(self.potential, q, p, h, self.n_leapfrog, self.mass)

    def __repr__(self) -> str:
        return f"HMC({self.potential!r}, n_leapfrog={self.n_leapfrog}, mass={self.mass:g})"


class _GHMCPlan(MetropolisPlan):
    def __init__(self, step: "GHMC", intervals: Intervals) -> None:
        super().__init__(step.potential, intervals)
        self.n_leapfrog, self.mass = step.n_leapfrog, step.mass
        decay = torch.exp(-0.5 * step.friction * intervals.spans)
        self.decay = decay.tolist()
        self.scale = (step.mass * (1.0 - decay**2)).clamp_min(0.0).sqrt().tolist()

    def refresh(self, p, i, generator):
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
        return torch.add(p * self.decay[i], noise, alpha=self.scale[i])

    def __call__(self, u, i, noise):
        generator = noise.generator
        q = u[:, 0]
        U, g = self.current(u, q)
        p = self.refresh(u[:, 1], i, generator)
        H0 = hamiltonian(self.potential, q, p, self.mass, U)
        q1, p1, U1, g1 = leapfrog(self.potential, q, p, self.spans[i], self.n_leapfrog, self.mass, g)
        self.evaluations += self.n_leapfrog
        decision = self.accept(H0 - hamiltonian(self.potential, q1, p1, self.mass, U1), generator)
        q_new = self.select(decision, q1, q)
        p_new = self.refresh(self.select(decision, p1, -p), i, generator)
        out = torch.stack((q_new, p_new), 1)
        return self.remember(out, torch.where(decision, U1, U), self.select(decision, g1, g))


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
        :math:`M > 0`.
    n_leapfrog:
        Leapfrog steps in the Metropolised part (default 1: Metropolised OBABO).
    """

    weak_order = math.inf  # exact invariant law (see splitdyn.mcmc.metropolis)

    def __init__(self, potential, friction: float = 1.0, mass: float = 1.0, n_leapfrog: int = 1) -> None:
        self.potential = as_potential(potential)
        self.friction = check_nonnegative("friction", friction)
        self.mass = check_positive("mass", mass)
        self.n_leapfrog = check_count("n_leapfrog", n_leapfrog)
        self.nfe = self.n_leapfrog

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 2)
        return _GHMCPlan(self, intervals)

    def log_acceptance(self, q: torch.Tensor, p: torch.Tensor, h: float) -> torch.Tensor:
        r""":math:`H(q, p) - H(\Psi_h^L(q, p))` per chain for the Metropolised part (after the first O)."""
        return leapfrog_log_acceptance(self.potential, q, p, h, self.n_leapfrog, self.mass)

    def __repr__(self) -> str:
        return (f"GHMC({self.potential!r}, friction={self.friction:g}, mass={self.mass:g}, "
                f"n_leapfrog={self.n_leapfrog})")
