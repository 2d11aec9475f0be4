"""CLD: closed forms vs the generic kernels, the mixed score, HSM/DSM losses, samplers and NLL bound."""

import math
import warnings

import pytest
import torch

from splitdyn import LinearSDE, apply_matrix
from splitdyn.oracles import DiffusedGaussianMixture, GaussianMixture, diamond_mixture
from splitdyn_cld import (
    CLD,
    MixedScore,
    dsm_loss,
    ell,
    forward_covariance,
    forward_mean_matrix,
    half_step_kernel,
    hsm_loss,
    nll_bound,
    sample,
    velocity_variance,
)

TIMES = torch.logspace(-3, 0, 13, dtype=torch.float64)


@pytest.mark.parametrize("initial", [(0.0, 0.0), (0.0, 0.01), (0.3, 0.01)])
def test_closed_form_forward_kernel_matches_the_generic_kernel(initial):
    cld = CLD()
    Phi, Q = LinearSDE(cld.F, cld.G, cld.rescaling, cld.T).kernel(TIMES)  # the generic Van Loan kernel
    S0 = torch.diag(torch.tensor(initial, dtype=torch.float64))
    reference = Phi @ S0 @ Phi.transpose(-1, -2) + Q
    assert torch.allclose(forward_mean_matrix(cld, TIMES), Phi, rtol=1e-12, atol=1e-15)
    rel = ((forward_covariance(cld, TIMES, initial) - reference).abs() / reference.abs()).max().item()
    assert rel < 1e-8  # t >= 1e-3; below that the closed form loses ~log10(1/B^3) digits (documented)


def test_half_step_kernel_matches_the_generic_reverse_linear_part():
    cld = CLD()
    linear = LinearSDE(cld.F, cld.G, cld.rescaling, cld.T).reverse_linear_part()  # generic Van Loan
    for tau, h in [(0.0, 0.005), (0.3, 0.02), (0.9, 0.05)]:
        Phi, Q = linear.kernel(tau + h, tau)
        A, S = half_step_kernel(cld, cld.beta(0.5).item() * h)
        assert torch.allclose(A, Phi, rtol=1e-12, atol=1e-15)
        assert torch.allclose(S, Q, rtol=1e-8, atol=1e-15)


def test_ell_is_the_inverse_velocity_cholesky_entry():
    cld = CLD()
    x0 = torch.zeros(len(TIMES), 3, dtype=torch.float64)
    kernel = cld.perturbation_kernel(TIMES, x0, kind="hsm")
    assert torch.allclose(ell(cld, TIMES), 1 / kernel.cholesky[:, 1, 1], rtol=1e-12)
    assert torch.allclose(velocity_variance(cld, TIMES), kernel.covariance[:, 1, 1] + cld.eps_num, rtol=1e-12)


def test_float32_coefficients_are_finite_near_zero():
    cld = CLD()
    t = torch.tensor([1e-8, 1e-6, 1e-5], dtype=torch.float64)
    assert torch.isfinite(ell(cld, t).float()).all()
    score = MixedScore(lambda u, tt: torch.zeros_like(u[:, 1:]), cld)
    u = torch.randn(3, 2, 4)
    assert torch.isfinite(score(u, t)).all()


def test_non_critical_damping_warns_and_bad_parameters_are_refused():
    with pytest.warns(UserWarning, match="critically damped"):
        CLD(mass=0.25, friction=2.0)
    with pytest.raises(ValueError, match="mass"):
        CLD(mass=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        CLD(gamma=0.0)


def gaussian_data_score(cld, data_var):
    S0 = torch.diag(torch.tensor([data_var, cld.gamma * cld.mass], dtype=torch.float64))

    def score(u, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        Phi, Q = cld.kernel(t)
        P = torch.linalg.inv(Phi @ S0 @ Phi.transpose(-1, -2) + Q)
        return apply_matrix(-P[..., 1:2, :], u)

    return score


def test_hsm_loss_of_the_exact_score_is_below_that_of_perturbed_scores():
    cld = CLD(eps_num=0.0)
    exact = gaussian_data_score(cld, 0.5)
    x0 = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.5**0.5
    losses = {}
    for delta in (0.0, 0.3, -0.3):
        score = (lambda d: (lambda u, t: exact(u, t) + d))(delta)
        losses[delta] = hsm_loss(score, x0, cld, weighting="likelihood", generator=torch.Generator().manual_seed(1), t_min=1e-2)
    assert losses[0.0] < losses[0.3] and losses[0.0] < losses[-0.3]


def test_hsm_and_dsm_differ_by_a_score_independent_constant():
    # eq. 68: HSM and DSM objectives differ by a constant, so the difference between two score functions'
    # losses is the same under both (checked with common random numbers at a fixed weighting).
    cld = CLD(eps_num=0.0)
    exact = gaussian_data_score(cld, 0.5)
    other = lambda u, t: 0.8 * exact(u, t)
    x0 = torch.randn(40000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.5**0.5
    kw = dict(weighting="likelihood", t_min=0.05)
    hsm = [hsm_loss(s, x0, cld, generator=torch.Generator().manual_seed(3), reduction="none", **kw) for s in (exact, other)]
    dsm = [dsm_loss(s, x0, cld, generator=torch.Generator().manual_seed(3), reduction="none", **kw) for s in (exact, other)]
    d_hsm, d_dsm = hsm[1] - hsm[0], dsm[1] - dsm[0]
    se = math.sqrt(d_hsm.var().item() / len(x0) + d_dsm.var().item() / len(x0))
    assert abs(d_hsm.mean().item() - d_dsm.mean().item()) < 5 * se


def test_mixed_score_network_gets_gradients_and_training_lowers_the_loss():
    torch.manual_seed(0)
    cld = CLD()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))

        def forward(self, u, t):
            h = torch.cat([u.reshape(u.shape[0], -1), t[:, None].log()], 1)
            return self.body(h).reshape(u.shape[0], 1, 2)

    model = MixedScore(Net(), cld)
    x0 = diamond_mixture().sample(512, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(150):
        loss = hsm_loss(model, x0, cld, generator=torch.Generator().manual_seed(step % 4))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = hsm_loss(model, x0, cld, generator=torch.Generator().manual_seed(0)).item()
    assert final < 0.9 * first


def test_samplers_count_nfe_and_sscs_beats_em_on_the_mixture():
    cld = CLD()
    mix = diamond_mixture()
    score = DiffusedGaussianMixture(mix, cld, [[cld.gamma * cld.mass]]).score_fn([1])
    g = torch.Generator().manual_seed(0)
    a = sample(cld, score, (4000, 2), 19, "sscs", generator=g, dtype=torch.float64)
    b = sample(cld, score, (4000, 2), 19, "em", generator=g, dtype=torch.float64)
    assert a.nfe == 20 and b.nfe == 20
    assert (-mix.log_prob(a.components()[0])).mean() < (-mix.log_prob(b.components()[0])).mean()
    c = sample(cld, score, (500, 2), 19, "torchsde-euler", generator=g, dtype=torch.float64)
    assert c.nfe == 20 and torch.isfinite(c.state).all()
    d = sample(cld, score, (500, 2), None, "ode", generator=g, dtype=torch.float64, rtol=1e-4, atol=1e-4)
    assert d.nfe > 10 and (-mix.log_prob(d.components()[0])).mean() < 0.0


def test_nan_scores_are_detected():
    cld = CLD()
    with pytest.raises(ValueError, match="non-finite"):
        sample(cld, lambda u, t: torch.full_like(u[:, 1:], float("nan")), (10, 2), 5)


def test_nll_bound_of_gaussian_data_is_close_to_the_true_nll():
    cld = CLD(gamma=0.04)
    std = 0.5
    mix = GaussianMixture([[0.0, 0.0]], std)
    score = DiffusedGaussianMixture(mix, cld, [[cld.gamma * cld.mass]]).score_fn([1])
    x0 = mix.sample(200, torch.Generator().manual_seed(0), dtype=torch.float64)
    bound = nll_bound(cld, score, x0, trace="exact", rtol=1e-6, atol=1e-6, generator=torch.Generator().manual_seed(1))
    true_nll = -mix.log_prob(x0)
    gap = (bound.nats - true_nll).mean().item()
    se = (bound.nats - true_nll).std().item() / math.sqrt(len(x0))
    # a bound: not below the true NLL beyond MC error, and tight for this easy case
    assert gap > -5 * se
    assert gap < 0.5
