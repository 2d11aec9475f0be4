"""SGLD and SG kinetic Langevin on minibatches of a DataLoader: a Gaussian linear model with a known posterior.

Oracle: the exact posterior mean of Bayesian linear regression (noise 1, prior N(0, I)). With a linear gradient
the minibatch noise has mean zero given the state, so the stationary mean of the constant-step samplers is the
posterior mean exactly (their variance is inflated). The chains run together share each minibatch, so the
minibatch noise does not average out across chains: the stated bound on |mean - exact| is a quarter of the
posterior standard deviation (0.25 sd) for these 300 kept steps, besides 5 Monte-Carlo standard errors."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from splitdyn.mcmc import MALA, SGLD, kinetic_langevin, minibatch_gradient, noisy_potential, run_chain, with_momentum

F64 = torch.float64


def linear_model():
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
    return gradient, exact, d, torch.linalg.inv(precision).diag().sqrt()


@pytest.mark.parametrize("sampler", ["SGLD", "SG-BAOAB"])
def test_minibatch_samplers_find_the_posterior_mean_of_a_gaussian_linear_model(sampler):
    gradient, exact, d, posterior_sd = linear_model()
    chains = 64
    x0 = exact.expand(chains, d).clone()
    if sampler == "SGLD":
        out = run_chain(SGLD(gradient), x0[:, None], 400, 1e-4, burn_in=100, generator=torch.Generator().manual_seed(2))
    else:  # posterior sd ~ 0.022, frequency ~ 45: h = 3e-3, friction 20
        step = kinetic_langevin(noisy_potential(gradient), "BAOAB", friction=20.0)
        out = run_chain(step, with_momentum(x0, generator=torch.Generator().manual_seed(3)), 400, 3e-3, burn_in=100,
                        generator=torch.Generator().manual_seed(2))
    per_chain = out.samples.mean(0)  # (chains, d): independent across chains
    mean, se = per_chain.mean(0), per_chain.std(0) / math.sqrt(chains)
    print(f"\n{sampler} minibatch mean {mean.tolist()}, exact {exact.tolist()}, se {se.tolist()}, "
          f"posterior sd {posterior_sd.tolist()}")
    assert ((mean - exact).abs() < 5 * se + 0.25 * posterior_sd).all()
    assert out.nfe == 400 + (sampler == "SG-BAOAB")  # one minibatch per step (BAOAB's first force: one more)


def test_a_noisy_potential_has_no_energy_and_metropolis_kernels_say_so():
    gradient, exact, d, _ = linear_model()
    with pytest.raises(TypeError, match="no energy"):
        run_chain(MALA(noisy_potential(gradient)), exact.expand(4, 1, d).clone(), 5, 1e-4)


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
