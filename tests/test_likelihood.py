"""Log-likelihoods through the probability-flow ODE against closed-form Gaussian log densities."""

from __future__ import annotations

import pytest
import torch

from splitdyn import (
    LinearBeta,
    LinearSDE,
    ProbabilityFlowODE,
    apply_matrix,
    divergence,
    gaussian_log_prob,
    log_likelihood,
)
from splitdyn_cld import CLD

F64 = torch.float64
T0 = 1e-3


def gaussian_problem(name: str):
    """A linear SDE, zero-mean Gaussian data covariance S_0, and the exact score of the marginals.

    The data mean is zero because :func:`log_likelihood`'s prior is a zero-mean Gaussian.
    """
    if name == "cld":
        sde = CLD(gamma=0.04)
        S0 = torch.diag(torch.tensor([0.5, 0.04 * sde.mass], dtype=F64))
    else:
        sde = LinearSDE([[-0.5]], [[1.0]], LinearBeta(0.1, 20.0))
        S0 = torch.tensor([[0.3]], dtype=F64)

    def marginal_covariance(t: float) -> torch.Tensor:
        Phi, Q = sde.kernel(t)
        return Phi @ S0 @ Phi.T + Q

    def score(u, t):
        return -apply_matrix(torch.linalg.inv(marginal_covariance(float(t))), u)

    return sde, marginal_covariance, score


@pytest.mark.parametrize("name", ["cld", "vp"])
def test_exact_trace_likelihood_equals_the_gaussian_log_density(name):
    sde, marginal_covariance, score = gaussian_problem(name)
    ode = ProbabilityFlowODE(sde, score)
    k, d = sde.num_components, 3
    cov_t0 = marginal_covariance(T0)
    g = torch.Generator().manual_seed(0)
    u = apply_matrix(torch.linalg.cholesky(cov_t0), torch.randn(6, k, d, generator=g, dtype=F64))
    result = log_likelihood(
        ode, u, t0=T0, prior_covariance=marginal_covariance(1.0), trace="exact", rtol=1e-8, atol=1e-8
    )
    expected = gaussian_log_prob(u, cov_t0)
    assert result.log_prob.shape == (6,) and result.log_prob.dtype == F64
    assert torch.allclose(result.log_prob, expected, rtol=0, atol=1e-4), (result.log_prob - expected)
    assert torch.allclose(result.log_prob, result.prior_log_prob + result.delta_log_prob)
    assert result.nfe > 0
    # the final state is the flow's image of u at T: Gaussian with the prior covariance, so its log density
    # is what the prior term used
    assert torch.allclose(result.prior_log_prob, gaussian_log_prob(result.final_state, marginal_covariance(1.0)))


def test_hutchinson_trace_is_unbiased():
    # one Rademacher probe per sample and solve: replicate one state over the batch to average many probes
    sde, marginal_covariance, score = gaussian_problem("cld")
    ode = ProbabilityFlowODE(sde, score)
    g = torch.Generator().manual_seed(1)
    u = apply_matrix(torch.linalg.cholesky(marginal_covariance(T0)), torch.randn(1, 2, 2, generator=g, dtype=F64))
    prior = marginal_covariance(1.0)
    exact = log_likelihood(ode, u, t0=T0, prior_covariance=prior, trace="exact", rtol=1e-7, atol=1e-7)
    n = 2000
    estimates = log_likelihood(
        ode, u.expand(n, -1, -1).contiguous(), t0=T0, prior_covariance=prior, trace="hutchinson",
        rtol=1e-7, atol=1e-7, generator=torch.Generator().manual_seed(2),
    ).log_prob
    spread = estimates.std().item()
    assert spread > 1e-3  # the estimator is noisy (off-diagonal Jacobian terms) ...
    standard_error = spread / n**0.5
    assert abs(estimates.mean().item() - exact.log_prob.item()) < 5 * standard_error  # ... but unbiased


def test_divergence_exact_and_hutchinson_on_a_linear_field():
    # v(u) = A u per coordinate: div = d * tr(A); the Hutchinson estimate with probe e is e^T (A kron I) e
    A = torch.tensor([[0.3, -1.2], [0.7, -0.5]], dtype=F64)

    def field(u, t):
        return apply_matrix(A, u)

    u = torch.randn(5, 2, 3, dtype=F64)
    v, div = divergence(field, u, 0.0)
    assert torch.allclose(v, field(u, 0.0))
    assert torch.allclose(div, torch.full((5,), 3 * torch.trace(A).item(), dtype=F64))
    probe = torch.randint(0, 2, (5, 2, 3), generator=torch.Generator().manual_seed(3)).to(F64) * 2 - 1
    _, estimate = divergence(field, u, 0.0, probe)
    expected = (probe * apply_matrix(A, probe)).sum((1, 2))
    assert torch.allclose(estimate, expected)


def test_default_prior_is_the_stationary_law():
    # data already at equilibrium: every marginal is the stationary law, the flow is the drift's
    # probability flow and the likelihood is the stationary density
    sde = CLD(gamma=1.0)
    S = sde.stationary_covariance()
    precision = torch.linalg.inv(S)
    ode = ProbabilityFlowODE(sde, lambda u, t: -apply_matrix(precision, u))
    u = apply_matrix(torch.linalg.cholesky(S), torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(4), dtype=F64))
    result = log_likelihood(ode, u, t0=T0, trace="exact", rtol=1e-8, atol=1e-8)
    assert torch.allclose(result.log_prob, gaussian_log_prob(u, S), rtol=0, atol=1e-5)


def test_divergence_of_a_field_that_ignores_the_state_is_zero():
    u = torch.randn(3, 1, 2, dtype=F64)
    v, div = divergence(lambda u, t: torch.ones(3, 1, 2, dtype=F64), u, 0.0)
    assert torch.equal(div, torch.zeros(3, dtype=F64)) and torch.equal(v, torch.ones(3, 1, 2, dtype=F64))


def test_prior_covariance_may_be_a_nested_list():
    sde, covariance, score = gaussian_problem("vp")
    ode = ProbabilityFlowODE(sde, score)
    u = torch.randn(3, 1, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    given = log_likelihood(ode, u, t0=T0, trace="exact", prior_covariance=covariance(1.0).tolist())
    default = log_likelihood(ode, u, t0=T0, trace="exact", prior_covariance=covariance(1.0))
    assert torch.equal(given.log_prob, default.log_prob)
