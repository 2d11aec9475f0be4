"""Exact Gaussian-mixture oracles: analytic scores vs autograd of the analytic density, normalisation, exact
samples and forward simulation vs the analytic moments, the score identities, equilibrium at large t,
evaluation strategies, and bad input. (The oracle tests of the former ``tests/test_oracles_and_metrics.py`` live
here, its metric tests in ``tests/test_metrics.py``.)"""

import math

import pytest
import torch

from splitdyn import LinearBeta, LinearSDE
from splitdyn.oracles import DiffusedGaussianMixture, GaussianMixture, diamond_mixture, random_mixture
from splitdyn_cld import CLD

F64 = torch.float64


def vpsde():
    return LinearSDE([[-0.5]], [[1.0]], LinearBeta(0.1, 20.0))


def cld_sde():
    return LinearSDE([[0.0, 4.0], [-1.0, -4.0]], [[0.0, 0.0], [0.0, 2.0**0.5]], 4.0)  # M = 0.25, Gamma = 1


def anisotropic_mixture(d=3, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, d, generator=g, dtype=F64)
    stds = 0.05 + 0.3 * torch.rand(K, d, generator=g, dtype=F64)
    return GaussianMixture(means, stds, 0.2 + torch.rand(K, generator=g, dtype=F64))


def oracle(name):
    cld = CLD()
    return {
        "vp-diamond": lambda: DiffusedGaussianMixture(diamond_mixture(), vpsde()),
        "cld-diamond": lambda: DiffusedGaussianMixture(diamond_mixture(), cld, [[cld.gamma * cld.mass]]),
        "cld-diamond-C0": lambda: DiffusedGaussianMixture(diamond_mixture(), cld),
        "cld-aniso": lambda: DiffusedGaussianMixture(anisotropic_mixture(), cld, [[cld.gamma * cld.mass]]),
        "vp-aniso": lambda: DiffusedGaussianMixture(anisotropic_mixture(), vpsde()),
    }[name]()


def times_for(t, n, seed=1):
    if t == "per-sample":
        return 1e-5 + (1 - 1e-5) * torch.rand(n, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return t


# --------------------------------------------------------------------------------------------------------
# score = grad log p
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp-diamond", "cld-diamond", "cld-diamond-C0", "cld-aniso", "vp-aniso"])
@pytest.mark.parametrize("t", [1e-5, 1e-3, 0.01, 0.3, 0.5, 1.0, "per-sample"])
def test_analytic_score_is_the_autograd_gradient_of_the_analytic_log_density(name, t):
    o = oracle(name)
    t = times_for(t, 40)
    # half exact samples at t (where the density lives), half broad points (tails, between modes)
    near = o.sample(20, t[:20] if isinstance(t, torch.Tensor) else t, torch.Generator().manual_seed(0), dtype=F64)
    far = 0.7 * torch.randn(20, o.k, o.dimension, dtype=F64, generator=torch.Generator().manual_seed(2))
    u = torch.cat([near, far])
    v = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(o.log_prob(v, t).sum(), v)
    score = o.score(u, t)
    assert score.dtype == F64 and score.shape == u.shape
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9 * grad.abs().max().item())
    for components in ([0], [o.k - 1], list(range(o.k))[::-1]):
        block = o.component_score(u, t, components)
        torch.testing.assert_close(block, score[:, components], rtol=1e-12, atol=1e-12)
    lp, s = o.log_prob_and_score(u, t)
    torch.testing.assert_close(lp, o.log_prob(u, t), rtol=0, atol=0)
    torch.testing.assert_close(s, score, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["cld-diamond", "vp-diamond"])
@pytest.mark.parametrize("t", [1e-5, 0.01, 0.5, 1.0, "per-sample"])
def test_the_velocity_block_is_bitwise_the_block_of_the_full_score(name, t):
    o = oracle(name)
    u = 0.6 * torch.randn(32, o.k, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = times_for(t, 32)
    last = [o.k - 1]
    assert torch.equal(o.component_score(u, t, last), o.score(u, t)[:, last])


def test_the_score_is_differentiable_and_its_jacobian_is_the_symmetric_hessian():
    o = oracle("cld-diamond")
    u = o.sample(3, 0.05, torch.Generator().manual_seed(0), dtype=F64)
    for i in range(3):
        ui = u[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda w: o.score(w, 0.05), ui).reshape(4, 4)
        hess = torch.autograd.functional.hessian(lambda w: o.log_prob(w, 0.05).sum(), ui).reshape(4, 4)
        torch.testing.assert_close(jac, hess, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(jac, jac.T, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["cld-diamond", "cld-aniso", "vp-aniso"])
@pytest.mark.parametrize("t", [1e-5, 0.4, "per-sample", "few-times"])
def test_the_evaluation_strategies_agree(name, t):
    o = oracle(name)
    n = 256
    if t == "few-times":
        t = torch.tensor([0.1, 0.6], dtype=F64)[torch.arange(n) % 2]
    else:
        t = times_for(t, n)
    u = o.sample(n, t, torch.Generator().manual_seed(0), dtype=F64)
    rows = list(range(o.k))
    ref = o._evaluate(u, t, score_rows=rows, need_log_prob=True, strategy="residual")
    strategies = ["grouped", "auto"]
    if not isinstance(t, torch.Tensor) or o.mixture.isotropic:
        strategies.append("expanded")
    for strategy in strategies:
        terms, score = o._evaluate(u, t, score_rows=rows, need_log_prob=True, strategy=strategy)
        torch.testing.assert_close(terms, ref[0], rtol=1e-11, atol=1e-9)
        torch.testing.assert_close(score, ref[1], rtol=1e-10, atol=1e-8)


def test_widely_separated_sharp_modes_stay_accurate():
    # modes ~3e5 standard deviations apart: the automatic choice avoids the expansion's cancellation
    mix = GaussianMixture([[3.0, -2.0], [-3.0, 1.0], [0.5, 3.0]], 1e-5)
    o = DiffusedGaussianMixture(mix, vpsde())
    x = mix.sample(500, torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(o.log_prob(x[:, None], 0.0), mix.log_prob(x), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(o.score(x[:, None], 0.0)[:, 0], mix.score(x), rtol=1e-9, atol=1e-6)


# --------------------------------------------------------------------------------------------------------
# densities
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixture", ["diamond", "aniso"])
def test_at_time_zero_the_k1_oracle_is_the_data_distribution(mixture):
    mix = diamond_mixture() if mixture == "diamond" else anisotropic_mixture()
    o = DiffusedGaussianMixture(mix, vpsde())
    x = 0.8 * torch.randn(64, mix.dimension, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(o.log_prob(x[:, None], 0.0), mix.log_prob(x), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(o.score(x[:, None], 0.0)[:, 0], mix.score(x), rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(o.responsibilities(x[:, None], 0.0), mix.responsibilities(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t", [1e-5, 0.3])
def test_the_d1_k2_density_integrates_to_one_and_marginalises_to_the_data_marginal(t):
    cld = CLD()
    mix = GaussianMixture([[-0.6], [0.5]], [0.15, 0.25], [0.3, 0.7])
    o = DiffusedGaussianMixture(mix, cld, [[cld.gamma * cld.mass]])
    sd = o.covariance(t).diagonal().sqrt()
    mean = o.mean(t).reshape(2)
    n = 601
    xs = torch.linspace(mean[0] - 9 * sd[0], mean[0] + 9 * sd[0], n, dtype=F64)
    vs = torch.linspace(mean[1] - 9 * sd[1], mean[1] + 9 * sd[1], n, dtype=F64)
    X, V = torch.meshgrid(xs, vs, indexing="ij")
    u = torch.stack([X.reshape(-1), V.reshape(-1)], 1)[:, :, None]
    density = o.log_prob(u, t).exp().reshape(n, n)
    dx, dv = (xs[1] - xs[0]).item(), (vs[1] - vs[0]).item()
    assert abs(density.sum().item() * dx * dv - 1.0) < 1e-6
    # integrating out v gives the data marginal p_t(x), itself a Gaussian mixture
    marginal = density.sum(1) * dv
    expected = o.data_marginal(t).log_prob(xs[:, None]).exp()
    torch.testing.assert_close(marginal, expected, rtol=1e-6, atol=1e-8)


def test_large_time_cld_approaches_the_equilibrium():
    fast = CLD(beta=40.0)  # B(1) = 40: the kernel has forgotten the data to ~exp(-80)
    o = DiffusedGaussianMixture(diamond_mixture(), fast, [[0.01]])
    u = torch.randn(16, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    equilibrium = -0.5 * (u[:, 0] ** 2 + u[:, 1] ** 2 / 0.25).sum(1) - 2 * math.log(2 * math.pi) - math.log(0.25)
    torch.testing.assert_close(o.log_prob(u, 1.0), equilibrium, rtol=0, atol=1e-8)
    torch.testing.assert_close(o.score(u, 1.0), -u / torch.tensor([1.0, 0.25], dtype=F64)[:, None], rtol=0, atol=1e-8)
    torch.testing.assert_close(o.mean(1.0), torch.zeros(2, 2, dtype=F64), rtol=0, atol=1e-12)
    stationary = torch.kron(torch.diag(torch.tensor([1.0, 0.25], dtype=F64)), torch.eye(2, dtype=F64))
    torch.testing.assert_close(o.covariance(1.0), stationary, rtol=0, atol=1e-10)
    # with the paper's beta = 4 the density gets monotonically closer to the equilibrium
    paper = DiffusedGaussianMixture(diamond_mixture(), CLD(), [[0.01]])
    gaps = [(paper.log_prob(u, t) - equilibrium).abs().max().item() for t in (0.25, 0.5, 1.0)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.05


# --------------------------------------------------------------------------------------------------------
# samples and moments
# --------------------------------------------------------------------------------------------------------
def _check_moments(u, mean, cov, sigmas=5.0):
    """Empirical mean/covariance of flattened samples vs the exact ones, within N^-1/2-scaled bounds."""
    n = u.shape[0]
    flat = u.reshape(n, -1)
    var = cov.diagonal()
    assert ((flat.mean(0) - mean.reshape(-1)).abs() <= sigmas * (var / n).sqrt()).all()
    emp = torch.cov(flat.T)
    se = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()  # Gaussian approximation of the SE
    assert ((emp - cov).abs() <= sigmas * se + 1e-12).all(), (emp - cov).abs().max()


@pytest.mark.parametrize("name,t", [("cld-diamond", 0.05), ("cld-diamond", 0.6), ("cld-aniso", 0.3), ("vp-aniso", 0.2)])
def test_forward_simulation_through_the_exact_kernel_matches_the_oracle(name, t):
    o = oracle(name)
    n = 40_000
    g = torch.Generator().manual_seed(0)
    x0 = o.mixture.sample(n, g, dtype=F64)
    u0 = torch.zeros(n, o.k, o.dimension, dtype=F64)
    u0[:, 0] = x0
    if o.k > 1:
        Lc = torch.linalg.cholesky(o.initial_covariance)
        u0[:, 1:] = torch.einsum("ij,njd->nid", Lc, torch.randn(n, o.k - 1, o.dimension, generator=g, dtype=F64))
    Phi, Q = o.sde.kernel(t)
    ut = torch.einsum("ij,njd->nid", Phi, u0) + torch.einsum(
        "ij,njd->nid", torch.linalg.cholesky(Q), torch.randn(n, o.k, o.dimension, generator=g, dtype=F64)
    )
    _check_moments(ut, o.mean(t), o.covariance(t))
    # Stein identities of the exact score under the forward-simulated law: E[s] = 0, E[s u^T] = -I
    s = o.score(ut, t).reshape(n, -1)
    flat = ut.reshape(n, -1)
    assert (s.mean(0).abs() <= 5 * s.std(0) / math.sqrt(n)).all()
    cross = s.T @ flat / n
    se = (s[:, :, None] * flat[:, None, :]).std(0) / math.sqrt(n)
    eye = torch.eye(flat.shape[1], dtype=F64)
    assert ((cross + eye).abs() <= 5 * se + 1e-12).all()


@pytest.mark.parametrize(
    "name,t", [("cld-diamond", 1e-5), ("cld-diamond", 0.5), ("cld-diamond-C0", 0.0), ("vp-aniso", 0.0)]
)
def test_exact_samples_match_the_analytic_moments(name, t):
    o = oracle(name)
    u = o.sample(40_000, t, torch.Generator().manual_seed(3), dtype=F64)
    assert u.shape == (40_000, o.k, o.dimension)
    _check_moments(u, o.mean(t), o.covariance(t))


def test_exact_samples_satisfy_the_score_identities():
    # under the true law E[score] = 0 and E[score u^T] = -I (integration by parts)
    o = oracle("cld-diamond")
    u = o.sample(20000, 0.2, torch.Generator().manual_seed(0), dtype=F64)
    s = o.score(u, 0.2).reshape(len(u), -1)
    flat = u.reshape(len(u), -1)
    cross = s.T @ flat / len(u)
    assert torch.allclose(s.mean(0), torch.zeros(4, dtype=F64), atol=5 * s.std(0).max().item() / math.sqrt(len(u)))
    assert torch.allclose(cross, -torch.eye(4, dtype=F64), atol=0.1)


def test_per_sample_time_sampling():
    o = oracle("cld-diamond")
    same = o.sample(100, torch.full((100,), 0.3, dtype=F64), torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, o.sample(100, 0.3, torch.Generator().manual_seed(0)), rtol=0, atol=0)
    t = torch.tensor([1e-5, 1.0], dtype=F64).repeat(10_000)
    u = o.sample(20_000, t, torch.Generator().manual_seed(0), dtype=F64)
    # at t = 1e-5 the data component is the data, at t = 1 nearly the N(0, 1) prior
    assert u[0::2, 0].std().item() < 0.6 and abs(u[1::2, 0].std().item() - 1.0) < 0.1
    _check_moments(u[0::2], o.mean(1e-5), o.covariance(1e-5))
    _check_moments(u[1::2], o.mean(1.0), o.covariance(1.0))


def test_mean_and_covariance_accept_time_tensors():
    o = oracle("cld-aniso")
    t = torch.tensor([[0.1, 0.5], [0.7, 1.0]], dtype=F64)
    mean, cov = o.mean(t), o.covariance(t)
    assert mean.shape == (2, 2, 2, 3) and cov.shape == (2, 2, 6, 6)
    torch.testing.assert_close(mean[1, 0], o.mean(0.7))
    torch.testing.assert_close(cov[0, 1], o.covariance(0.5))
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())


# --------------------------------------------------------------------------------------------------------
# mixtures, shapes, dtypes
# --------------------------------------------------------------------------------------------------------
def test_gaussian_mixture_score_log_prob_and_moments():
    mix = anisotropic_mixture(d=3, K=4)
    x = torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    v = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(v).sum(), v)
    torch.testing.assert_close(mix.score(x), grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(mix.responsibilities(x).sum(1), torch.ones(50, dtype=F64))
    samples, labels = mix.sample(40_000, torch.Generator().manual_seed(1), dtype=F64, return_labels=True)
    assert labels.shape == (40_000,) and labels.max() < 4
    _check_moments(samples, mix.mean(), mix.covariance())
    freq = torch.bincount(labels, minlength=4).to(F64) / 40_000
    assert ((freq - mix.weights).abs() < 5 * (mix.weights / 40_000).sqrt()).all()


def test_diamond_is_the_rotated_grid_of_the_paper():
    mix = diamond_mixture()
    assert mix.num_components == 9 and mix.dimension == 2 and mix.isotropic
    assert torch.allclose(mix.stds, torch.full((9, 2), 0.04, dtype=F64))
    assert torch.allclose(mix.weights, torch.full((9,), 1 / 9, dtype=F64))
    g = torch.linspace(-0.5, 0.5, 3, dtype=F64)
    c = math.cos(math.pi / 4)
    grid = torch.cartesian_prod(g, g) @ torch.tensor([[c, -c], [c, c]], dtype=F64).T
    # the same 9 points (in the paper's order, App. E.1)
    assert torch.cdist(mix.means, grid).min(1).values.max() < 1e-12
    assert torch.cdist(grid, mix.means).min(1).values.max() < 1e-12
    a = 2**-0.5
    assert torch.allclose(mix.means[0], torch.tensor([-a, 0.0], dtype=F64))
    assert torch.allclose(mix.means[5], torch.tensor([a / 2, a / 2], dtype=F64))
    distances = torch.cdist(mix.means, mix.means) + 10 * torch.eye(9, dtype=F64)
    assert abs(distances.min().item() - 0.5) < 1e-12


def test_random_mixture_is_reproducible_and_well_separated():
    a = random_mixture(64, 16, torch.Generator().manual_seed(0))
    b = random_mixture(64, 16, torch.Generator().manual_seed(0))
    assert torch.equal(a.means, b.means) and a.means.shape == (16, 64)
    distances = torch.cdist(a.means, a.means) + 1e3 * torch.eye(16, dtype=F64)
    assert distances.min().item() / 0.1 > 8
    w = random_mixture(8, 5, torch.Generator().manual_seed(0), random_weights=True).weights
    assert abs(w.sum().item() - 1) < 1e-12 and w.std() > 0


def test_event_shaped_mixtures_and_states():
    means = torch.randn(3, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    mix = GaussianMixture(means, 0.2)
    assert mix.event_shape == (2, 2) and mix.dimension == 4
    x = mix.sample(10, torch.Generator().manual_seed(0), dtype=F64)
    assert x.shape == (10, 2, 2)
    torch.testing.assert_close(mix.log_prob(x), mix.log_prob(x.reshape(10, 4)))
    assert mix.score(x).shape == (10, 2, 2)
    cld = CLD()
    o = DiffusedGaussianMixture(mix, cld, [[cld.gamma * cld.mass]])
    u = o.sample(10, 0.2, torch.Generator().manual_seed(0), dtype=F64)
    assert u.shape == (10, 2, 2, 2)
    assert o.score(u, 0.2).shape == (10, 2, 2, 2) and o.component_score(u, 0.2, [1]).shape == (10, 1, 2, 2)
    torch.testing.assert_close(o.score(u, 0.2).reshape(10, 2, 4), o.score(u.reshape(10, 2, 4), 0.2))
    assert o.mean(0.2).shape == (2, 2, 2)


def test_float32_states_and_score_fn():
    o = oracle("cld-diamond")
    assert o.sample(3, 0.1).dtype == F64  # float64 by default
    u = o.sample(500, 0.1, torch.Generator().manual_seed(0), dtype=torch.float32)
    assert u.dtype == torch.float32
    s = o.score(u, 0.1)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s.double(), o.score(u.double(), 0.1), rtol=1e-5, atol=1e-4)
    assert o.log_prob(u, 0.1).dtype == F64
    velocity = o.score_fn([1])
    full = o.score_fn()
    t = torch.full((500,), 0.1, dtype=F64)
    torch.testing.assert_close(velocity(u, 0.1), s[:, 1:])
    torch.testing.assert_close(velocity(u, torch.tensor(0.1)), s[:, 1:])
    torch.testing.assert_close(full(u, t), s)


def test_initial_covariance_forms():
    cld = CLD()
    a = DiffusedGaussianMixture(diamond_mixture(), cld, [[0.01]])
    b = DiffusedGaussianMixture(diamond_mixture(), cld, cld.initial_covariance("hsm"))
    c = DiffusedGaussianMixture(diamond_mixture(), cld, torch.tensor([[0.01]], dtype=F64))
    assert torch.equal(a.initial_covariance, b.initial_covariance)
    assert torch.equal(a.initial_covariance, c.initial_covariance)
    assert DiffusedGaussianMixture(diamond_mixture(), cld).initial_covariance.shape == (1, 1)
    assert DiffusedGaussianMixture(diamond_mixture(), vpsde()).initial_covariance.shape == (0, 0)


def test_large_batches_are_vectorised():
    o = oracle("cld-diamond")
    u = o.sample(100_000, 0.2, torch.Generator().manual_seed(0))
    s = o.component_score(u, 0.2, [1])
    assert s.shape == (100_000, 1, 2) and bool(torch.isfinite(s).all())
    big = DiffusedGaussianMixture(random_mixture(64, 16, torch.Generator().manual_seed(0)), CLD(), [[0.01]])
    u = big.sample(5_000, 0.2, torch.Generator().manual_seed(0))
    t = torch.rand(5_000, dtype=F64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    s = big.score(u, t)
    assert s.shape == (5_000, 2, 64) and bool(torch.isfinite(s).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_states():
    o = oracle("cld-diamond")
    u = o.sample(1000, 0.3, torch.Generator().manual_seed(0), dtype=F64)
    cuda = u.cuda()
    torch.testing.assert_close(o.score(cuda, 0.3).cpu(), o.score(u, 0.3))
    t = torch.rand(1000, dtype=F64, device="cuda")
    assert o.log_prob(cuda, t).device.type == "cuda"
    g = torch.Generator(device="cuda").manual_seed(0)
    assert o.sample(10, 0.3, g, device="cuda").device.type == "cuda"


# --------------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------------
def test_bad_oracle_input_is_refused_with_clear_messages():
    o = oracle("cld-diamond")
    u = torch.zeros(3, 2, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0"):
        o.score(u, 1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0"):
        o.log_prob(u, -0.1)
    with pytest.raises(ValueError, match=r"t must be finite"):
        o.score(u, float("nan"))
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(3,\)"):
        o.score(u, torch.rand(4, dtype=F64))
    with pytest.raises(ValueError, match=r"u must have shape \(batch, k, \*event_shape\) = \(batch, 2, 2\)"):
        o.score(torch.zeros(3, 1, 2), 0.5)
    with pytest.raises(ValueError, match=r"u must have shape"):
        o.score(torch.zeros(3, 2, 5), 0.5)
    with pytest.raises(ValueError, match=r"u \(the state fed to the oracle\) contains 1 non-finite.*diverged upstream"):
        o.score(torch.tensor([[[0.0, float("nan")], [0.0, 0.0]]]), 0.5)
    with pytest.raises(TypeError, match=r"u must have a floating dtype"):
        o.score(torch.zeros(3, 2, 2, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match=r"u must be a torch.Tensor"):
        o.score([[0.0, 0.0], [0.0, 0.0]], 0.5)
    with pytest.raises(ValueError, match=r"components must be .* indices in \[0, 2\)"):
        o.component_score(u, 0.5, [2])
    with pytest.raises(ValueError, match=r"n must be an integer >= 1"):
        o.sample(0, 0.5)
    # with a zero initial velocity covariance there is no density at t = 0 (but sampling works)
    degenerate = oracle("cld-diamond-C0")
    with pytest.raises(ValueError, match=r"not positive definite at t = \[0.0\]"):
        degenerate.log_prob(u, 0.0)
    assert degenerate.sample(5, 0.0)[:, 1].abs().max() == 0


def test_bad_constructor_input_is_refused_with_clear_messages():
    cld = CLD()
    with pytest.raises(ValueError, match=r"stds must be positive"):
        GaussianMixture([[0.0, 0.0]], -1.0)
    with pytest.raises(ValueError, match=r"stds must be positive"):
        GaussianMixture([[0.0, 0.0]], 0.0)
    stds_message = r"stds must be a scalar, or have shape \(K,\) = \(2,\) or \(K, d\) = \(2, 2\)"
    with pytest.raises(ValueError, match=stds_message):
        GaussianMixture([[0.0, 0.0], [1.0, 1.0]], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match=r"means must have shape \(K, d\)"):
        GaussianMixture([0.0, 1.0], 0.1)
    with pytest.raises(ValueError, match=r"means must be finite"):
        GaussianMixture([[float("inf"), 0.0]], 0.1)
    with pytest.raises(ValueError, match=r"weights must have shape \(K,\) = \(2,\)"):
        GaussianMixture([[0.0], [1.0]], 0.1, [1.0])
    with pytest.raises(ValueError, match=r"weights must be positive"):
        GaussianMixture([[0.0], [1.0]], 0.1, [1.0, 0.0])
    with pytest.raises(TypeError, match=r"means must be a real number or array"):
        GaussianMixture("abc", 0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(n, \*event_shape\) = \(n, 2\)"):
        diamond_mixture().log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"mixture must be a GaussianMixture"):
        DiffusedGaussianMixture("diamond", cld)
    with pytest.raises(TypeError, match=r"sde must be a linear SDE"):
        DiffusedGaussianMixture(diamond_mixture(), object())
    with pytest.raises(ValueError, match=r"initial_covariance must have shape \(k-1, k-1\) = \(1, 1\)"):
        DiffusedGaussianMixture(diamond_mixture(), cld, [[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"initial_covariance must have shape \(k-1, k-1\) = \(0, 0\)"):
        DiffusedGaussianMixture(diamond_mixture(), vpsde(), [[1.0]])
    with pytest.raises(ValueError, match=r"positive semi-definite"):
        DiffusedGaussianMixture(diamond_mixture(), cld, [[-0.1]])
    with pytest.raises(ValueError, match=r"zero first row and column"):
        DiffusedGaussianMixture(diamond_mixture(), cld, [[1.0, 0.0], [0.0, 0.01]])
    three = LinearSDE(-torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match=r"symmetric"):
        DiffusedGaussianMixture(diamond_mixture(), three, [[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"std must be a finite positive number"):
        diamond_mixture(-0.04)
    with pytest.raises(ValueError, match=r"d must be an integer >= 1"):
        random_mixture(0, 4)
