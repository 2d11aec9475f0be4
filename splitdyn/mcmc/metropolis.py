r"""Metropolis-Hastings bookkeeping shared by the adjusted kernels, and MALA.

A Metropolis-Hastings (MH) kernel proposes :math:`y \sim q(x, \cdot)` and accepts it with probability

.. math::

    \alpha(x, y) = \min\Big(1,\ \frac{\pi(y)\,q(y, x)}{\pi(x)\,q(x, y)}\Big),

per chain, else keeps :math:`x`; the kernel then satisfies detailed balance with respect to :math:`\pi` and
leaves it exactly invariant at every step size. For that reason an MH step declares ``weak_order = inf``:
its error in the invariant law is zero (what the order table of the test suite measures for it is the
detailed-balance defect, which vanishes to rounding). Its finite-time dynamics is not claimed.

A :class:`MetropolisPlan` counts, per chain and on the state's device (no host synchronisation per step),
the accepted proposals and the summed acceptance probabilities :math:`\min(1, e^{\log\alpha})`; read them
with :meth:`MetropolisPlan.acceptance_rate` (:func:`splitdyn.mcmc.run_chain` reports them). It also keeps
the energy and gradient of the state it returned last, so a chain evaluates the gradient once per proposal.

MALA (Roberts & Tweedie 1996) proposes the ULA move :math:`y = x - h\nabla U(x) + \sqrt{2h}\,\xi`, whose
density is :math:`q(x, y) = \mathcal N(y;\ x - h\nabla U(x),\ 2h I)`.
"""

from __future__ import annotations

import math

import torch

from ..checks import check_state
from ..steps.base import Intervals, Plan, Step
from .targets import as_potential

__all__ = ["MetropolisPlan", "MALA"]


def _sum_event(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1)


def _per_chain(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], *([1] * (like.ndim - 1)))


class MetropolisPlan(Plan):
    """A planned MH kernel: acceptance bookkeeping and the cached energy and gradient of the current state.

    Attributes
    ----------
    proposals:
        Proposals made per chain so far (Python int).
    accepted:
        Accepted proposals per chain (float tensor on the state's device), or ``None`` before the first step.
    acceptance_probability:
        Summed :math:`\\min(1, \\alpha)` per chain (a lower-variance estimate of the acceptance rate).
    """

    def __init__(self, potential, intervals: Intervals) -> None:
        self.potential = potential
        self.n = len(intervals)
        self.spans = intervals.spans.tolist()
        self.evaluations = 0
        self.proposals = 0
        self.accepted: torch.Tensor | None = None
        self.acceptance_probability: torch.Tensor | None = None
        self._last = None  # (state returned last, its energy, its gradient)

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(U(x), \\nabla U(x))`, counted as one evaluation."""
        self.evaluations += 1
        return self.potential.energy_and_gradient(x)

    def current(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and gradient of the positions ``x`` of state ``u``: cached if ``u`` is the state returned last."""
        if self._last is not None and self._last[0] is u:
            return self._last[1], self._last[2]
        return self.energy_and_gradient(x)

    def remember(self, u: torch.Tensor, energy: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """Cache the energy and gradient of the returned state ``u``; returns ``u``."""
        self._last = (u, energy, gradient)
        return u

    def accept(self, log_alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-chain decisions :math:`\\log V < \\log\\alpha`, :math:`V \\sim U(0, 1)` (NaN is a rejection)."""
        v = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype, device=log_alpha.device)
        decision = v.log_() < log_alpha
        probability = torch.nan_to_num(log_alpha, nan=-math.inf).clamp_(max=0.0).exp_()
        if self.accepted is None:
            self.accepted = torch.zeros_like(probability)
            self.acceptance_probability = torch.zeros_like(probability)
        self.accepted.add_(decision)
        self.acceptance_probability.add_(probability)
        self.proposals += 1
        return decision

    @staticmethod
    def select(decision: torch.Tensor, proposed: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Per chain: ``proposed`` where accepted, else ``current``."""
        return torch.where(_per_chain(decision, proposed), proposed, current)

    def acceptance_rate(self) -> torch.Tensor:
        """Fraction of accepted proposals per chain (float64 CPU tensor; NaN before any proposal)."""
        if self.accepted is None:
            return torch.full((1,), math.nan, dtype=torch.float64)
        return self.accepted.detach().to("cpu", torch.float64) / self.proposals

    def reset_statistics(self) -> None:
        """Forget the acceptance counts (e.g. after burn-in)."""
        self.proposals, self.accepted, self.acceptance_probability = 0, None, None


class _MALAPlan(MetropolisPlan):
    def __init__(self, potential, intervals: Intervals) -> None:
        super().__init__(potential, intervals)
        self.scales = [math.sqrt(2.0 * h) for h in self.spans]

    def __call__(self, u, i, noise):
        generator = noise.generator
        h = self.spans[i]
        x = u[:, 0]
        U_x, g_x = self.current(u, x)
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        y = torch.add(x, g_x, alpha=-h).add_(xi, alpha=self.scales[i])
        U_y, g_y = self.energy_and_gradient(y)
        # log q(y, x) - log q(x, y); log q(x, y) = -|xi|^2 / 2 + const
        back = torch.add(x - y, g_y, alpha=h)
        log_alpha = U_x - U_y - _sum_event(back * back) / (4.0 * h) + 0.5 * _sum_event(xi * xi)
        decision = self.accept(log_alpha, generator)
        x_new = self.select(decision, y, x)
        return self.remember(x_new.unsqueeze(1), torch.where(decision, U_y, U_x), self.select(decision, g_y, g_x))


class MALA(Step):
    r"""Metropolis-adjusted Langevin algorithm: the ULA proposal corrected by Metropolis-Hastings.

    Over an interval of length :math:`h`: propose :math:`y = x - h\nabla U(x) + \sqrt{2h}\,\xi` and accept it
    per chain with probability :math:`\alpha(x, y)` (see the module docstring). One gradient per step (the
    current state's energy and gradient are kept). States ``(chains, 1, *event)``.

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` or a callable ``U(x)``.
    """

    nfe = 1
    weak_order = math.inf  # exact invariant law (module docstring)

    def __init__(self, potential) -> None:
        self.potential = as_potential(potential)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        return _MALAPlan(self.potential, intervals)

    def log_acceptance(self, x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
        r""":math:`\log\frac{\pi(y)\,q(y, x)}{\pi(x)\,q(x, y)}` for positions ``(chains, *event)`` (uncapped)."""
        U_x, g_x = self.potential.energy_and_gradient(x)
        U_y, g_y = self.potential.energy_and_gradient(y)
        fwd = torch.add(y - x, g_x, alpha=h)
        back = torch.add(x - y, g_y, alpha=h)
        return U_x - U_y + (_sum_event(fwd * fwd) - _sum_event(back * back)) / (4.0 * h)

    def __repr__(self) -> str:
        return f"MALA({self.potential!r})"
