r"""Stochastic gradients from minibatches of a :class:`torch.utils.data.DataLoader` (for SGLD).

For a posterior :math:`\pi(x) \propto p(x)\prod_{i=1}^N p(y_i \mid x)` the potential is
:math:`U(x) = -\log p(x) - \sum_i \log p(y_i \mid x)`, and a minibatch :math:`B` gives the unbiased estimate

.. math::

    \widehat{\nabla U}(x) = -\nabla\log p(x) - \frac{N}{|B|}\sum_{i \in B}\nabla\log p(y_i \mid x)

(Welling & Teh 2011), computed by autograd. :func:`minibatch_gradient` wraps it as a
:class:`~splitdyn.mcmc.targets.StochasticGradient`: each call takes the next batch of the loader (starting
over when it is exhausted, so a shuffling loader reshuffles every epoch), and the scale uses the size of the
batch actually drawn. With a constant step, SGLD's stationary law is wider than the posterior (the gradient
noise adds to the injected noise); for a Gaussian posterior (a linear gradient) its mean is still exact, which
``tests/test_mcmc_sg.py`` checks. A decreasing schedule (:func:`~splitdyn.mcmc.sgld_grid`, passed to
:func:`~splitdyn.mcmc.run_chain` as its ``grid``) removes the bias.

:func:`noisy_potential` turns the estimate into a :class:`~splitdyn.mcmc.targets.Potential` whose gradient is
the estimate, so the kinetic Langevin splittings run on minibatches: ``kinetic_langevin(noisy_potential(g),
"BAOAB", friction)`` is stochastic-gradient kinetic Langevin (SGHMC of Chen, Fox & Guestrin 2014 with the
exact O part instead of their Euler friction; the first-same-as-last reuse of the force means one minibatch
per step). It has no energy, so Metropolis kernels refuse it with a clear error.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..checks import check_callable, check_count
from .targets import Potential, StochasticGradient

__all__ = ["minibatch_gradient", "noisy_potential"]


class _Minibatches:
    def __init__(self, log_likelihood, loader, n_data: int, log_prior) -> None:
        self.log_likelihood, self.loader, self.n_data, self.log_prior = log_likelihood, loader, n_data, log_prior
        self.iterator = None
        self.batches = 0

    def next_batch(self):
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            batch = next(self.iterator)
        self.batches += 1
        return batch if isinstance(batch, (list, tuple)) else (batch,)

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        batch = self.next_batch()
        size = batch[0].shape[0]
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            per_row = self.log_likelihood(y, *batch)
            if not isinstance(per_row, torch.Tensor) or per_row.shape[:1] != x.shape[:1]:
                raise ValueError("log_likelihood(x, *batch) must return a tensor of shape (chains, batch) or (chains,), "
                                 f"got {getattr(per_row, 'shape', type(per_row).__name__)}")
            log_post = per_row.reshape(x.shape[0], -1).sum(1) * (self.n_data / size)
            if self.log_prior is not None:
                log_post = log_post + self.log_prior(y)
            (g,) = torch.autograd.grad(log_post.sum(), y)
        return -g


def minibatch_gradient(log_likelihood: Callable, loader, n_data: int,
                       log_prior: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StochasticGradient:
    r"""The minibatch estimate of :math:`\nabla U` (module docstring) as a
    :class:`~splitdyn.mcmc.targets.StochasticGradient`.

    Parameters
    ----------
    log_likelihood:
        ``log_likelihood(x, *batch) -> (chains, batch)`` (or ``(chains,)`` summed over the batch): the
        log-likelihoods of the batch's rows for positions ``x`` ``(chains, *event)``.
    loader:
        An iterable of batches, e.g. a :class:`torch.utils.data.DataLoader` over a ``TensorDataset``.
    n_data:
        :math:`N`, the number of rows of the full data set.
    log_prior:
        ``log p(x) -> (chains,)``, or ``None`` for a flat prior.
    """
    check_callable("log_likelihood", log_likelihood, "a callable log_likelihood(x, *batch) -> (chains, batch)")
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"loader must be an iterable of batches (a DataLoader), got {type(loader).__name__}")
    n_data = check_count("n_data", n_data)
    if log_prior is not None:
        check_callable("log_prior", log_prior, "a callable log p(x) -> (chains,)")
    return StochasticGradient(_Minibatches(log_likelihood, loader, n_data, log_prior))


class _NoEnergy:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a noisy_potential has no energy (only a stochastic gradient): use it with unadjusted "
                        "kernels (SGLD, ULA, kinetic_langevin), not with MALA, HMC or GHMC")


class _EstimateAsGradient:
    def __init__(self, gradient: StochasticGradient) -> None:
        self.estimate = gradient

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimate(x, None)


def noisy_potential(gradient: StochasticGradient) -> Potential:
    """A :class:`~splitdyn.mcmc.targets.Potential` whose gradient is the stochastic estimate ``gradient`` (for
    the kinetic Langevin splittings on minibatches; it has no energy).

    Parameters
    ----------
    gradient:
        A :class:`~splitdyn.mcmc.targets.StochasticGradient`, e.g. from :func:`minibatch_gradient` (its
        randomness is its own, e.g. the loader's shuffling).
    """
    if not isinstance(gradient, StochasticGradient):
        raise TypeError(f"gradient must be a splitdyn.mcmc.StochasticGradient, got {type(gradient).__name__}")
    return Potential(_NoEnergy(), _EstimateAsGradient(gradient))
