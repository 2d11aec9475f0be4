r"""Overdamped Langevin steps: the unadjusted Langevin algorithm (ULA) and stochastic-gradient Langevin (SGLD).

Overdamped Langevin dynamics for a potential :math:`U` (tempered, see :mod:`splitdyn.mcmc.targets`)

.. math::

    dx = -\nabla U(x)\,dt + \sqrt 2\,dw

has the invariant law :math:`\pi \propto e^{-U}`. Its Euler-Maruyama step over :math:`[t, t + h]` is ULA
(Roberts & Tweedie 1996),

.. math::

    x' = x - h\,\nabla U(x) + \sqrt{2h}\,\xi, \qquad \xi \sim \mathcal N(0, I),

weak order 1, with an :math:`O(h)` bias of its invariant law (for :math:`U = x^2/(2\sigma^2)` the chain's
stationary variance is :math:`\sigma^2 / (1 - h/(2\sigma^2))`). SGLD (Welling & Teh 2011) replaces
:math:`\nabla U` by an unbiased estimate :math:`\widehat{\nabla U}` and shrinks the step size along the chain:
with a decreasing schedule :math:`h_k = a\,(b + k)^{-\gamma}`, :math:`\gamma \in (1/2, 1]`, its bias vanishes.
Step sizes are the grid's spacings: :func:`sgld_grid` builds the grid of a schedule.

States have shape ``(chains, 1, *event)`` (one component, the position).
"""

from __future__ import annotations

import math

import torch

from ..checks import check_count, check_positive, check_state
from ..steps.base import Intervals, Plan, Step
from .state import CountedPotential
from .targets import Potential, StochasticGradient, as_potential

__all__ = ["ULA", "SGLD", "sgld_grid"]


class _OverdampedPlan(Plan):
    """``x' = x - h_i g(x) + sqrt(2 h_i) xi`` with ``g`` the (possibly stochastic) gradient."""

    def __init__(self, gradient, intervals: Intervals, deterministic: bool = False) -> None:
        self.evaluations = 0
        self.energy_evaluations = 0
        # counted by wrapping what is called; a deterministic gradient is called as gradient(x) directly
        self.deterministic = CountedPotential(gradient.potential, self).gradient if deterministic else None
        self.gradient = gradient
        self.stochastic = _CountedEstimate(gradient, self)
        self.n = len(intervals)
        self.spans = intervals.spans.tolist()
        self.scales = [math.sqrt(2.0 * h) for h in self.spans]

    def __call__(self, u, i, noise):
        generator = noise.generator
        x = u[:, 0]
        g = self.deterministic(x) if self.deterministic is not None else self.stochastic(x, generator)
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        return torch.add(u, g.unsqueeze(1), alpha=-self.spans[i]).add_(noise, alpha=self.scales[i])

    def gaussian_moments(self, mean, covariance, i):
        """Exact moments when the gradient is affine and deterministic (e.g. a Gaussian target)."""
        shape, n = mean.shape, mean.numel()

        def flat_map(x):
            y = x.reshape(shape)
            return (y[:, 0] - self.spans[i] * self.gradient(y[:, 0], None)).reshape(n)

        x = mean.reshape(n).to(torch.float64)
        J = torch.func.jacrev(flat_map)(x).to(torch.float64)
        noise = 2.0 * self.spans[i] * torch.eye(n, dtype=torch.float64)
        return flat_map(x).reshape(shape), J @ covariance @ J.T + noise


class _CountedEstimate:
    def __init__(self, gradient, owner) -> None:
        self.gradient, self.owner = gradient, owner

    def __call__(self, x, generator=None):
        self.owner.evaluations += 1
        return self.gradient(x, generator)


class _PotentialGradient:
    def __init__(self, potential: Potential) -> None:
        self.potential = potential

    def __call__(self, x, generator=None):
        return self.potential.gradient(x)


class ULA(Step):
    r"""Unadjusted Langevin algorithm: :math:`x' = x - h\,\nabla U(x) + \sqrt{2h}\,\xi` (weak order 1).

    Parameters
    ----------
    potential:
        A :class:`~splitdyn.mcmc.targets.Potential` (or a callable ``U(x)``, gradient by autograd).
    """

    nfe = 1
    weak_order = 1.0
    strong_order = 1.0  # additive noise: Euler-Maruyama is Milstein

    def __init__(self, potential) -> None:
        self.potential = as_potential(potential)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        return _OverdampedPlan(_PotentialGradient(self.potential), intervals, deterministic=True)

    def __repr__(self) -> str:
        return f"ULA({self.potential!r})"


class SGLD(Step):
    r"""Stochastic-gradient Langevin dynamics: :math:`x' = x - h_k\,\widehat{\nabla U}(x) + \sqrt{2h_k}\,\xi`.

    The step sizes :math:`h_k` are the grid's spacings (see :func:`sgld_grid` for a decreasing schedule). With
    the exact gradient (:meth:`StochasticGradient.exact`) SGLD is :class:`ULA` draw for draw (weak order 1).

    Parameters
    ----------
    gradient:
        A :class:`~splitdyn.mcmc.targets.StochasticGradient`, or a :class:`~splitdyn.mcmc.targets.Potential`
        (its exact gradient).
    """

    nfe = 1
    weak_order = 1.0

    def __init__(self, gradient) -> None:
        if isinstance(gradient, Potential):
            gradient = StochasticGradient.exact(gradient)
        if not isinstance(gradient, StochasticGradient):
            raise TypeError("gradient must be a splitdyn.mcmc.StochasticGradient or a Potential, got "
                            f"{type(gradient).__name__}")
        self.gradient = gradient

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        return _OverdampedPlan(self.gradient, intervals)

    def __repr__(self) -> str:
        return f"SGLD({self.gradient.fn!r})"


def sgld_grid(n_steps: int, a: float, b: float = 1.0, gamma: float = 0.55) -> torch.Tensor:
    r"""The grid :math:`t_0 = 0,\ t_{k+1} = t_k + h_k` of the decreasing schedule :math:`h_k = a\,(b + k)^{-\gamma}`.

    Welling & Teh's :math:`\epsilon_k` is :math:`2 h_k` in this convention (their update is
    :math:`\frac{\epsilon}{2}\nabla\log\pi + \mathcal N(0, \epsilon)`). For :math:`\gamma \in (1/2, 1]`,
    :math:`\sum h_k = \infty` and :math:`\sum h_k^2 < \infty`: the chain's bias vanishes along it.

    Parameters
    ----------
    n_steps:
        Number of steps ``n`` (the grid has ``n + 1`` times).
    a, b:
        Scale :math:`a > 0` and offset :math:`b > 0`.
    gamma:
        Decay exponent :math:`\gamma \in [0, 1]` (``0``: constant steps).

    Returns
    -------
    torch.Tensor
        Float64 grid of shape ``(n + 1,)``.
    """
    n = check_count("n_steps", n_steps)
    a, b = check_positive("a", a), check_positive("b", b)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
    spans = a * (b + torch.arange(n, dtype=torch.float64)) ** (-float(gamma))
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(spans, 0)])
