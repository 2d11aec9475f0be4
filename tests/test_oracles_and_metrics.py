"""Gaussian-mixture oracle: analytic scores vs autograd of the analytic log-density; sample moments; metrics."""

import math

import pytest
import torch

from splitdyn import LinearBeta, LinearSDE
from splitdyn.metrics import mmd_rbf, mode_weight_error, wasserstein_sliced
from splitdyn.oracles import DiffusedGaussianMixture, GaussianMixture, diamond_mixture, random_mixture
from splitdyn_cld import CLD


def oracles():
    cld = CLD()
    vp = LinearSDE([[-0.5]], [[1.0]], LinearBeta(0.1, 20.0))
    mix = diamond_mixture()
    return {
        "cld": DiffusedGaussianMixture(mix, cld, [[cld.gamma * cld.mass]]),
        "vpsde": DiffusedGaussianMixture(mix, vp),
    }


@pytest.mark.parametrize("name", ["cld", "vpsde"])
@pytest.mark.parametrize("t", [1e-5, 0.01, 0.5, 1.0, "per-sample"])
def test_analytic_score_equals_autograd_of_the_log_density(name, t):
    oracle = oracles()[name]
    u = torch.randn(32, oracle.k, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.6
    if t == "per-sample":
        t = torch.rand(32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.log_prob(v, t).sum(), v)
    assert torch.allclose(oracle.score(u, t), grad, rtol=1e-9, atol=1e-9)
    if oracle.k == 2:
        assert torch.equal(oracle.component_score(u, t, [1]), oracle.score(u, t)[:, 1:])


def test_diffused_density_at_time_zero_is_the_data_density():
    oracle = oracles()["vpsde"]
    x = torch.randn(50, 2, dtype=torch.float64)
    assert torch.allclose(oracle.log_prob(x[:, None], 0.0), oracle.mixture.log_prob(x), rtol=1e-12)


def test_exact_samples_match_the_oracle_density_moments():
    oracle = oracles()["cld"]
    u = oracle.sample(20000, 0.2, torch.Generator().manual_seed(0), dtype=torch.float64)
    # score identity: E[score] = 0 and E[score u^T] = -I under the true law
    s = oracle.score(u, 0.2).reshape(len(u), -1)
    flat = u.reshape(len(u), -1)
    cross = s.T @ flat / len(u)
    assert torch.allclose(s.mean(0), torch.zeros(4, dtype=torch.float64), atol=5 * s.std(0).max().item() / math.sqrt(len(u)))
    assert torch.allclose(cross, -torch.eye(4, dtype=torch.float64), atol=0.1)


def test_large_time_cld_density_approaches_the_equilibrium():
    oracle = oracles()["cld"]
    u = torch.randn(10, 2, 2, dtype=torch.float64)
    equilibrium = -0.5 * (u[:, 0] ** 2 + u[:, 1] ** 2 / 0.25).sum(1) - 2 * math.log(2 * math.pi) - math.log(0.25)
    big = DiffusedGaussianMixture(oracle.mixture, CLD(beta=40.0), [[0.01]])
    assert torch.allclose(big.log_prob(u, 1.0), equilibrium, atol=1e-6)


def test_bad_oracle_input_is_refused():
    oracle = oracles()["cld"]
    with pytest.raises(ValueError, match="t must lie"):
        oracle.score(torch.zeros(3, 2, 2), 1.5)
    with pytest.raises(ValueError, match="shape"):
        oracle.score(torch.zeros(3, 1, 2), 0.5)
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([[0.0, 0.0]], -1.0)


def test_distances_separate_equal_and_shifted_distributions():
    mix = random_mixture(8, 4, torch.Generator().manual_seed(0))
    a = mix.sample(3000, torch.Generator().manual_seed(1))
    b = mix.sample(3000, torch.Generator().manual_seed(2))
    assert wasserstein_sliced(a, b) < 0.3 * wasserstein_sliced(a, b + 0.3)
    assert mmd_rbf(a, b) < 0.1 * mmd_rbf(a, b + 0.3)


def test_mode_weight_error_is_small_for_exact_samples_and_large_for_one_mode():
    mix = diamond_mixture()
    assert mode_weight_error(mix.sample(9000, torch.Generator().manual_seed(0)), mix) < 0.03
    one_mode = mix.means[0].float() + 0.01 * torch.randn(500, 2)
    assert mode_weight_error(one_mode, mix) > 0.8
