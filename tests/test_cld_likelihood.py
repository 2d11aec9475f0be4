"""The CLD NLL bound (eq. 60) with exact Gaussian scores, where every term has a closed form.

For data N(0, s^2 I) and the exact score of CLD started from N(0, s^2) x N(0, gamma M) (what HSM trains for),
the model's p(v0 | x0) equals q = N(0, gamma M I), so the bound's gap KL(q || p(v0 | x0)) is zero: the bound
is an unbiased estimate of -log p_data(x0), off per sample only by -log q(v0) - H[q] (mean 0, variance d / 2).
For a model whose velocity is correlated with the data, the gap is the closed-form Gaussian KL.
"""

import math

import torch

from splitdyn import apply_matrix, gaussian_log_prob
from splitdyn_cld import CLD, nll_bound
from splitdyn_cld.likelihood import velocity_entropy

STD = 0.5


def gaussian_score(sde, S0):
    """Velocity score of N(0, S0) (per coordinate) diffused by ``sde``."""
    cache = {}

    def score(u, t):
        key = float(t)
        if key not in cache:
            Phi, Q = sde.kernel(key)
            cache[key] = -torch.linalg.inv(Phi @ S0 @ Phi.T + Q)[1:]
        return apply_matrix(cache[key], u)

    return score


def setup(d=2, n=400, seed=0):
    cld = CLD()
    S0 = torch.diag(torch.tensor([STD**2, cld.gamma * cld.mass], dtype=torch.float64))
    x0 = STD * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return cld, S0, x0


def data_nll(x0, var):
    D = x0[0].numel()
    return 0.5 * (x0.reshape(len(x0), -1) ** 2).sum(1) / var + 0.5 * D * math.log(2 * math.pi * var)


def exact_joint_log_prob(cld, S0, x0, v0, t):
    Phi, Q = cld.kernel(t)
    return gaussian_log_prob(torch.stack([x0, v0], 1), Phi @ S0 @ Phi.T + Q)


def test_ode_likelihood_of_the_joint_state_is_the_exact_marginal_density_at_t0():
    cld, S0, x0 = setup(n=50)
    score = gaussian_score(cld, S0)
    Phi, Q = cld.kernel(cld.T)
    exact_prior = nll_bound(cld, score, x0, trace="exact", rtol=1e-8, atol=1e-10, prior_covariance=Phi @ S0 @ Phi.T + Q,
                            generator=torch.Generator().manual_seed(1))
    exact = exact_joint_log_prob(cld, S0, x0, exact_prior.v0, 1e-5)
    print("max |ODE - exact| log p_t0(x0, v0):", (exact_prior.joint_log_prob - exact).abs().max().item())
    assert torch.allclose(exact_prior.joint_log_prob, exact, rtol=0, atol=1e-6)
    # the default prior N(0, diag(1, M)) is off the true p_1 by O(1e-5) in covariance: a 1e-4 error
    default = nll_bound(cld, score, x0, trace="exact", rtol=1e-8, atol=1e-10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(default.v0, exact_prior.v0)
    assert torch.allclose(default.joint_log_prob, exact, rtol=0, atol=1e-3)


def test_with_the_exact_score_the_bound_is_unbiased_for_the_data_nll():
    cld, S0, x0 = setup(n=400)
    bound = nll_bound(cld, gaussian_score(cld, S0), x0, trace="exact", rtol=1e-6, atol=1e-8,
                      generator=torch.Generator().manual_seed(1))
    gap = bound.nats - data_nll(x0, STD**2)
    # per sample, gap = -log p_t0(x0, v0) - H[q] + log p_data(x0): with t0 -> 0 this is -log q(v0) - H[q]
    expected = -exact_joint_log_prob(cld, S0, x0, bound.v0, 1e-5) - velocity_entropy(cld, 2) - data_nll(x0, STD**2)
    assert torch.allclose(gap, expected, rtol=0, atol=1e-3)
    # ... whose mean is 0 (no gap: p(v0 | x0) = q) and variance d / 2 = 1 (for d = 2, -log q(v0) - H[q] + 1
    # is Exp(1)-distributed, fourth central moment 9, so the sample variance has standard error sqrt(8 / n))
    se = gap.std().item() / math.sqrt(len(x0))
    print("mean gap", gap.mean().item(), "se", se, "variance", gap.var().item())
    assert abs(gap.mean().item()) < 5 * se
    assert abs(gap.var().item() - 1.0) < 5 * math.sqrt(8 / len(x0))


def test_the_gap_is_the_kl_from_q_to_the_models_velocity_conditional():
    # a model whose data and velocity are correlated at t = 0: p(v0 | x0) = N(c x0 / s^2, gamma M' - c^2 / s^2)
    cld, _, x0 = setup(n=400, seed=2)
    c, var_v = 0.02, 0.03
    S0 = torch.tensor([[STD**2, c], [c, var_v]], dtype=torch.float64)
    bound = nll_bound(cld, gaussian_score(cld, S0), x0, trace="exact", rtol=1e-6, atol=1e-8,
                      generator=torch.Generator().manual_seed(3))
    model_nll = data_nll(x0, STD**2)  # the model's data marginal is still N(0, s^2)
    q_var = cld.gamma * cld.mass
    cond_mean, cond_var = c / STD**2 * x0, var_v - c**2 / STD**2
    kl = 0.5 * (q_var / cond_var + cond_mean**2 / cond_var - 1 + math.log(cond_var / q_var)).sum(1)
    excess = bound.nats - model_nll - kl
    se = excess.std().item() / math.sqrt(len(x0))
    print("mean gap", (bound.nats - model_nll).mean().item(), "mean KL", kl.mean().item(), "se", se)
    assert kl.mean() > 10 * se  # the gap is clearly positive here...
    assert abs(excess.mean().item()) < 5 * se  # ...and equals the KL


def test_bits_per_dim_count_data_dimensions_only_and_add_the_offset():
    cld, S0, _ = setup()
    x0 = STD * torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    bound = nll_bound(cld, gaussian_score(cld, S0), x0, trace="exact", bits_offset=7.0,
                      generator=torch.Generator().manual_seed(5))
    assert bound.nats.shape == bound.bits_per_dim.shape == (64,)
    assert torch.allclose(bound.bits_per_dim, bound.nats / (4 * math.log(2)) + 7.0)
    assert bound.v0.shape == x0.shape
    gap = (bound.nats - data_nll(x0, STD**2)) / (4 * math.log(2))
    assert abs(gap.mean().item()) < 5 * gap.std().item() / 8


def test_hutchinson_and_exact_traces_agree_on_the_same_velocities():
    cld, S0, x0 = setup(d=4, n=300, seed=6)
    v0 = math.sqrt(cld.gamma * cld.mass) * torch.randn(x0.shape, generator=torch.Generator().manual_seed(7),
                                                       dtype=torch.float64)
    score = gaussian_score(cld, S0)
    exact = nll_bound(cld, score, x0, v0=v0, trace="exact")
    hutch = nll_bound(cld, score, x0, v0=v0, trace="hutchinson", generator=torch.Generator().manual_seed(8))
    assert torch.equal(exact.v0, v0) and torch.equal(hutch.v0, v0)
    diff = hutch.nats - exact.nats
    assert diff.std() > 0  # the probe's noise is there...
    assert abs(diff.mean().item()) < 5 * diff.std().item() / math.sqrt(len(x0))  # ...and unbiased
