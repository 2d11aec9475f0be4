"""The sampling entry point (splitdyn.sample) and the CLD preset, against exact Gaussian answers and torchsde.

For Gaussian data the exact score is linear, so every sampler step is an affine Gaussian map: the weak error
of a sampler is measured without Monte Carlo noise by pushing the mean and covariance through each sub-step
(``Step.gaussian_moments``). Measured weak orders (covariance error at the cutoff, CLD with gamma = 1,
data variance 0.5, n = 32 -> 256 uniform steps): Euler-Maruyama 1.3, 1.15, 1.07; SSCS 0.94, 0.97, 0.99 with an
error 4x smaller than EM's at n = 256; SSCS is first order because its score step is an Euler step.
"""

import math

import pytest
import torch
import torchsde

import splitdyn
from splitdyn import (
    AdaptiveProbabilityFlow,
    DivergenceError,
    EulerMaruyama,
    ProbabilityFlowODE,
    ReverseSDE,
    TorchsdeSolver,
    apply_matrix,
    integrate,
    quadratic_grid,
    split_step,
    uniform_grid,
)
from splitdyn.integrate import plan_step
from splitdyn_cld import CLD, sample
from splitdyn import VPSDE

DATA_VAR = 0.5
EPS = 1e-3


def gaussian_score(sde, S0, components=None):
    """Exact score of N(0, S0) data diffused by a linear SDE: -Sigma_t^{-1} u (rows ``components``)."""
    cache = {}

    def score(u, t):
        key = float(t)
        if key not in cache:
            Phi, Q = sde.kernel(key)
            P = -torch.linalg.inv(Phi @ S0 @ Phi.T + Q)
            cache[key] = P if components is None else P[components]
        return apply_matrix(cache[key], u)

    return score


def marginal_covariance(sde, S0, t):
    Phi, Q = sde.kernel(t)
    return Phi @ S0 @ Phi.T + Q


def cld_gaussian(gamma=0.04):
    cld = CLD(gamma=gamma)
    S0 = torch.diag(torch.tensor([DATA_VAR, cld.gamma * cld.mass], dtype=torch.float64))
    return cld, S0


def exact_prior(sde, S0, shape, generator, dtype=torch.float64):
    """Samples of the exact marginal p_T (not the stationary prior), to isolate the discretisation error."""
    L = torch.linalg.cholesky(marginal_covariance(sde, S0, sde.T))
    z = torch.randn((shape[0], S0.shape[0], *shape[1:]), generator=generator, dtype=torch.float64)
    return apply_matrix(L, z).to(dtype)


class SequentialBrownian(torchsde.BaseBrownian):
    """Brownian increments sqrt(h) * randn drawn from a generator in query order: the same numbers our
    Euler-Maruyama draws, so torchsde's Euler and ours follow the same path. Our step draws noise only for
    the columns of G that act (CLD: the velocity's, the last ``active`` channels); the others get zeros,
    which G multiplies by zero anyway."""

    def __init__(self, size, generator, dtype, active=None):
        self._size, self._generator, self._dtype = tuple(size), generator, dtype
        self._active = self._size[1] if active is None else active

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        h = float(tb - ta)
        out = torch.zeros(self._size, dtype=self._dtype)
        out[:, self._size[1] - self._active:] = math.sqrt(h) * torch.randn(
            (self._size[0], self._active), generator=self._generator, dtype=self._dtype)
        return out

    def __repr__(self):
        return f"SequentialBrownian({self._size})"

    dtype = property(lambda self: self._dtype)
    device = property(lambda self: torch.device("cpu"))
    shape = property(lambda self: torch.Size(self._size))
    levy_area_approximation = property(lambda self: "none")


def covariance_errors(step, sde, S0, ns):
    """||Cov(u_eps) - Sigma_eps|| after n uniform steps from the exact p_T, by exact moment propagation."""
    errors = []
    for n in ns:
        grid = uniform_grid(n, sde.T, EPS).tolist()
        mean = torch.zeros(1, S0.shape[0], 1, dtype=torch.float64)
        cov = marginal_covariance(sde, S0, sde.T)
        for a, b in zip(grid[:-1], grid[1:]):
            mean, cov = step.gaussian_moments(mean, cov, a, b - a)
        errors.append((cov - marginal_covariance(sde, S0, EPS)).norm().item())
    return errors, [math.log2(errors[i] / errors[i + 1]) for i in range(len(ns) - 1)]


def test_sscs_and_euler_maruyama_converge_with_weak_order_one_and_sscs_has_the_smaller_error():
    # gamma = 1: with the paper's gamma = 0.04 the velocity score's stiffness 2 Gamma beta / (gamma M) = 800 keeps
    # n < ~1000 pre-asymptotic (the order is not yet visible); gamma = 1 reaches the asymptotic regime by n ~ 64.
    cld, S0 = cld_gaussian(gamma=1.0)
    reverse = ReverseSDE(cld, gaussian_score(cld, S0, [1]), score_components=[1])
    ns = (32, 64, 128, 256)
    sscs_errors, sscs_orders = covariance_errors(split_step(reverse), cld, S0, ns)
    em_errors, em_orders = covariance_errors(EulerMaruyama(reverse), cld, S0, ns)
    print("SSCS errors", sscs_errors, "orders", sscs_orders)
    print("EM errors", em_errors, "orders", em_orders)
    assert abs(sscs_orders[-1] - 1.0) < 0.1 and abs(em_orders[-1] - 1.0) < 0.15
    assert all(s < e / 2 for s, e in zip(sscs_errors, em_errors))


def test_our_euler_maruyama_equals_torchsde_euler_on_the_same_noise_on_a_nonuniform_grid():
    cld, S0 = cld_gaussian()
    reverse = cld.reverse(gaussian_score(cld, S0, [1]))
    batch, d, n = 32, 3, 15
    grid = quadratic_grid(n, cld.T, EPS)
    u = cld.prior_sample((batch, d), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = splitdyn.sample(cld, reverse.score, u, grid, step="em", generator=torch.Generator().manual_seed(5))
    bm = SequentialBrownian((batch, 2 * d), torch.Generator().manual_seed(5), torch.float64, active=d)
    ref = splitdyn.sample(cld, reverse.score, u, grid, step=TorchsdeSolver("euler", bm=bm))
    print("max |ours - torchsde|", (ours.state - ref.state).abs().max().item())
    assert torch.allclose(ours.state, ref.state, rtol=1e-12, atol=1e-12)
    assert ours.nfe == ref.nfe == n + 1


@pytest.mark.parametrize("n", [99, 200])
def test_torchsde_reference_takes_exactly_one_step_per_interval_of_a_uniform_grid(n):
    # n = 99 and 200 are step counts where torchsde with dt equal to the step adds a spurious tiny extra step
    cld, S0 = cld_gaussian()
    reverse = cld.reverse(gaussian_score(cld, S0, [1]))
    batch, d = 8, 2
    grid = uniform_grid(n, cld.T, EPS)
    u = cld.prior_sample((batch, d), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = splitdyn.sample(cld, reverse.score, u, grid, step="em", generator=torch.Generator().manual_seed(3),
                           denoise=False)
    bm = SequentialBrownian((batch, 2 * d), torch.Generator().manual_seed(3), torch.float64, active=d)
    ref = splitdyn.sample(cld, reverse.score, u, grid, step=TorchsdeSolver("euler", bm=bm), denoise=False)
    assert ref.nfe == n
    # the same path: torchsde's steps are the grid's enlarged by 1e-11 relative (the last one clipped)
    print("max |ours - torchsde|", (ours.state - ref.state).abs().max().item())
    assert torch.allclose(ours.state, ref.state, rtol=1e-9, atol=1e-9)


def test_torchsde_reference_agrees_statistically_and_is_reproducible_from_a_generator():
    vp = VPSDE()
    S0 = torch.tensor([[DATA_VAR]], dtype=torch.float64)
    reverse = ReverseSDE(vp, gaussian_score(vp, S0))
    n, batch = 50, 20_000
    grid = uniform_grid(n, vp.T, EPS)
    u = exact_prior(vp, S0, (batch, 1), torch.Generator().manual_seed(0))
    def run(step, seed):
        return splitdyn.sample(vp, reverse.score, u, grid, step=step, denoise=False,
                               generator=torch.Generator().manual_seed(seed)).state

    ours, ref, again = run("em", 1), run("torchsde-euler", 2), run("torchsde-euler", 2)
    assert torch.equal(ref, again)
    # same law (the shared discretisation bias cancels): variances within 5 standard errors of their difference
    var_ours, var_ref = ours.var().item(), ref.var().item()
    se = math.sqrt(2 / batch) * math.sqrt(var_ours**2 + var_ref**2)
    assert abs(var_ours - var_ref) < 5 * se
    assert abs(ours.mean().item() - ref.mean().item()) < 5 * math.sqrt((var_ours + var_ref) / batch)


def test_probability_flow_pushes_a_whitened_p_T_sample_onto_the_exact_data_covariance():
    # With the exact (linear) score the flow map is linear, so an input sample whose empirical covariance is
    # exactly Sigma_T comes out with empirical covariance exactly Sigma_eps (up to the solver tolerance).
    cld, S0 = cld_gaussian()
    score, calls = counting(gaussian_score(cld, S0, [1]))
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    u = (z @ torch.linalg.cholesky(marginal_covariance(cld, S0, cld.T)).T).reshape(64, 2, 1)
    out = splitdyn.sample(cld, score, u, None, step=AdaptiveProbabilityFlow(rtol=1e-8, atol=1e-10, eps=EPS),
                          denoise=False)
    emp = torch.cov(out.state.reshape(64, 2).T)
    target = marginal_covariance(cld, S0, EPS)
    print("relative covariance error", ((emp - target).norm() / target.norm()).item(), "NFE", out.nfe)
    assert torch.allclose(emp, target, rtol=1e-5, atol=1e-7)
    assert out.nfe == calls[0] and out.times == [0.0, cld.T - EPS]


def counting(score):
    calls = [0]

    def wrapped(u, t):
        calls[0] += 1
        return score(u, t)

    return wrapped, calls


@pytest.mark.parametrize("name", ["sscs", "em", "torchsde-euler"])
@pytest.mark.parametrize("denoise", [True, False])
def test_grid_samplers_count_one_score_evaluation_per_step_plus_one_for_denoising(name, denoise):
    cld, S0 = cld_gaussian()
    score, calls = counting(gaussian_score(cld, S0, [1]))
    out = sample(cld, score, (8, 2), 7, sampler=name, denoise=denoise, generator=torch.Generator().manual_seed(0),
                 dtype=torch.float64, grid="quadratic")
    assert out.nfe == 7 + int(denoise)
    # torchsde checks the drift's shape once per sdeint call (one call per interval): not a solver step
    assert calls[0] == out.nfe + (7 if name == "torchsde-euler" else 0)
    x, v = out.components()
    assert x.shape == v.shape == (8, 2)


def test_probability_flow_counts_every_solver_evaluation_and_the_denoising_step():
    cld, S0 = cld_gaussian()
    score, calls = counting(gaussian_score(cld, S0, [1]))
    out = sample(cld, score, (8, 2), None, sampler="ode", generator=torch.Generator().manual_seed(0),
                 dtype=torch.float64)
    assert out.nfe == calls[0] > 10


def test_cld_preset_equals_the_generic_entry_point_with_the_splitting_step():
    cld, S0 = cld_gaussian()
    score = gaussian_score(cld, S0, [1])
    b = sample(cld, score, (16, 2), 9, sampler="sscs", grid="quadratic", generator=torch.Generator().manual_seed(3),
               dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    u = cld.prior_sample((16, 2), generator=g, dtype=torch.float64)
    c = splitdyn.sample(cld, score, u, quadratic_grid(9, cld.T, EPS), step=split_step(cld.reverse(score)),
                        generator=g)
    assert torch.equal(b.state, c.state) and b.nfe == c.nfe == 10


def test_cld_denoising_moves_x_by_minus_eps_beta_over_m_times_v():
    # eq. 109: the data update of the denoising step needs no score
    cld, S0 = cld_gaussian()
    u = cld.prior_sample((5, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(cld, gaussian_score(cld, S0, [1]), u, 1, eps=0.5, generator=torch.Generator().manual_seed(0))
    before = sample(cld, gaussian_score(cld, S0, [1]), u, 1, eps=0.5, denoise=False,
                    generator=torch.Generator().manual_seed(0))
    (x, _), (x_before, v_before) = out.components(), before.components()
    assert torch.allclose(x, x_before - 0.5 * 4.0 / cld.mass * v_before, rtol=1e-12, atol=1e-12)


def nan_score(u, t):
    return torch.full_like(u[:, 1:], float("nan"))


@pytest.mark.parametrize("sampler", ["sscs", "em", "torchsde-euler", "ode"])
def test_a_nan_score_raises_a_clear_error(sampler):
    with pytest.raises(DivergenceError, match="non-finite"):
        sample(CLD(), nan_score, (4, 2), None if sampler == "ode" else 3, sampler=sampler)


def test_a_score_that_fails_only_in_the_denoising_step_is_caught():
    cld, S0 = cld_gaussian()
    exact = gaussian_score(cld, S0, [1])

    def score(u, t):
        return exact(u, t) * (float("inf") if float(t) < 1.5 * EPS else 1.0)

    with pytest.raises(ValueError, match="denoised sample"):
        sample(cld, score, (4, 2), 3, dtype=torch.float64)


def test_bad_sampler_arguments_are_refused_with_the_argument_named():
    cld, S0 = cld_gaussian()
    reverse = cld.reverse(gaussian_score(cld, S0, [1]))
    with pytest.raises(ValueError, match="denoise"):
        splitdyn.sample(cld, reverse.score, (4, 1), torch.linspace(0.0, cld.T, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="reverse"):
        split_step(cld, scheme="strang")
    with pytest.raises(ValueError, match="scheme"):
        split_step(reverse, scheme="yoshida")
    with pytest.raises(ValueError, match="initial"):
        sample(cld, nan_score, (4, 0), 3)
    with pytest.raises(ValueError, match="n_steps=None"):
        sample(cld, nan_score, (4, 2), 3, sampler="ode")
    with pytest.raises(ValueError, match="grid=None"):
        splitdyn.sample(cld, nan_score, (4, 2), uniform_grid(3), step="ode")
    with pytest.raises(ValueError, match="step must be one of"):
        splitdyn.sample(cld, nan_score, (4, 2), uniform_grid(3), step="rk9")


def test_vpsde_has_the_paper_schedule_and_its_em_sampler_recovers_gaussian_data():
    vp = VPSDE()
    assert torch.allclose(vp.beta(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.1, 10.05, 20.0], dtype=torch.float64))
    assert torch.allclose(vp.stationary_covariance(), torch.ones(1, 1, dtype=torch.float64))
    S0 = torch.tensor([[DATA_VAR]], dtype=torch.float64)
    batch = 20_000
    u = torch.randn(batch, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = splitdyn.sample(vp, gaussian_score(vp, S0), u, uniform_grid(199), step="em",
                          generator=torch.Generator().manual_seed(0))
    x = out.state[:, 0]
    assert out.nfe == 200 and x.shape == (batch, 1)
    se = DATA_VAR * math.sqrt(2 / batch)
    # the denoised samples target the data variance; EM's O(h) bias at n = 200 is below 1 %
    assert abs(x.var().item() - DATA_VAR) < 5 * se + 0.01 * DATA_VAR


def test_fused_strang_halves_the_flow_noise_draws_and_keeps_the_law_of_sscs():
    # The composition's plan takes the closing A(h/2) of a step and the opening A(h/2) of the next as one exact
    # step: Gaussian transitions compose, so the law is unchanged. Oracle: the exact moments of the unfused
    # composition (pushed through every sub-step without Monte Carlo) on Gaussian data.
    cld, S0 = cld_gaussian(gamma=1.0)
    reverse = ReverseSDE(cld, gaussian_score(cld, S0, [1]), score_components=[1])
    step = split_step(reverse)
    n, batch = 12, 200_000
    grid = quadratic_grid(n, cld.T, EPS)
    draws = []
    original = torch.randn

    def counting_randn(*args, **kwargs):
        draws.append(args[0])
        return original(*args, **kwargs)

    u0 = exact_prior(cld, S0, (batch, 1), torch.Generator().manual_seed(0))
    plan = plan_step(step, grid.tolist(), u0)
    # the fused flow covers the grid once, without gaps or overlaps: n + 1 pieces
    starts, spans = plan.fused_intervals.starts, plan.fused_intervals.spans
    assert len(starts) == n + 1 and starts[0] == grid[0]
    assert torch.allclose(starts[1:], starts[:-1] + spans[:-1], rtol=1e-14, atol=0)
    assert math.isclose(float(starts[-1] + spans[-1]), float(grid[-1]), rel_tol=1e-14)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "randn", counting_randn)
        fused = integrate(step, u0, grid, generator=torch.Generator().manual_seed(1)).state
        assert len(draws) == n + 1
        draws.clear()
        unfused = integrate(step, u0, grid, generator=torch.Generator().manual_seed(1), fuse=False).state
        assert len(draws) == 2 * n

    mean = torch.zeros(1, 2, 1, dtype=torch.float64)
    cov = marginal_covariance(cld, S0, cld.T)
    for i in range(n):
        mean, cov = step.gaussian_moments(mean, cov, grid[i].item(), (grid[i + 1] - grid[i]).item())
    for samples in (fused, unfused):
        sample_cov = torch.cov(samples[:, :, 0].T)
        se = torch.sqrt((cov**2 + torch.outer(torch.diag(cov), torch.diag(cov))) / batch)
        assert bool(((sample_cov - cov).abs() < 5 * se).all()), (sample_cov, cov)
        assert bool((samples[:, :, 0].mean(0).abs() < 5 * torch.sqrt(torch.diag(cov) / batch)).all())
