"""Exact kernels of linear SDEs (:mod:`splitdyn.linear_sde`) against independent oracles.

(This file also holds the former ``tests/test_exact_kernels.py``: its distinct checks are the extra start
time, the linear-rate and CLD-drift time-varying case, the constant-rate fixed point, the entrywise semigroup,
the halving check at the series switch and 0-d spans.)

Oracles: a tight torchdiffeq solve of the moment ODEs (:func:`splitdyn.moments.moment_kernels`), a
Richardson-extrapolated product of frozen-coefficient kernels for genuinely time-varying drifts, the
semigroup and fixed-point identities, hand-derived Taylor coefficients for CLD, and Monte Carlo with
``torchsde.sdeint``.

Errors are measured norm-wise, :math:`\\|A - B\\|_F / \\|B\\|_F`: the reference ODE solve controls each entry
to ``rtol * |entry| + atol``, so entries tiny relative to the matrix (e.g. :math:`\\Phi` after many
relaxation times) carry an absolute error of about ``atol`` that is meaningless relative to themselves but
negligible relative to the norm. Entries that are not tiny (above 1e-3 of the norm) are also checked one by
one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchsde

from splitdyn import (
    ConstantBeta,
    CustomBeta,
    LinearBeta,
    LinearSDE,
    TimeVaryingLinearSDE,
    moment_kernels,
    stationary_covariance,
    van_loan_kernel,
)
from splitdyn.reverse import TorchsdeAdapter

F64 = torch.float64


def random_stable_pair(k: int, seed: int, m: int | None = None):
    """A stable drift :math:`F = -(AA^\\top + 0.1 I) + (S - S^\\top)` and a random ``k x m`` diffusion."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(k, k, generator=g, dtype=F64)
    S = torch.randn(k, k, generator=g, dtype=F64)
    F = -(A @ A.T + 0.1 * torch.eye(k, dtype=F64)) + (S - S.T)
    G = torch.randn(k, k if m is None else m, generator=g, dtype=F64)
    return F, G


def normwise_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest Frobenius-relative error over a batch of matrices."""
    return ((a - b).norm(dim=(-2, -1)) / b.norm(dim=(-2, -1))).max().item()


def large_entry_error(a: torch.Tensor, b: torch.Tensor, fraction: float = 1e-3) -> float:
    """Largest entry-wise relative error over the entries above ``fraction`` of their matrix's norm."""
    mask = b.abs() > fraction * b.norm(dim=(-2, -1), keepdim=True)
    return ((a - b).abs() / b.abs())[mask].max().item()


RESCALINGS = {
    "constant": ConstantBeta(2.0),
    "linear": LinearBeta(0.1, 20.0),
    # beta(t) = 1 + sin(3t)^2 = 3/2 - cos(6t)/2, so B(t) = 3t/2 - sin(6t)/12
    "custom": CustomBeta(lambda t: 1 + torch.sin(3 * t) ** 2, lambda t: 1.5 * t - torch.sin(6 * t) / 12),
}
# three distinct start times (one ODE solve each), s > 0, a short span (Taylor branch), t = s, and B(1) up to 10.05
TIMES_T = torch.tensor([0.05, 0.3, 1.0, 0.7, 0.32, 0.9, 0.3], dtype=F64)
TIMES_S = torch.tensor([0.0, 0.0, 0.0, 0.3, 0.3, 0.9, 0.1], dtype=F64)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("rescaling", sorted(RESCALINGS))
def test_matrix_exponential_kernel_matches_moment_ode_solve(k, rescaling):
    F, G = random_stable_pair(k, seed=10 + k)
    sde = LinearSDE(F, G, RESCALINGS[rescaling])
    Phi, Q = sde.kernel(TIMES_T, TIMES_S)
    # atol far below rtol: Phi(1, 0) decays to ~1e-8 over B = 10, so the reference must be purely relative
    Phi_ref, Q_ref = moment_kernels(sde, TIMES_T, TIMES_S, rtol=1e-11, atol=1e-20)
    nonzero = TIMES_T > TIMES_S
    assert normwise_error(Phi, Phi_ref) < 1e-8
    assert normwise_error(Q[nonzero], Q_ref[nonzero]) < 1e-8
    assert large_entry_error(Phi, Phi_ref) < 1e-8
    assert large_entry_error(Q[nonzero], Q_ref[nonzero]) < 1e-8
    # t = s: identity and zero exactly
    assert torch.equal(Phi[~nonzero], torch.eye(k, dtype=F64).expand_as(Phi[~nonzero]))
    assert torch.equal(Q[~nonzero], torch.zeros_like(Q[~nonzero]))
    # transition_matrix / noise_covariance are the two halves of kernel
    assert torch.allclose(sde.transition_matrix(TIMES_T, TIMES_S), Phi, rtol=1e-12, atol=1e-15)
    assert torch.equal(sde.noise_covariance(TIMES_T, TIMES_S), Q)


def test_kernel_with_rectangular_diffusion_matches_moment_ode_solve():
    F, G = random_stable_pair(3, seed=5, m=5)
    sde = LinearSDE(F, G, LinearBeta(0.5, 4.0))
    Phi, Q = sde.kernel(TIMES_T, TIMES_S)
    Phi_ref, Q_ref = moment_kernels(sde, TIMES_T, TIMES_S, rtol=1e-11, atol=1e-20)
    nonzero = TIMES_T > TIMES_S
    assert normwise_error(Phi, Phi_ref) < 1e-8
    assert normwise_error(Q[nonzero], Q_ref[nonzero]) < 1e-8
    assert sde.noise_dimension == 5


def test_long_spans_use_squaring_and_stay_accurate():
    # |dB| ||F||_1 = 4 * 8 = 32: five doublings of the semigroup
    F = torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=F64)
    G = torch.tensor([[0.0, 0.0], [0.0, 2**0.5]], dtype=F64)
    sde = LinearSDE(F, G, 4.0)
    Phi, Q = sde.kernel(torch.tensor([1.0, 0.5, 1e-3], dtype=F64))
    Phi_ref, Q_ref = moment_kernels(sde, torch.tensor([1.0, 0.5, 1e-3], dtype=F64), rtol=1e-11, atol=1e-20)
    assert normwise_error(Phi, Phi_ref) < 1e-9
    assert normwise_error(Q, Q_ref) < 1e-9
    assert large_entry_error(Q, Q_ref) < 1e-8


def frozen_coefficient_kernel(F_of_t, GGt_of_t, t: float, s: float, n: int):
    """Product of exact kernels with F and GG^T frozen at the midpoints of ``n`` equal sub-intervals.

    This is the exponential midpoint rule for the (affine) moment ODEs; it is symmetric, so its error
    expands in even powers of the step and Richardson extrapolation of n and 2n gives O(h^4).
    """
    h = (t - s) / n
    k = F_of_t(torch.tensor(s, dtype=F64)).shape[-1]
    Phi = torch.eye(k, dtype=F64)
    Q = torch.zeros(k, k, dtype=F64)
    for i in range(n):
        r = torch.tensor(s + (i + 0.5) * h, dtype=F64)
        P, W = van_loan_kernel(F_of_t(r), GGt_of_t(r), torch.tensor(h, dtype=F64))
        Phi = P @ Phi
        Q = P @ Q @ P.T + W
    return Phi, Q


def test_time_varying_sde_with_noncommuting_drift_matches_frozen_coefficient_products():
    F0, G = random_stable_pair(2, seed=3)
    F1 = torch.tensor([[0.0, 1.5], [-0.5, 0.3]], dtype=F64)
    assert not torch.allclose(F0 @ F1, F1 @ F0)  # F(t) at different times do not commute

    def F_of_t(t):
        return F0 + torch.sin(2 * t) * F1

    def G_of_t(t):
        return (1 + 0.5 * t) * G

    sde = TimeVaryingLinearSDE(F_of_t, G_of_t, 2)
    t, s = 0.9, 0.2
    Phi, Q = sde.kernel(t, s)

    def GGt(r):
        Gr = G_of_t(r)
        return Gr @ Gr.T

    Phi_n, Q_n = frozen_coefficient_kernel(F_of_t, GGt, t, s, 200)
    Phi_2n, Q_2n = frozen_coefficient_kernel(F_of_t, GGt, t, s, 400)
    Phi_ref, Q_ref = (4 * Phi_2n - Phi_n) / 3, (4 * Q_2n - Q_n) / 3
    assert normwise_error(Phi, Phi_ref) < 1e-9
    assert normwise_error(Q, Q_ref) < 1e-9
    # the midpoint products alone already converge at second order towards the kernel
    e_n, e_2n = normwise_error(Q_n, Q), normwise_error(Q_2n, Q)
    assert 3.5 < e_n / e_2n < 4.5
    # semigroup across an intermediate time
    Phi_tr, Q_tr = sde.kernel(t, 0.5)
    Phi_rs, Q_rs = sde.kernel(0.5, s)
    assert normwise_error(Phi_tr @ Phi_rs, Phi) < 1e-9
    assert normwise_error(Phi_tr @ Q_rs @ Phi_tr.T + Q_tr, Q) < 1e-9


CLD_DRIFT = torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=F64)
CLD_DIFFUSION = torch.tensor([[0.0, 0.0], [0.0, 2**0.5]], dtype=F64)


@pytest.mark.parametrize("case", ["random-custom-rate", "cld-linear-rate"])
def test_time_varying_sde_coincides_with_the_rescaled_linear_sde(case):
    if case == "random-custom-rate":
        (F, G), beta = random_stable_pair(3, seed=4), RESCALINGS["custom"]
        t = torch.tensor([0.4, 0.8, 1.0], dtype=F64)
        s = torch.tensor([0.1, 0.1, 0.6], dtype=F64)
    else:
        F, G, beta = CLD_DRIFT, CLD_DIFFUSION, LinearBeta(0.5, 3.0)
        t, s = torch.tensor([0.8], dtype=F64), torch.tensor([0.2], dtype=F64)
    reference = LinearSDE(F, G, beta)
    varying = TimeVaryingLinearSDE(lambda t: beta.beta(t) * F, lambda t: beta.beta(t).sqrt() * G, F.shape[0])
    Phi_a, Q_a = reference.kernel(t, s)
    Phi_b, Q_b = varying.kernel(t, s)
    assert normwise_error(Phi_b, Phi_a) < 1e-8
    assert normwise_error(Q_b, Q_a) < 1e-8
    assert torch.allclose(varying.drift_matrix(t), reference.drift_matrix(t), rtol=1e-14, atol=0)
    assert torch.allclose(varying.diffusion_covariance(0.3), reference.diffusion_covariance(0.3), rtol=1e-14, atol=0)


@pytest.mark.parametrize("rescaling", sorted(RESCALINGS))
def test_semigroup_property(rescaling):
    F, G = random_stable_pair(3, seed=7)
    sde = LinearSDE(F, G, RESCALINGS[rescaling])
    for t, r, s in [(0.9, 0.4, 0.1), (1.0, 0.999, 0.0), (0.6, 0.3, 0.3)]:
        Phi_ts, Q_ts = sde.kernel(t, s)
        Phi_tr, Q_tr = sde.kernel(t, r)
        Phi_rs, Q_rs = sde.kernel(r, s)
        assert normwise_error(Phi_tr @ Phi_rs, Phi_ts) < 1e-12
        assert normwise_error(Phi_tr @ Q_rs @ Phi_tr.T + Q_tr, Q_ts) < 1e-12
        # entrywise as well
        assert torch.allclose(Phi_tr @ Phi_rs, Phi_ts, rtol=1e-12, atol=1e-14)
        assert torch.allclose(Phi_tr @ Q_rs @ Phi_tr.T + Q_tr, Q_ts, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("rate", ["linear", "constant"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_stationary_covariance_is_a_fixed_point_of_the_kernel(k, rate):
    F, G = random_stable_pair(k, seed=20 + k)
    sde = LinearSDE(F, G, LinearBeta(0.1, 20.0) if rate == "linear" else 3.0)
    S = sde.stationary_covariance()
    GGt = G @ G.T
    assert (F @ S + S @ F.T + GGt).norm() < 1e-12 * GGt.norm()
    assert torch.linalg.eigvalsh(S).min() > 0
    for t, s in [(0.37, 0.0), (1.0, 0.5), (0.01, 0.0)]:
        Phi, Q = sde.kernel(t, s)
        assert normwise_error(Phi @ S @ Phi.T + Q, S) < 1e-12


def test_cld_stationary_covariance_is_diag_one_mass():
    mass = 0.25
    F = torch.tensor([[0.0, 1 / mass], [-1.0, -1 / mass]], dtype=F64)
    GGt = torch.diag(torch.tensor([0.0, 2.0], dtype=F64))
    assert torch.allclose(stationary_covariance(F, GGt), torch.diag(torch.tensor([1.0, mass], dtype=F64)), atol=1e-14)


def block_exponential_kernel(F, GGt, delta: float):
    """Van Loan's block exponential written out directly (no series, no squaring)."""
    k = F.shape[0]
    block = torch.zeros(2 * k, 2 * k, dtype=F64)
    block[:k, :k], block[:k, k:], block[k:, k:] = F, GGt, -F.T
    E = torch.linalg.matrix_exp(delta * block)
    Phi = E[:k, :k]
    return Phi, E[:k, k:] @ Phi.T


@pytest.mark.parametrize("seed", [0, 1])
def test_series_and_block_exponential_branches_agree_near_the_switch(seed):
    F, G = random_stable_pair(3, seed=seed)
    GGt = G @ G.T
    norm = torch.linalg.matrix_norm(F, ord=1).item()
    below, above = 0.4999 / norm, 0.5001 / norm  # |dB| ||F||_1 on either side of the 0.5 switch
    Phi_b, Q_b = van_loan_kernel(F, GGt, torch.tensor(below, dtype=F64))  # Taylor series
    Phi_a, Q_a = van_loan_kernel(F, GGt, torch.tensor(above, dtype=F64))  # block exponential
    # each branch against the other branch at the same span
    Phi_b_block, Q_b_block = block_exponential_kernel(F, GGt, below)
    assert normwise_error(Q_b, Q_b_block) < 1e-13
    assert large_entry_error(Q_b, Q_b_block) < 1e-12
    assert normwise_error(Q_a, block_exponential_kernel(F, GGt, above)[1]) < 1e-15
    # continuity across the switch through the semigroup: Q(above) = P(d) Q(below) P(d)^T + Q(d)
    Phi_d, Q_d = van_loan_kernel(F, GGt, torch.tensor(above - below, dtype=F64))
    assert normwise_error(Phi_d @ Q_b @ Phi_d.T + Q_d, Q_a) < 1e-13
    assert normwise_error(Phi_d @ Phi_b, Phi_a) < 1e-13
    # the span above the switch as two halves through the series branch
    Phi_h, Q_h = van_loan_kernel(F, GGt, torch.tensor(above / 2, dtype=F64))
    assert normwise_error(Phi_h @ Phi_h, Phi_a) < 1e-13
    assert normwise_error(Phi_h @ Q_h @ Phi_h.T + Q_h, Q_a) < 1e-13


def test_series_reproduces_the_leading_order_cld_position_noise():
    # For F = [[0, 1/M], [-1, -Gam/M]], GG^T = diag(0, 2 Gam), Q = sum_n dB^n L^{n-1}(GG^T) / n! with
    # L(X) = F X + X F^T. Since (GG^T)_{xx} = (F GG^T)_{xx} = 0, the first x-x term is
    # L^2(GG^T)_{xx} / 3! = 2 F_{xv} L(GG^T)_{vx} / 6 = 2 (1/M)(2 Gam / M) / 6, i.e.
    # Q_xx = 2 Gam dB^3 / (3 M^2) - Gam^2 dB^4 / (2 M^3) + O(dB^5);
    # likewise Q_xv = Gam dB^2 / M - Gam^2 dB^3 / M^2 + ... and Q_vv = 2 Gam dB - 2 Gam^2 dB^2 / M + ...
    for mass, friction in [(0.25, 1.0), (1.0, 0.5)]:
        F = torch.tensor([[0.0, 1 / mass], [-1.0, -friction / mass]], dtype=F64)
        GGt = torch.diag(torch.tensor([0.0, 2 * friction], dtype=F64))
        for dB in [1e-12, 1e-10, 1e-8]:
            _, Q = van_loan_kernel(F, GGt, torch.tensor([dB], dtype=F64))
            Q = Q[0]
            xx = 2 * friction * dB**3 / (3 * mass**2) - friction**2 * dB**4 / (2 * mass**3)
            xv = friction * dB**2 / mass - friction**2 * dB**3 / mass**2
            vv = 2 * friction * dB - 2 * friction**2 * dB**2 / mass
            assert math.isclose(Q[0, 0].item(), xx, rel_tol=1e-12)
            assert math.isclose(Q[0, 1].item(), xv, rel_tol=1e-12)
            assert math.isclose(Q[1, 1].item(), vv, rel_tol=1e-12)
            # a 0-d span gives one (k, k) kernel
            Phi0, Q0 = van_loan_kernel(F, GGt, torch.tensor(dB, dtype=F64))
            assert Phi0.shape == Q0.shape == (2, 2) and torch.equal(Q0, Q)


@pytest.mark.parametrize("span", [1e-6, 1e-3, 5e-3, 0.03, 0.2, 1.0, 3.0])
def test_transition_matrix_has_full_float64_accuracy(span):
    # oracle: the exponential in 40-digit arithmetic. torch.linalg.matrix_exp alone loses up to ~4 digits at
    # some small norms (e.g. ~1e-12 error at |dB| ||F|| ~ 0.04 for CLD), which the Taylor branch avoids.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    F = torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=F64)
    G = torch.tensor([[0.0, 0.0], [0.0, 2**0.5]], dtype=F64)
    sde = LinearSDE(F, G, 1.0, T=10.0)
    exact = mpmath.expm(mpmath.matrix(F.tolist()) * mpmath.mpf(span))
    exact = torch.tensor([[float(exact[i, j]) for j in range(2)] for i in range(2)], dtype=F64)
    t = torch.tensor([span, 10.0], dtype=F64)  # batched with a long span needing squaring
    # a few ulps on the Taylor branch (|dB| ||F||_1 < 0.5); squaring m times multiplies rounding by ~2^m
    tolerance = 4e-16 if span * 8.0 < 0.5 else 1e-14
    for Phi in (sde.kernel(span)[0], sde.kernel(t)[0][0], sde.transition_matrix(span), sde.transition_matrix(t)[0]):
        assert (Phi - exact).abs().max().item() < tolerance


def test_mixed_spans_are_each_accurate():
    # one batch holding spans in the series, block and squaring regimes
    F, G = random_stable_pair(2, seed=9)
    sde = LinearSDE(F, G, 1.0, T=50.0)
    t = torch.tensor([1e-9, 0.01, 0.3, 3.0, 40.0], dtype=F64)
    Phi, Q = sde.kernel(t)
    for i in range(t.numel()):
        Phi_i, Q_i = sde.kernel(t[i])
        assert normwise_error(Q[i], Q_i) < 1e-15
        assert normwise_error(Phi[i], Phi_i) < 1e-15
    # Q(t) = S - Phi S Phi^T for the stationary covariance S (Phi(40) is ~1e-2: not yet stationary)
    S = sde.stationary_covariance()
    assert normwise_error(Q[-1], S - Phi[-1] @ S @ Phi[-1].T) < 1e-12


class IncrementBrownian(torchsde.BaseBrownian):
    r"""A Brownian motion for solvers that query consecutive, non-overlapping intervals (torchsde's Euler).

    Each query ``(ta, tb)`` returns a fresh :math:`\sqrt{t_b - t_a}\,\xi` from a seeded generator: exact
    Brownian increments without ``BrownianInterval``'s bridge tree (which dominates the run time here).
    """

    def __init__(self, shape, seed: int) -> None:
        self._shape = tuple(shape)
        self._generator = torch.Generator().manual_seed(seed)
        self._last = None

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        ta, tb = float(ta), float(tb)
        assert tb > ta and (self._last is None or abs(ta - self._last) < 1e-12), "queries must be consecutive"
        self._last = tb
        return math.sqrt(tb - ta) * torch.randn(self._shape, generator=self._generator, dtype=F64)

    def __repr__(self):
        return f"IncrementBrownian({self._shape})"

    dtype = F64
    device = torch.device("cpu")
    levy_area_approximation = "none"

    @property
    def shape(self):
        return self._shape


class _ForwardSDE(torch.nn.Module):
    """The forward linear SDE in torchsde's protocol (general noise, flattened ``k * d`` states)."""

    noise_type = "general"
    sde_type = "ito"

    def __init__(self, sde, d: int) -> None:
        super().__init__()
        self.sde, self.d = sde, d

    def f(self, t, y):
        u = y.reshape(y.shape[0], self.sde.num_components, self.d)
        return self.sde.drift(u, float(t)).reshape(y.shape)

    def g(self, t, y):
        G = self.sde.diffusion_matrix(float(t))
        return torch.kron(G, torch.eye(self.d, dtype=F64)).expand(y.shape[0], -1, -1)


def assert_gaussian_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = 5.0):
    """Sample mean and covariance of ``samples`` (N, k) against the exact moments, within ``z`` standard errors.

    For Gaussian samples, the standard error of the mean is :math:`\\sqrt{\\Sigma_{ii}/N}` and that of the
    sample covariance is :math:`\\sqrt{(\\Sigma_{ii}\\Sigma_{jj} + \\Sigma_{ij}^2)/N}` (Isserlis' theorem).
    """
    n = samples.shape[0]
    sample_mean = samples.mean(0)
    centred = samples - sample_mean
    sample_cov = centred.T @ centred / (n - 1)
    var = torch.diagonal(cov)
    se_mean = (var / n).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    z_mean = ((sample_mean - mean) / se_mean).abs().max().item()
    z_cov = ((sample_cov - cov) / se_cov).abs().max().item()
    assert z_mean < z, f"mean off by {z_mean:.2f} standard errors: {sample_mean} vs {mean}"
    assert z_cov < z, f"covariance off by {z_cov:.2f} standard errors: {sample_cov} vs {cov}"
    return z_mean, z_cov


@pytest.mark.parametrize("noise", ["general", "adapter"])
def test_monte_carlo_paths_from_torchsde_match_the_exact_kernel(noise):
    # k = 2, time-dependent beta, start at s = 0.2 > 0 from a fixed state; Euler with dt = 1/1000 has a weak
    # bias of order 1e-3, far below the Monte Carlo standard error with N = 4000 (~2e-2 relative)
    F, G = random_stable_pair(2, seed=11)
    if noise == "adapter":  # diagonal G through the library's own torchsde adapter
        G = torch.diag(torch.tensor([0.8, 1.3], dtype=F64))
    sde = LinearSDE(F, G, RESCALINGS["custom"])
    n, d = 4000, 1
    u0 = torch.tensor([1.0, -0.5], dtype=F64)
    y0 = u0.expand(n, 2).clone()
    ts = torch.tensor([0.2, 0.6, 1.0], dtype=F64)
    bm = IncrementBrownian((n, 2), seed=123)
    module = _ForwardSDE(sde, d) if noise == "general" else TorchsdeAdapter(sde, (d,), "diagonal")
    with torch.no_grad():
        ys = torchsde.sdeint(module, y0, ts, bm=bm, method="euler", dt=1e-3)
    for i, t in enumerate([0.6, 1.0]):
        Phi, Q = sde.kernel(t, 0.2)
        assert_gaussian_moments(ys[i + 1], Phi @ u0, Q)


@pytest.mark.parametrize("event", [(3, 4), (2,)])  # the multiply-add path, and the small-GEMM path for tiny events
@pytest.mark.parametrize("batch", [7, 512])
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 2), (2, 1), (5, 5)])
def test_apply_matrix_is_the_kronecker_product_with_the_identity(shape, batch, event):
    from splitdyn import apply_matrix

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(shape, generator=gen, dtype=torch.float64)
    A[0, -1] = 0.0  # zero entries are skipped by the multiply-add path
    u = torch.randn(batch, shape[1], *event, generator=gen, dtype=torch.float64, requires_grad=True)
    expected = torch.einsum("ij,bj...->bi...", A, u)
    assert torch.allclose(apply_matrix(A.T.contiguous().T, u), expected, rtol=1e-14, atol=1e-14)  # strided A
    out = apply_matrix(A, u)
    assert out.shape == expected.shape
    if A.numel() <= 16:  # multiply-adds (einsum for larger matrices, batched ones and autograd through A)
        assert out.is_contiguous()
    assert torch.allclose(out, expected, rtol=1e-14, atol=1e-14)
    (grad_u,) = torch.autograd.grad(out.square().sum(), u)  # autograd through the state
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), u)
    assert torch.allclose(grad_u, expected_grad, rtol=1e-13, atol=1e-13)
    A_grad = A.clone().requires_grad_(True)  # autograd through the matrix
    out = apply_matrix(A_grad, u.detach())
    assert torch.allclose(out, expected, rtol=1e-14, atol=1e-14)
    out.sum().backward()
    assert torch.allclose(A_grad.grad, u.detach().flatten(2).sum(dim=2).sum(0).expand(shape[0], -1))
    batched = A.expand(batch, *shape)
    assert torch.allclose(apply_matrix(batched, u), expected, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="components of u"):
        apply_matrix(torch.ones(shape[0], shape[1] + 1, dtype=torch.float64), u)


def test_van_loan_kernel_casts_float32_matrices_and_treats_rounding_negative_spans_as_zero():
    F, G = random_stable_pair(2, seed=1)
    GGt = G @ G.T
    Phi64, Q64 = van_loan_kernel(F.float().double(), GGt.float().double(), torch.tensor([0.3], dtype=F64))
    Phi32, Q32 = van_loan_kernel(F.float(), GGt.float(), torch.tensor([0.3], dtype=F64))
    assert Phi32.dtype == Q32.dtype == F64 and torch.equal(Phi32, Phi64) and torch.equal(Q32, Q64)
    Phi0, Q0 = van_loan_kernel(F, GGt, torch.tensor([-1e-17], dtype=F64))
    assert torch.equal(Phi0[0], torch.eye(2, dtype=F64)) and torch.equal(Q0[0], torch.zeros(2, 2, dtype=F64))


def test_time_varying_coefficients_may_be_nested_lists():
    sde = TimeVaryingLinearSDE(lambda t: [[-float(t) - 1.0]], lambda t: [[1.0, 0.5]], 1)
    assert sde.noise_dimension == 2
    assert torch.equal(sde.drift_matrix(0.5), torch.tensor([[-1.5]], dtype=F64))


def test_custom_rate_may_return_a_scalar_for_every_time():
    beta = CustomBeta(lambda t: 2.0, lambda t: 2.0 * t)
    assert torch.equal(beta.beta(torch.tensor([0.1, 0.9], dtype=F64)), torch.full((2,), 2.0, dtype=F64))
