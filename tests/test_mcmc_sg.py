"""SGLD on minibatches of a DataLoader: a Gaussian linear model with a known posterior.

Oracle: the exact posterior mean of Bayesian linear regression (noise 1, prior N(0, I)). With a linear gradient
the minibatch noise has mean zero, so constant-step SGLD's stationary mean is the posterior mean exactly (its
stated bias for the mean is 0; its variance is inflated); the comparison allows 5 Monte-Carlo standard errors."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from splitdyn.mcmc import SGLD, minibatch_gradient, run_chain

F64 = torch.float64


def test_minibatch_sgld_finds_the_posterior_mean_of_a_gaussian_linear_model():
    g = torch.Generator().manual_seed(0)
    N, d = 2000, 3
    X = torch.randn(N, d, generator=g, dtype=F64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    y = X @ w + torch.randn(N, generator=g, dtype=F64)
    precision = X.T @ X + torch.eye(d, dtype=F64)
    exact = torch.linalg.solve(precision, X.T @ y)

    def log_likelihood(beta, xb, yb):  # (chains, batch)
        return -0.5 * (yb - beta @ xb.T) ** 2

    loader = DataLoader(TensorDataset(X, y), batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(1))
    gradient = minibatch_gradient(log_likelihood, loader, N, log_prior=lambda b: -0.5 * (b**2).sum(-1))
    chains = 64
    out = run_chain(SGLD(gradient), exact.expand(chains, 1, d).clone(), 400, 1e-4, burn_in=100,
                    generator=torch.Generator().manual_seed(2))
    per_chain = out.samples.mean(0)  # (chains, d): independent across chains
    mean, se = per_chain.mean(0), per_chain.std(0) / math.sqrt(chains)
    print(f"\nSGLD minibatch mean {mean.tolist()}, exact {exact.tolist()}, se {se.tolist()}")
    assert ((mean - exact).abs() < 5 * se).all()
    assert out.nfe == 400


def test_minibatch_gradient_scales_by_n_over_the_batch_and_refuses_bad_input():
    X = torch.arange(10, dtype=F64)[:, None]
    loader = DataLoader(TensorDataset(X), batch_size=5)
    gradient = minibatch_gradient(lambda b, xb: (b * xb.T), loader, 10)  # d/db sum = sum(x)
    x = torch.zeros(2, 1, dtype=F64)
    assert torch.allclose(gradient(x), torch.full((2, 1), -2.0 * (0 + 1 + 2 + 3 + 4), dtype=F64))
    assert torch.allclose(gradient(x), torch.full((2, 1), -2.0 * (5 + 6 + 7 + 8 + 9), dtype=F64))
    assert torch.allclose(gradient(x), torch.full((2, 1), -2.0 * 10, dtype=F64))  # starts over
    with pytest.raises(TypeError, match="loader"):
        minibatch_gradient(lambda b, xb: b, 3, 10)
    with pytest.raises(ValueError, match="n_data"):
        minibatch_gradient(lambda b, xb: b, loader, 0)
