"""Reverse-time SDEs and probability-flow ODEs of linear SDEs with their exact Gaussian scores.

For Gaussian data :math:`u_0 \\sim \\mathcal N(m_0, S_0 \\otimes I_d)` the marginals of a linear SDE are
:math:`\\mathcal N(\\Phi m_0, (\\Phi S_0 \\Phi^\\top + Q) \\otimes I_d)` and the score is linear in the state,
so the reverse dynamics started from the exact marginal at ``T`` must return the data law (up to the time
discretisation), and every sampler step is an affine Gaussian map whose moments propagate exactly.

Measured weak orders (exact moment propagation, uniform grids n = 32 ... 256, eps = 1e-3; ``pytest -s``
prints them) are asserted in :func:`test_reverse_sde_weak_orders_with_exact_moments`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
import torchsde

from splitdyn import (
    EulerDrift,
    EulerMaruyama,
    ExactLinearFlow,
    LinearBeta,
    LinearSDE,
    ProbabilityFlowODE,
    ReverseSDE,
    apply_matrix,
    gaussian_log_prob,
    integrate,
    log_likelihood,
    strang,
    uniform_grid,
)
from splitdyn_cld import CLD

F64 = torch.float64
EPS = 1e-3


class GaussianData:
    """Gaussian data :math:`\\mathcal N(m_0, S_0)` pushed through a linear SDE: marginals and exact scores."""

    def __init__(self, sde, m0, S0) -> None:
        self.sde = sde
        self.m0 = torch.as_tensor(m0, dtype=F64)
        self.S0 = torch.as_tensor(S0, dtype=F64)
        self._cache: dict = {}

    def marginal(self, t: float):
        key = float(t)
        if key not in self._cache:
            Phi, Q = self.sde.kernel(key)
            self._cache[key] = (Phi @ self.m0, Phi @ self.S0 @ Phi.T + Q)
        return self._cache[key]

    def score(self, components=None):
        """``score(u, t) = -Sigma_t^{-1} (u - mu_t)``, restricted to ``components`` (rows) if given."""

        def score(u: torch.Tensor, t) -> torch.Tensor:
            mean, cov = self.marginal(float(t))
            precision = torch.linalg.inv(cov)
            if components is not None:
                precision = precision[components]
            centred = u - mean.to(u.dtype).reshape(1, -1, *([1] * (u.ndim - 2)))
            return -apply_matrix(precision, centred)

        return score

    def sample(self, t: float, n: int, d: int, generator) -> torch.Tensor:
        mean, cov = self.marginal(t)
        z = torch.randn(n, mean.numel(), d, generator=generator, dtype=F64)
        return mean.reshape(1, -1, 1) + apply_matrix(torch.linalg.cholesky(cov), z)


def cld_case(gamma: float = 1.0, data_var: float = 1.0, data_mean: float = 0.5):
    """CLD with Gaussian data in x and v_0 ~ N(0, gamma M) (the HSM initial law). gamma = 1 and data
    variance 1 make S_0 the stationary covariance diag(1, M): the covariance then never changes and only the
    mean is transported."""
    cld = CLD(gamma=gamma)
    data = GaussianData(cld, [data_mean, 0.0], torch.diag(torch.tensor([data_var, gamma * cld.mass], dtype=F64)))
    return cld, data, cld.reverse(data.score([1]))


def vp_case():
    """A VP-type k = 1 SDE (beta from 0.1 to 20) with data N(0.5, 0.25)."""
    sde = LinearSDE([[-0.5]], [[1.0]], LinearBeta(0.1, 20.0))
    data = GaussianData(sde, [0.5], [[0.25]])
    return sde, data, ReverseSDE(sde, data.score())


def sscs(reverse: ReverseSDE, time_point: float = 0.0):
    """SSCS: exact linear half-steps around an Euler step of the score part (paper Algorithm 1)."""
    linear = ExactLinearFlow(reverse.sde.reverse_linear_part())
    return strang(linear, EulerDrift(reverse.score_part(), time_point=time_point))


def propagated_moments(step, data: GaussianData, n: int, T: float = 1.0):
    """Exact mean and covariance after ``n`` uniform steps from the marginal at T down to forward time EPS."""
    grid = uniform_grid(n, T, EPS).tolist()
    mean, cov = data.marginal(T)
    mean, cov = mean.reshape(1, -1, 1), cov.clone()
    for i in range(n):
        mean, cov = step.gaussian_moments(mean, cov, grid[i], grid[i + 1] - grid[i])
    return mean.reshape(-1), cov


def weak_error(step, data, n) -> float:
    mean, cov = propagated_moments(step, data, n)
    target_mean, target_cov = data.marginal(EPS)
    return (mean - target_mean).norm().item() + (cov - target_cov).norm().item()


def fitted_slope(errors, counts) -> float:
    x = torch.log(torch.tensor([1.0 / n for n in counts], dtype=F64))
    y = torch.log(torch.tensor(errors, dtype=F64))
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


ORDER_CASES = {
    # (problem, scheme): expected order window
    ("cld gamma=1", "euler-maruyama"): (0.8, 1.2),
    ("cld gamma=1", "sscs"): (0.8, 1.2),
    # with S_0 stationary the score part does not depend on the state, so the midpoint Euler step is exact
    # to second order and Strang's symmetry gives order 2
    ("cld gamma=1", "sscs midpoint"): (1.8, 2.2),
    ("cld gamma=0.04", "sscs"): (0.8, 1.2),
    ("vp", "euler-maruyama"): (0.8, 1.2),
    ("vp", "sscs"): (0.8, 1.2),
}


@pytest.mark.parametrize("problem, scheme", sorted(ORDER_CASES))
def test_reverse_sde_weak_orders_with_exact_moments(problem, scheme):
    if problem == "vp":
        _, data, reverse = vp_case()
    else:
        _, data, reverse = cld_case(gamma=float(problem.split("=")[1]))
    step = {
        "euler-maruyama": lambda: EulerMaruyama(reverse),
        "sscs": lambda: sscs(reverse),
        "sscs midpoint": lambda: sscs(reverse, time_point=0.5),
    }[scheme]()
    counts = (32, 64, 128, 256)
    errors = [weak_error(step, data, n) for n in counts]
    slope = fitted_slope(errors, counts)
    print(f"\n{scheme} on {problem}: errors {['%.3e' % e for e in errors]} fitted weak order {slope:.3f}")
    low, high = ORDER_CASES[(problem, scheme)]
    assert low <= slope <= high
    assert errors[-1] < 0.03  # the data Gaussian is recovered as the steps shrink


def assert_moments_within_standard_errors(samples, mean, cov, z: float = 5.0):
    """Sample moments of (N, k) Gaussian samples within ``z`` standard errors (Isserlis for the covariance)."""
    n = samples.shape[0]
    var = torch.diagonal(cov)
    se_mean = (var / n).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    z_mean = ((samples.mean(0) - mean).abs() / se_mean).max().item()
    z_cov = ((torch.cov(samples.T) - cov).abs() / se_cov).max().item()
    assert z_mean < z and z_cov < z, (z_mean, z_cov, samples.mean(0), mean, torch.cov(samples.T), cov)


MC_CASES = [("cld gamma=1", "sscs", 512), ("vp", "sscs", 1024), ("vp", "euler-maruyama", 512)]


@pytest.mark.parametrize("problem, scheme, steps", MC_CASES)
def test_monte_carlo_samplers_recover_the_data_gaussian(problem, scheme, steps):
    _, data, reverse = vp_case() if problem == "vp" else cld_case(gamma=1.0)
    step = sscs(reverse) if scheme == "sscs" else EulerMaruyama(reverse)
    n = 20000
    target_mean, target_cov = data.marginal(EPS)
    var = torch.diagonal(target_cov)
    # the discretisation bias, computed exactly, is well below one standard error at this step count
    mean, cov = propagated_moments(step, data, steps)
    assert ((mean - target_mean).abs() / (var / n).sqrt()).max() < 1.0
    assert ((cov - target_cov).abs() / ((var[:, None] * var[None, :] + target_cov**2) / n).sqrt()).max() < 1.0
    g = torch.Generator().manual_seed(17)
    u = data.sample(1.0, n, 1, g)
    reverse.reset_count()
    solution = integrate(step, u, uniform_grid(steps, 1.0, EPS), generator=g)
    assert solution.nfe == steps == reverse.evaluations
    assert_moments_within_standard_errors(solution.state[:, :, 0], target_mean, target_cov)


class SequenceBrownian(torchsde.BaseBrownian):
    """Brownian increments :math:`\\sqrt{t_b - t_a}\\,\\xi_i` with the standard normals drawn, in order, from a
    seeded generator exactly as :class:`splitdyn.EulerMaruyama` draws its noise: one ``(batch, m, d)``
    tensor per step. torchsde's Euler queries consecutive intervals, one per step."""

    def __init__(self, shape, seed: int, dtype=F64, active=None) -> None:
        self._shape = tuple(shape)
        self._generator = torch.Generator().manual_seed(seed)
        self._dtype = dtype
        # our Euler-Maruyama draws noise only for the components whose column of G acts (CLD: the velocity)
        self._active = list(range(self._shape[1])) if active is None else list(active)
        self.calls = []

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        self.calls.append((float(ta), float(tb)))
        xi = torch.zeros(self._shape, dtype=self._dtype)
        xi[:, self._active] = torch.randn((self._shape[0], len(self._active), *self._shape[2:]),
                                          generator=self._generator, dtype=self._dtype)
        return math.sqrt(float(tb) - float(ta)) * xi.reshape(self._shape[0], -1)

    def __repr__(self):
        return "SequenceBrownian()"

    @property
    def dtype(self):
        return self._dtype

    device = torch.device("cpu")
    levy_area_approximation = "none"

    @property
    def shape(self):
        return (self._shape[0], math.prod(self._shape[1:]))


@pytest.mark.parametrize("problem", ["cld", "vp"])
def test_euler_maruyama_equals_torchsde_euler_on_the_same_brownian_path(problem):
    _, data, reverse = cld_case(gamma=0.04) if problem == "cld" else vp_case()
    k, d, batch = reverse.num_components, 3, 200
    # dyadic grid: tau_i = i / 64 up to 63 / 64, so torchsde's accumulated times hit the grid exactly
    steps, eps = 63, 1.0 / 64
    grid = uniform_grid(steps, 1.0, eps)
    assert torch.allclose(grid, torch.arange(64, dtype=F64) / 64, rtol=0, atol=1e-15)
    u0 = data.sample(1.0, batch, d, torch.Generator().manual_seed(0))
    ours = integrate(EulerMaruyama(reverse), u0, grid, generator=torch.Generator().manual_seed(42)).state
    bm = SequenceBrownian((batch, k, d), seed=42, active=[1] if problem == "cld" else None)
    with torch.no_grad():
        ys = torchsde.sdeint(
            reverse.as_torchsde((d,), "diagonal"), u0.reshape(batch, -1), grid[[0, -1]], bm=bm, method="euler", dt=1.0 / 64
        )
    theirs = ys[-1].reshape(batch, k, d)
    assert len(bm.calls) == steps and all(abs((b - a) - 1 / 64) < 1e-15 for a, b in bm.calls)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12 * ours.abs().max().item())


def test_torchsde_adapter_fields_match_the_reverse_sde():
    _, data, reverse = cld_case(gamma=0.04)
    d = 2
    u = data.sample(0.5, 4, d, torch.Generator().manual_seed(1))
    for noise_type in ("diagonal", "general"):
        adapter = reverse.as_torchsde((d,), noise_type)
        y = u.reshape(4, -1)
        tau = torch.tensor(0.3, dtype=F64)
        assert torch.allclose(adapter.f(tau, y), reverse.drift(u, 0.3).reshape(4, -1), rtol=1e-14, atol=1e-14)
        G = reverse.diffusion_matrix(0.3)
        dense = torch.kron(G, torch.eye(d, dtype=F64))
        g = adapter.g(tau, y)
        if noise_type == "diagonal":
            assert torch.allclose(g[0], torch.diagonal(dense))
        else:
            assert torch.allclose(g[0], dense)


@pytest.mark.parametrize("problem", ["cld velocity score", "cld full score", "vp"])
def test_linear_part_plus_score_part_is_the_reverse_drift(problem):
    if problem == "vp":
        sde, data, reverse = vp_case()
    else:
        sde, data, _ = cld_case(gamma=0.04)
        reverse = sde.reverse(data.score([1])) if "velocity" in problem else ReverseSDE(sde, data.score())
    u = data.sample(0.6, 8, 3, torch.Generator().manual_seed(2))
    for precision in (None, 2.0 * sde.reference_precision()):
        linear = sde.reverse_linear_part(precision)
        score_part = reverse.score_part(precision)
        for tau in (0.0, 0.4, 1.0 - EPS):
            total = linear.drift(u, tau) + score_part(u, tau)
            assert torch.allclose(total, reverse.drift(u, tau), rtol=1e-12, atol=1e-12)
    # reverse drift = -f + GG^T score, written out
    tau = 0.25
    t = 1.0 - tau
    expected = -sde.drift(u, t) + apply_matrix(sde.diffusion_covariance(t), data.score()(u, t))
    assert torch.allclose(reverse.drift(u, tau), expected, rtol=1e-12, atol=1e-12)
    # reverse time runs the forward rate backwards: beta~(tau) = beta(T - tau)
    assert torch.allclose(sde.reverse_linear_part().beta(tau), sde.beta(t))


def test_cld_reverse_linear_part_is_the_paper_half_step_generator():
    # with P = Sigma_inf^{-1} = diag(1, 1/M): -F - GG^T P = [[0, -1/M], [1, -Gam/M]] (paper eq. 76, A part)
    cld = CLD()
    linear = cld.reverse_linear_part()
    M, Gam = cld.mass, cld.friction
    assert torch.allclose(linear.F, torch.tensor([[0.0, -1 / M], [1.0, -Gam / M]], dtype=F64), atol=1e-14)
    assert torch.equal(linear.G, cld.G)


def test_denoising_step_is_one_noise_free_euler_step():
    _, data, reverse = cld_case(gamma=0.04)
    u = data.sample(EPS, 16, 2, torch.Generator().manual_seed(3))
    reverse.reset_count()
    out = reverse.denoise(u, EPS)
    assert reverse.evaluations == 1
    assert torch.allclose(out, u + EPS * reverse.drift(u, 1.0 - EPS), rtol=1e-14, atol=1e-15)


def test_probability_flow_ode_maps_the_prior_to_the_data_gaussian():
    cld, data, _ = cld_case(gamma=0.04)
    ode = ProbabilityFlowODE(cld, data.score([1]), score_components=[1])
    n = 20000
    u_T = data.sample(1.0, n, 1, torch.Generator().manual_seed(4))
    times = torch.tensor([1.0, EPS], dtype=F64)  # decreasing: integrate backwards in forward time
    with torch.no_grad():
        u_eps = torchdiffeq.odeint(ode, u_T, times, rtol=1e-7, atol=1e-9)[-1]
    target_mean, target_cov = data.marginal(EPS)
    assert_moments_within_standard_errors(u_eps[:, :, 0], target_mean, target_cov)
    # the flow field: f - GG^T s / 2
    u = u_T[:8]
    expected = cld.drift(u, 0.5) - 0.5 * apply_matrix(cld.diffusion_covariance(0.5), data.score()(u, 0.5))
    assert torch.allclose(ode(torch.tensor(0.5, dtype=F64), u), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("problem", ["cld", "vp"])
def test_probability_flow_encode_decode_round_trip(problem):
    sde, data, _ = cld_case(gamma=0.04) if problem == "cld" else vp_case()
    components = [1] if problem == "cld" else None
    ode = ProbabilityFlowODE(sde, data.score(components), score_components=components)
    u0 = data.sample(EPS, 64, 3, torch.Generator().manual_seed(5))
    with torch.no_grad():
        encoded = torchdiffeq.odeint(ode, u0, torch.tensor([EPS, 1.0], dtype=F64), rtol=1e-8, atol=1e-10)[-1]
        decoded = torchdiffeq.odeint(ode, encoded, torch.tensor([1.0, EPS], dtype=F64), rtol=1e-8, atol=1e-10)[-1]
    assert (decoded - u0).abs().max().item() < 1e-5
    # the encoding lands on the prior-time marginal: its covariance is far from the data's
    assert not torch.allclose(encoded, u0, atol=1e-2)


# -- moved from the former test_reverse_dynamics.py (its other tests duplicated the ones above) ----------------
def exact_gaussian_score(sde, S0):
    def score(u, t):
        Phi, Q = sde.kernel(float(t))
        return apply_matrix(-torch.linalg.inv(Phi @ S0 @ Phi.T + Q), u)

    return score


def cld_setup():
    cld = CLD(gamma=1.0)
    S0 = torch.diag(torch.tensor([0.5, cld.gamma * cld.mass], dtype=torch.float64))
    return cld, S0


def target_cov(sde, S0, t):
    Phi, Q = sde.kernel(t)
    return Phi @ S0 @ Phi.T + Q


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
