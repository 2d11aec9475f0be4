"""Reverse-time SDEs, probability-flow ODEs and likelihoods against exact Gaussian answers and torchsde."""

import math

import pytest
import torch
import torchdiffeq
import torchsde

from splitdyn import (
    EulerMaruyama,
    LinearBeta,
    LinearSDE,
    ProbabilityFlowODE,
    ReverseSDE,
    apply_matrix,
    gaussian_log_prob,
    log_likelihood,
    uniform_grid,
)
from splitdyn.samplers import sample_euler_maruyama, sample_split, split_step
from splitdyn_cld import CLD

DATA_VAR = 0.5


def exact_gaussian_score(sde, S0):
    def score(u, t):
        Phi, Q = sde.kernel(float(t))
        return apply_matrix(-torch.linalg.inv(Phi @ S0 @ Phi.T + Q), u)

    return score


def cld_setup():
    cld = CLD(gamma=1.0)
    S0 = torch.diag(torch.tensor([DATA_VAR, cld.gamma * cld.mass], dtype=torch.float64))
    return cld, S0


def target_cov(sde, S0, t):
    Phi, Q = sde.kernel(t)
    return Phi @ S0 @ Phi.T + Q


def test_sscs_with_the_exact_score_recovers_the_data_moments_as_steps_shrink():
    cld, S0 = cld_setup()
    reverse = ReverseSDE(cld, exact_gaussian_score(cld, S0))
    step = split_step(reverse)
    errors = []
    for n in (16, 32, 64, 128):
        grid = uniform_grid(n, eps=1e-2)
        mean = torch.zeros(1, 2, 1, dtype=torch.float64)
        cov = cld.stationary_covariance()
        for i in range(n):
            mean, cov = step.gaussian_moments(mean, cov, grid[i].item(), (grid[i + 1] - grid[i]).item())
        errors.append((cov - target_cov(cld, S0, 1e-2)).norm().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(3)]
    print("SSCS covariance errors", errors, "orders", orders)
    assert errors[-1] < errors[0] / 4
    assert 0.7 < orders[-1] < 2.3


def test_monte_carlo_reverse_sde_recovers_the_data_gaussian():
    sde = LinearSDE([[-0.5]], [[1.0]], LinearBeta(0.1, 20.0))
    S0 = torch.tensor([[DATA_VAR]], dtype=torch.float64)
    reverse = ReverseSDE(sde, exact_gaussian_score(sde, S0))
    n = 20000
    g = torch.Generator().manual_seed(3)
    u = torch.randn(n, 1, 1, generator=g, dtype=torch.float64)
    out = sample_euler_maruyama(reverse, u, uniform_grid(400, eps=1e-3), generator=g).state
    target = target_cov(sde, S0, 1e-3)[0, 0].item()
    se = target * math.sqrt(2 / n)
    assert abs(out.var().item() - target) < 5 * se + 0.01 * target  # MC error + O(h) bias
    assert abs(out.mean().item()) < 5 * math.sqrt(target / n)


def test_our_euler_maruyama_equals_torchsde_euler_on_the_same_brownian_path():
    cld, S0 = cld_setup()
    reverse = ReverseSDE(cld, exact_gaussian_score(cld, S0))
    batch, d, n = 16, 3, 20
    # steps of 3/64 are exact in binary, so torchsde's accumulated times t + dt hit the grid exactly
    grid = uniform_grid(n, eps=1.0 - 20 * 3 / 64)
    u0 = cld.prior_sample((batch, d), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=float(grid[-1]), size=(batch, 2 * d), dtype=torch.float64,
                                   entropy=7, levy_area_approximation="none")
    ref = torchsde.sdeint(reverse.as_torchsde((d,)), u0.reshape(batch, -1), grid, method="euler",
                          dt=float(grid[1] - grid[0]), bm=bm)[-1]
    u = u0
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist()):
        dW = bm(a, b).reshape(batch, 2, d)
        G = reverse.diffusion_matrix(a)
        u = u + (b - a) * reverse.drift(u, a) + apply_matrix(G, dW)
    print("max |ours - torchsde|", (u.reshape(batch, -1) - ref).abs().max().item())
    assert torch.allclose(u.reshape(batch, -1), ref, rtol=1e-10, atol=1e-10)


def test_probability_flow_maps_prior_samples_to_the_data_moments():
    cld, S0 = cld_setup()
    ode = ProbabilityFlowODE(cld, exact_gaussian_score(cld, S0))
    n = 4000
    u = cld.prior_sample((n, 1), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = torchdiffeq.odeint(ode, u, torch.tensor([1.0, 1e-3], dtype=torch.float64), rtol=1e-7, atol=1e-9)[-1]
    target = target_cov(cld, S0, 1e-3)
    emp = torch.cov(out.reshape(n, 2).T)
    se = torch.sqrt((target**2 + torch.outer(target.diag(), target.diag())) / n)
    assert ((emp - target).abs() < 5 * se).all()


def test_probability_flow_encode_decode_round_trip():
    cld, S0 = cld_setup()
    ode = ProbabilityFlowODE(cld, exact_gaussian_score(cld, S0))
    u = torch.randn(8, 2, 2, dtype=torch.float64) * 0.5
    times = torch.tensor([1e-3, 1.0], dtype=torch.float64)
    encoded = torchdiffeq.odeint(ode, u, times, rtol=1e-9, atol=1e-11)[-1]
    decoded = torchdiffeq.odeint(ode, encoded, times.flip(0), rtol=1e-9, atol=1e-11)[-1]
    assert torch.allclose(decoded, u, atol=1e-5)


def test_exact_trace_likelihood_equals_the_closed_form_gaussian_density():
    cld, S0 = cld_setup()
    ode = ProbabilityFlowODE(cld, exact_gaussian_score(cld, S0))
    t0 = 1e-3
    cov = target_cov(cld, S0, t0)
    u = apply_matrix(torch.linalg.cholesky(cov), torch.randn(6, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    result = log_likelihood(ode, u, t0=t0, trace="exact", rtol=1e-8, atol=1e-10)
    assert torch.allclose(result.log_prob, gaussian_log_prob(u, cov), atol=1e-4)


def test_hutchinson_trace_is_unbiased():
    cld, S0 = cld_setup()
    ode = ProbabilityFlowODE(cld, exact_gaussian_score(cld, S0))
    u = torch.randn(1, 2, 4, dtype=torch.float64).expand(400, 2, 4).contiguous()
    exact = log_likelihood(ode, u[:1], t0=1e-2, trace="exact", rtol=1e-6, atol=1e-8).log_prob
    estimate = log_likelihood(ode, u, t0=1e-2, trace="hutchinson", rtol=1e-6, atol=1e-8,
                              generator=torch.Generator().manual_seed(0)).log_prob
    se = estimate.std() / math.sqrt(estimate.numel())
    assert abs(estimate.mean() - exact[0]) < 5 * se + 1e-4


class _ForwardSDE(torch.nn.Module):
    """A forward linear SDE in torchsde's protocol (general noise), to check the exact kernel by Monte Carlo."""

    noise_type, sde_type = "general", "ito"

    def __init__(self, sde, d):
        super().__init__()
        self.sde, self.d = sde, d

    def f(self, t, y):
        return self.sde.drift(y.reshape(y.shape[0], 2, self.d), float(t)).reshape(y.shape)

    def g(self, t, y):
        G = torch.kron(self.sde.diffusion_matrix(float(t)), torch.eye(self.d, dtype=torch.float64))
        return G.expand(y.shape[0], -1, -1)


def test_torchsde_monte_carlo_reproduces_the_exact_mean_and_covariance():
    cld = CLD(beta=LinearBeta(1.0, 6.0))
    n, t = 8000, 0.4
    u0 = torch.tensor([0.7, -0.3], dtype=torch.float64)
    y0 = u0.expand(n, 2).contiguous()
    torch.manual_seed(0)
    y = torchsde.sdeint(_ForwardSDE(cld, 1), y0, torch.tensor([0.0, t], dtype=torch.float64), method="euler", dt=1e-3)[-1]
    Phi, Q = cld.kernel(t)
    mean, cov = Phi @ u0, Q
    mean_se = torch.sqrt(cov.diag() / n)
    assert ((y.mean(0) - mean).abs() < 5 * mean_se).all()
    emp = torch.cov(y.T)
    cov_se = torch.sqrt((cov**2 + torch.outer(cov.diag(), cov.diag())) / n)
    # 5 standard errors of the estimator plus the O(dt) Euler bias of the reference
    assert ((emp - cov).abs() < 5 * cov_se + 2e-3 * cov.abs().max()).all()
