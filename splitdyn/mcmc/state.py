r"""The explicit chain state of the MCMC kernels, the evaluation counter, and the validated plan cache.

A kernel's transition (``init`` / ``transition`` of :class:`~splitdyn.mcmc.MALA`, :class:`~splitdyn.mcmc.HMC`,
:class:`~splitdyn.mcmc.GHMC`) maps a :class:`ChainState` to the next one. The state carries what the next
step reuses, the potential and its gradient at the position (as blackjax's ``MALAState(position,
logdensity, grad)`` does), so a step never reads anything remembered from an earlier call: warm-up
(:mod:`splitdyn.mcmc.adaptation`) changes step sizes and mass matrices between any two transitions, and a
user who edits a position simply builds a new state with ``init``.

The :class:`~splitdyn.steps.base.Plan` of a kernel (what :func:`splitdyn.mcmc.run_chain` and
:func:`splitdyn.integrate` call with a plain state tensor) keeps the :class:`ChainState` behind the tensor
it returned last in a :class:`StateCache`, which hands it back only for *that* tensor, unmodified: the
tensor's identity and its version counter (bumped by every in-place operation on it or on a view of it)
must both match. A state edited in place (``u.add_(1)``, ``u[:, 0] = x``) is therefore re-initialised,
with one extra gradient evaluation. Writes that bypass the version counter (through ``u.data``,
``u.numpy()`` or DLPack) cannot be seen: use the explicit states to be safe against those too.

:class:`CountedPotential` wraps a potential once per plan or warm-up and counts the calls that were made
(:attr:`Plan.evaluations <splitdyn.steps.base.Plan>` is what was called, not a declared number).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .targets import Potential

__all__ = ["ChainState", "TransitionInfo", "CountedPotential", "StateCache"]


class ChainState(NamedTuple):
    r"""A chain's state with what its next transition reuses.

    Attributes
    ----------
    position:
        :math:`q`, shape ``(chains, *event)``.
    energy:
        :math:`U(q)` per chain, shape ``(chains,)``.
    gradient:
        :math:`\nabla U(q)`, shape of ``position``.
    momentum:
        :math:`p` (kernels that keep it, e.g. generalized HMC), else ``None``.
    """

    position: torch.Tensor
    energy: torch.Tensor
    gradient: torch.Tensor
    momentum: torch.Tensor | None = None

    def as_tensor(self) -> torch.Tensor:
        """The plain state ``(chains, 1, *event)``, or ``(chains, 2, *event)`` with the momentum."""
        if self.momentum is None:
            return self.position.unsqueeze(1)
        return torch.stack((self.position, self.momentum), 1)


class TransitionInfo(NamedTuple):
    r"""What one Metropolis-Hastings transition reports, per chain.

    The energy error :math:`H(\text{proposal}) - H(\text{current}) = -\log\alpha` (property
    ``energy_error``) above 1000 (as in Stan) marks a divergent trajectory.

    Attributes
    ----------
    log_acceptance:
        The uncapped :math:`\log\alpha` (NaN where the proposal was not finite).
    accepted:
        Boolean decisions.
    proposal:
        The proposed position (for trajectory-length adaptation), or ``None``.
    momentum:
        The momentum :math:`p` at the end of the proposal's trajectory (Hamiltonian kernels), else ``None``.
    """

    log_acceptance: torch.Tensor
    accepted: torch.Tensor
    proposal: torch.Tensor | None = None
    momentum: torch.Tensor | None = None

    @property
    def energy_error(self) -> torch.Tensor:
        """:math:`-\\log\\alpha` per chain (the energy error of a Hamiltonian proposal)."""
        return -self.log_acceptance


class CountedPotential(Potential):
    r"""A potential that counts its calls into ``owner.evaluations`` (gradient evaluations: :meth:`gradient` and
    :meth:`energy_and_gradient`) and ``owner.energy_evaluations`` (:meth:`energy` alone).

    Parameters
    ----------
    potential:
        The :class:`~splitdyn.mcmc.targets.Potential` to count.
    owner:
        The object whose counters are incremented (a plan, a warm-up); it must have integer attributes
        ``evaluations`` and ``energy_evaluations``.
    """

    def __init__(self, potential: Potential, owner: Any) -> None:  # noqa: D107 - no Potential.__init__ checks
        self.inner = potential
        self.owner = owner
        self.temperature = potential.temperature
        self.energy_fn, self.gradient_fn = potential.energy_fn, potential.gradient_fn
        self._gradient, self._energy_and_gradient = potential.gradient, potential.energy_and_gradient
        self._energy = potential.energy

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`Potential.energy`, counted as an energy evaluation."""
        self.owner.energy_evaluations += 1
        return self._energy(x)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`Potential.gradient`, counted as one evaluation."""
        self.owner.evaluations += 1
        return self._gradient(x)

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`Potential.energy_and_gradient`, counted as one evaluation."""
        self.owner.evaluations += 1
        return self._energy_and_gradient(x)

    def __repr__(self) -> str:
        return f"CountedPotential({self.inner!r})"


class StateCache:
    """The state behind the tensor a plan returned last, handed back only for that very tensor, unmodified.

    ``lookup(u)`` returns what ``remember(u, value)`` stored if ``u`` is the same object and its version
    counter has not moved since (no in-place edit), else ``None``.
    """

    __slots__ = ("_tensor", "_version", "_value")

    def __init__(self) -> None:
        self._tensor: torch.Tensor | None = None
        self._version = -1
        self._value: Any = None

    def lookup(self, u: torch.Tensor) -> Any:
        """The remembered value for ``u``, or ``None`` (another tensor, or ``u`` edited in place since)."""
        if u is self._tensor and u._version == self._version:
            return self._value
        return None

    def remember(self, u: torch.Tensor, value: Any) -> torch.Tensor:
        """Remember ``value`` for the returned tensor ``u`` as it is now; returns ``u``."""
        self._tensor, self._version, self._value = u, u._version, value
        return u

    def clear(self) -> None:
        """Forget the remembered state."""
        self._tensor, self._version, self._value = None, -1, None
