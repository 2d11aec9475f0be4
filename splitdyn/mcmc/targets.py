r"""Targets for Markov chain Monte Carlo: a potential :math:`U`, a log-density, a stochastic gradient.

Every sampler of :mod:`splitdyn.mcmc` targets

.. math::

    \pi(x) \propto \exp\!\big(-U(x)/T\big)

for a potential :math:`U` and a temperature :math:`T > 0` (default 1). A :class:`Potential` returns the
*tempered* quantities :math:`U(x)/T` and :math:`\nabla U(x)/T`, so the samplers themselves run at unit
temperature. A log-density :math:`\log\pi` is the potential :math:`U = -\log\pi` (:class:`LogDensity`).

Positions ``x`` have shape ``(chains, *event)``; :meth:`Potential.energy` returns shape ``(chains,)`` and
:meth:`Potential.gradient` the shape of ``x``. Without an explicit gradient, :math:`\nabla U` comes from
autograd (one backward pass per call, also inside the samplers' ``torch.no_grad()`` loops).

A :class:`StochasticGradient` is an unbiased estimate :math:`\widehat{\nabla U}(x)` (e.g. from a mini-batch
of data) for stochastic-gradient Langevin dynamics (:class:`~splitdyn.mcmc.overdamped.SGLD`).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..checks import check_callable, check_positive

__all__ = ["Potential", "LogDensity", "StochasticGradient", "as_potential"]


def _check_output(name: str, value, shape: tuple, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} returned shape {tuple(value.shape)} for positions of shape {tuple(x.shape)}, "
                         f"expected {tuple(shape)}")
    return value


class Potential:
    r"""A potential :math:`U(x)` (target :math:`\pi \propto e^{-U/T}`) with its gradient.

    Parameters
    ----------
    energy:
        ``U(x) -> (chains,)`` for positions ``x`` of shape ``(chains, *event)``.
    gradient:
        Optional ``grad U(x) -> (chains, *event)``; default: autograd of ``energy``.
    temperature:
        :math:`T > 0`.

    Examples
    --------
    >>> import torch
    >>> from splitdyn.mcmc import Potential
    >>> double_well = Potential(lambda x: ((x**2 - 1) ** 2).sum(-1))
    >>> double_well.gradient(torch.tensor([[2.0]]))
    tensor([[24.]])
    """

    def __init__(self, energy: Callable[[torch.Tensor], torch.Tensor],
                 gradient: Callable[[torch.Tensor], torch.Tensor] | None = None, temperature: float = 1.0) -> None:
        self.energy_fn = check_callable("energy", energy, "a callable U(x) -> (chains,)")
        self.gradient_fn = None if gradient is None else check_callable(
            "gradient", gradient, "a callable grad U(x) -> (chains, *event)")
        self.temperature = check_positive("temperature", temperature)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        r"""The tempered potential :math:`U(x)/T`, shape ``(chains,)``."""
        value = _check_output("energy", self.energy_fn(x), x.shape[:1], x)
        return value if self.temperature == 1.0 else value / self.temperature

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        r"""The tempered gradient :math:`\nabla U(x)/T`, shape of ``x``."""
        if self.gradient_fn is not None:
            g = _check_output("gradient", self.gradient_fn(x), x.shape, x)
            if g.dtype != x.dtype:
                raise TypeError(f"gradient returned dtype {g.dtype} for positions of dtype {x.dtype}: return the "
                                "positions' dtype (a silent promotion would change the sampler's precision)")
        else:
            _, g = self._autograd(x)
        return g if self.temperature == 1.0 else g / self.temperature

    def _autograd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U(x), grad U(x))`` untempered: one backward pass, or ``torch.func`` under a transform or autograd."""
        if not x.requires_grad:
            try:
                with torch.enable_grad():
                    y = x.detach().requires_grad_(True)
                    U = _check_output("energy", self.energy_fn(y), x.shape[:1], x)
                    (g,) = torch.autograd.grad(U.sum(), y)
                return U.detach(), g
            except RuntimeError as exc:  # inside torch.func transforms (jacrev of a step): use torch.func
                if "functorch" not in str(exc) and "transform" not in str(exc):
                    raise
        g, (_, U) = torch.func.grad_and_value(lambda y: self._total_energy(y, x), has_aux=True)(x)
        return U, g

    def _total_energy(self, y: torch.Tensor, x: torch.Tensor):
        U = _check_output("energy", self.energy_fn(y), x.shape[:1], x)
        return U.sum(), U

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(U(x)/T,\ \nabla U(x)/T)` (one forward and one backward pass with autograd)."""
        if self.gradient_fn is not None:
            return self.energy(x), self.gradient(x)
        U, g = self._autograd(x)
        if self.temperature != 1.0:
            U, g = U / self.temperature, g / self.temperature
        return U, g

    def __repr__(self) -> str:
        name = getattr(self.energy_fn, "__name__", type(self.energy_fn).__name__)
        return f"{type(self).__name__}({name}, temperature={self.temperature:g})"


class LogDensity(Potential):
    r"""A target given by its (unnormalised) log-density: the :class:`Potential` :math:`U = -\log\pi`.

    Parameters
    ----------
    log_prob:
        ``log pi(x) -> (chains,)``.
    grad_log_prob:
        Optional :math:`\nabla\log\pi(x)`; default autograd.
    temperature:
        :math:`T > 0` (samples :math:`\pi^{1/T}`).
    """

    def __init__(self, log_prob: Callable[[torch.Tensor], torch.Tensor],
                 grad_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None, temperature: float = 1.0) -> None:
        check_callable("log_prob", log_prob, "a callable log pi(x) -> (chains,)")
        if grad_log_prob is not None:
            check_callable("grad_log_prob", grad_log_prob, "a callable grad log pi(x) -> (chains, *event)")
        self.log_prob = log_prob
        self.grad_log_prob = grad_log_prob
        super().__init__(self._negative_log_prob, None if grad_log_prob is None else self._negative_score,
                         temperature)

    def _negative_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x)

    def _negative_score(self, x: torch.Tensor) -> torch.Tensor:
        return -self.grad_log_prob(x)


def as_potential(target, name: str = "potential") -> Potential:
    """``target`` as is if it is a :class:`Potential`, else a callable ``U(x)`` wrapped as one (``name``: the
    argument's name in the error)."""
    if isinstance(target, Potential):
        return target
    if callable(target):
        return Potential(target)
    raise TypeError(f"{name} must be a splitdyn.mcmc.Potential or a callable U(x), got {type(target).__name__}")


class StochasticGradient:
    r"""An unbiased stochastic gradient :math:`\widehat{\nabla U}(x)` for SGLD (e.g. a mini-batch estimate).

    Parameters
    ----------
    fn:
        ``fn(x, generator) -> (chains, *event)``: an estimate of :math:`\nabla U(x)` (already divided by the
        temperature), drawing any randomness (e.g. the mini-batch indices) from ``generator``.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]) -> None:
        self.fn = check_callable("fn", fn, "a callable fn(x, generator) -> gradient estimate")

    @classmethod
    def exact(cls, potential: Potential) -> "StochasticGradient":
        """The noise-free estimate :math:`\\nabla U` of ``potential`` (SGLD then is ULA)."""
        potential = as_potential(potential)
        return cls(_ExactGradient(potential))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The estimate at ``x`` (shape of ``x``)."""
        return _check_output("the stochastic gradient", self.fn(x, generator), x.shape, x)


class _ExactGradient:
    def __init__(self, potential: Potential) -> None:
        self.potential = potential

    def __call__(self, x, generator=None):
        return self.potential.gradient(x)
