r"""Metropolis-Hastings bookkeeping shared by the adjusted kernels, and MALA.

A Metropolis-Hastings (MH) kernel proposes :math:`y \sim q(x, \cdot)` and accepts it with probability

.. math::

    \alpha(x, y) = \min\Big(1,\ \frac{\pi(y)\,q(y, x)}{\pi(x)\,q(x, y)}\Big),

per chain, else keeps :math:`x`; the kernel then satisfies detailed balance with respect to :math:`\pi` and
leaves it exactly invariant at every step size. For that reason an MH step declares ``weak_order = inf``:
its error in the invariant law is zero (what the order table of the test suite measures for it is the
detailed-balance defect, which vanishes to rounding). Its finite-time dynamics is not claimed.

Every MH kernel here has an explicit-state interface, ``init(position) -> ChainState`` and
``transition(state, step_size, generator) -> (ChainState, TransitionInfo)`` (see
:mod:`splitdyn.mcmc.state`): the state carries the potential and gradient of its position, so nothing is
remembered between calls. Its :class:`MetropolisPlan` (what :func:`splitdyn.mcmc.run_chain` runs) applies
the same transition to plain state tensors and counts, per chain and on the state's device (no host
synchronisation per step), the accepted proposals, the summed acceptance probabilities
:math:`\min(1, e^{\log\alpha})` and the divergent transitions (energy error above
:data:`DIVERGENCE_THRESHOLD`); read them with :meth:`MetropolisPlan.acceptance_rate`.

MALA (Roberts & Tweedie 1996), preconditioned by a mass matrix :math:`M` (:mod:`splitdyn.mcmc.metric`),
proposes :math:`y = x - hM^{-1}\nabla U(x) + \sqrt{2h}\,M^{-1/2}\xi`, whose density is
:math:`q(x, y) = \mathcal N(y;\ x - hM^{-1}\nabla U(x),\ 2hM^{-1})` (plain MALA for :math:`M = I`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..checks import check_state
from ..steps.base import Intervals, Plan, Step
from .metric import MassMatrix, as_mass_matrix
from .state import ChainState, CountedPotential, StateCache, TransitionInfo
from .targets import Potential, as_potential

__all__ = ["DIVERGENCE_THRESHOLD", "MetropolisPlan", "MALA", "metropolis_decision", "mala_log_acceptance"]

#: Energy error :math:`H(\text{proposal}) - H(\text{current})` above which a transition counts as divergent
#: (Stan's and blackjax's value).
DIVERGENCE_THRESHOLD = 1000.0


def _sum_event(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1)


def _per_chain(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], *([1] * (like.ndim - 1)))


def select(decision: torch.Tensor, proposed: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Per chain: ``proposed`` where accepted, else ``current``."""
    return torch.where(_per_chain(decision, proposed), proposed, current)


def metropolis_decision(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Per-chain decisions :math:`\log V < \log\alpha`, :math:`V \sim U(0, 1)` (a NaN ratio is a rejection)."""
    v = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype, device=log_alpha.device)
    return v.log_() < log_alpha


def mala_log_acceptance(mass_matrix: MassMatrix, x: torch.Tensor, y: torch.Tensor, U_x: torch.Tensor,
                        g_x: torch.Tensor, U_y: torch.Tensor, g_y: torch.Tensor, h: float,
                        forward: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\log\frac{\pi(y)\,q(y, x)}{\pi(x)\,q(x, y)}` of preconditioned MALA, per chain (uncapped).

    With :math:`r(a, b) = b - a + hM^{-1}\nabla U(a)`, :math:`-\log q(a, b) = r^\top M r / (4h) + \text{const}`.
    ``forward`` may pass :math:`-\log q(x, y)` when known (:math:`|\xi|^2/2` for the proposal's standard
    normals), which saves recomputing it; the result is the same in exact arithmetic.
    """
    if forward is None:
        forward = mass_matrix.mass_norm(y - x + h * mass_matrix.velocity(g_x)) / (4.0 * h)
    if mass_matrix.kind == "scalar":  # r^T M r = |r|^2 / c for M^{-1} = c I
        back = torch.add(x - y, g_y, alpha=h * mass_matrix.scalar)
        return U_x - U_y + forward - _sum_event(back * back) / (4.0 * h * mass_matrix.scalar)
    back = (x - y).add_(mass_matrix.velocity(g_y), alpha=h)
    return U_x - U_y + forward - mass_matrix.mass_norm(back) / (4.0 * h)


class MetropolisPlan(Plan):
    """A planned MH kernel on plain state tensors: acceptance and divergence bookkeeping, counted evaluations.

    Attributes
    ----------
    proposals:
        Proposals made per chain so far (Python int).
    accepted:
        Accepted proposals per chain (float tensor on the state's device), or ``None`` before the first step.
    acceptance_probability:
        Summed :math:`\\min(1, \\alpha)` per chain (a lower-variance estimate of the acceptance rate).
    divergences:
        Divergent transitions per chain (energy error above :data:`DIVERGENCE_THRESHOLD`, or not finite).
    evaluations:
        Gradient evaluations made (counted by wrapping the potential).
    """

    def __init__(self, kernel: Any, intervals: Intervals) -> None:
        self.kernel = kernel
        self.n = len(intervals)
        self.spans = intervals.spans.tolist()
        self.evaluations = 0
        self.energy_evaluations = 0
        self.potential = CountedPotential(kernel.potential, self)
        self.proposals = 0
        self.accepted: torch.Tensor | None = None
        self.acceptance_probability: torch.Tensor | None = None
        self.divergences: torch.Tensor | None = None
        self.cache = StateCache()

    def state(self, u: torch.Tensor) -> ChainState:
        """The :class:`~splitdyn.mcmc.state.ChainState` of the plain state ``u`` (its gradient reused only if ``u``
        is the unmodified tensor this plan returned last)."""
        state = self.cache.lookup(u)
        return state if state is not None else self.kernel.state_of(u, self.potential)

    def record(self, info: TransitionInfo) -> None:
        """Add one transition's decisions, acceptance probabilities and divergences to the counts."""
        clean = torch.nan_to_num(info.log_acceptance, nan=-math.inf)
        accepted, probability, divergences = self.accepted, self.acceptance_probability, self.divergences
        if accepted is None or probability is None or divergences is None:
            accepted = self.accepted = torch.zeros_like(clean)
            probability = self.acceptance_probability = torch.zeros_like(clean)
            divergences = self.divergences = torch.zeros_like(clean)
        accepted.add_(info.accepted)
        divergences.add_(clean < -DIVERGENCE_THRESHOLD)
        probability.add_(clean.clamp_(max=0.0).exp_())
        self.proposals += 1

    def transition(self, state: ChainState, i: int, generator) -> tuple[ChainState, TransitionInfo]:
        """The kernel's transition over interval ``i`` (plans may override to vary its parameters)."""
        return self.kernel.transition(state, self.spans[i], generator, potential=self.potential)

    def __call__(self, u, i, noise):
        generator = noise.generator
        state = self.cache.lookup(u)
        if state is None:
            state = self.kernel.state_of(u, self.potential)
        state, info = self.transition(state, i, generator)
        self.record(info)
        return self.cache.remember(state.as_tensor(), state)

    select = staticmethod(select)

    def acceptance_rate(self) -> torch.Tensor:
        """Fraction of accepted proposals per chain (float64 CPU tensor; NaN before any proposal)."""
        if self.accepted is None:
            return torch.full((1,), math.nan, dtype=torch.float64)
        return self.accepted.detach().to("cpu", torch.float64) / self.proposals

    def reset_statistics(self) -> None:
        """Forget the acceptance and divergence counts (e.g. after burn-in)."""
        self.proposals, self.accepted, self.acceptance_probability, self.divergences = 0, None, None, None


class MALA(Step):
    r"""Metropolis-adjusted Langevin algorithm: the (preconditioned) ULA proposal corrected by Metropolis-Hastings.

    Over an interval of length :math:`h`: propose :math:`y = x - hM^{-1}\nabla U(x) + \sqrt{2h}\,M^{-1/2}\xi`
    and accept it per chain with probability :math:`\alpha(x, y)` (see the module docstring). One gradient per
    step (the state's energy and gradient travel with it). States ``(chains, 1, *event)``.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(x)``.
    inverse_mass:
        The preconditioner :math:`M^{-1}` (a number, a diagonal of the event shape, a dense matrix or a
        :class:`~splitdyn.mcmc.metric.MassMatrix`; default the identity), e.g. from
        :func:`~splitdyn.mcmc.adaptation.warmup`.

    Examples
    --------
    >>> import torch
    >>> from splitdyn.mcmc import MALA, Potential, run_chain
    >>> step = MALA(Potential(lambda x: 0.5 * (x**2).sum(-1)))
    >>> out = run_chain(step, torch.zeros(4, 1, 2), 100, 0.5, generator=torch.Generator().manual_seed(0))
    >>> out.nfe, tuple(out.samples.shape)
    (101, (100, 4, 2))
    """

    nfe = 1
    weak_order = math.inf  # exact invariant law (module docstring)

    def __init__(self, potential, inverse_mass: Any = None) -> None:
        self.potential = as_potential(potential)
        self.mass_matrix = as_mass_matrix(1.0, inverse_mass)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        self.mass_matrix.check(tuple(like.shape[2:]))
        return MetropolisPlan(self, intervals)

    def init(self, position: torch.Tensor, potential: Potential | None = None) -> ChainState:
        """The :class:`~splitdyn.mcmc.state.ChainState` of positions ``(chains, *event)`` (one evaluation)."""
        U, g = (potential or self.potential).energy_and_gradient(position)
        return ChainState(position, U, g)

    def state_of(self, u: torch.Tensor, potential: Potential | None = None) -> ChainState:
        """:meth:`init` from a plain state ``(chains, 1, *event)``."""
        return self.init(u[:, 0], potential)

    def transition(self, state: ChainState, step_size: float, generator: torch.Generator | None = None,
                   potential: Potential | None = None) -> tuple[ChainState, TransitionInfo]:
        """One MALA transition of ``state`` with step :math:`h` = ``step_size``; returns the new state and its info."""
        potential = potential or self.potential
        h, m = step_size, self.mass_matrix
        x, U_x, g_x = state.position, state.energy, state.gradient
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if m.kind == "scalar":
            y = torch.add(x, g_x, alpha=-h * m.scalar).add_(xi, alpha=math.sqrt(2.0 * h * m.scalar))
        else:
            y = (x - h * m.velocity(g_x)).add_(m.scale_position(xi), alpha=math.sqrt(2.0 * h))
        U_y, g_y = potential.energy_and_gradient(y)
        log_alpha = mala_log_acceptance(m, x, y, U_x, g_x, U_y, g_y, h, forward=0.5 * _sum_event(xi * xi))
        decision = metropolis_decision(log_alpha, generator)
        new = ChainState(select(decision, y, x), torch.where(decision, U_y, U_x), select(decision, g_y, g_x))
        return new, TransitionInfo(log_alpha, decision, y)

    def log_acceptance(self, x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
        r""":math:`\log\frac{\pi(y)\,q(y, x)}{\pi(x)\,q(x, y)}` for positions ``(chains, *event)`` (uncapped; the
        transition's own formula, :func:`mala_log_acceptance`)."""
        U_x, g_x = self.potential.energy_and_gradient(x)
        U_y, g_y = self.potential.energy_and_gradient(y)
        return mala_log_acceptance(self.mass_matrix, x, y, U_x, g_x, U_y, g_y, h)

    def __repr__(self) -> str:
        extra = "" if self.mass_matrix.kind == "scalar" and self.mass_matrix.scalar == 1.0 else f", {self.mass_matrix!r}"
        return f"MALA({self.potential!r}{extra})"
