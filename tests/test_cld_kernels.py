"""Closed-form CLD kernels (eq. 28-33, 52, 85-90): 60-digit references, generic kernels, conditioning near 0."""

import math

import pytest
import torch

from splitdyn import LinearSDE
from splitdyn.schedules import LinearBeta
from splitdyn_cld import (
    CLD,
    MixedScore,
    dsm_loss,
    ell,
    forward_covariance,
    forward_covariance_determinant,
    forward_mean_coefficients,
    half_step_kernel,
    hsm_loss,
    perturbation_cholesky,
    reverse_linear_kernel,
    velocity_variance,
)
from splitdyn_cld.kernels import SERIES_SWITCH, ReverseLinearPart, _exp_tails, forward_increment_kernel

LOGSPACE = torch.logspace(-8, 0, 49, dtype=torch.float64)
INITIAL = {"dsm": (0.0, 0.0), "hsm": "hsm", "general": (0.3, 0.01)}


def _mpmath():
    mp = pytest.importorskip("mpmath")  # a dependency of torch (via sympy)
    mp.mp.dps = 60
    return mp


def reference_moments(cld, B, initial):
    """60-digit mean map, covariance, determinant (Van Loan block exponential) for Sigma0 = diag(initial)."""
    mp = _mpmath()
    M, G = mp.mpf(cld.mass), mp.mpf(cld.friction)
    F = mp.matrix([[0, 1 / M], [-1, -G / M]])
    blk = mp.zeros(4, 4)
    for i in range(2):
        for j in range(2):
            blk[i, j] = F[i, j]
            blk[2 + i, 2 + j] = -F[j, i]
    blk[1, 3] = 2 * G
    E = mp.expm(mp.mpf(B) * blk)
    Phi = E[:2, :2]
    S0 = mp.matrix([[mp.mpf(initial[0]), 0], [0, mp.mpf(initial[1])]])
    C = Phi * S0 * Phi.T + E[:2, 2:] * Phi.T
    return Phi, C, C[0, 0] * C[1, 1] - C[0, 1] ** 2


def rel(value, reference):
    return float(abs((value - reference) / reference))


# -- the exponential tails: both branches near the switch ------------------------------------------------------
def test_series_and_direct_branches_of_the_exponential_tails_agree_with_60_digits_near_the_switch():
    mp = _mpmath()
    zs = [SERIES_SWITCH * (1 - 1e-3), SERIES_SWITCH * (1 - 1e-12), SERIES_SWITCH, SERIES_SWITCH * (1 + 1e-3)]
    z = torch.tensor(zs, dtype=torch.float64)
    for branch in ("series", "direct", None):
        _, E, G = _exp_tails(z, branch)
        for i, zi in enumerate(zs):
            zm = mp.mpf(zi)
            E_ref = mp.exp(-zm) * (mp.exp(zm) - 1 - zm - zm**2 / 2)
            assert rel(E[i].item(), E_ref) < 2e-15, (branch, zi)
            assert rel(G[i].item(), E_ref - mp.exp(-zm) * zm**3 / 8) < 2e-15, (branch, zi)


def test_direct_tail_formula_loses_digits_at_small_z_where_the_series_keeps_them():
    # the conditioning the series branch is there for: E = O(z^3) from O(1) terms
    mp = _mpmath()
    z = torch.tensor([1e-3, 1e-5], dtype=torch.float64)
    E_series = _exp_tails(z, "series")[1]
    E_direct = _exp_tails(z, "direct")[1]
    for i, zi in enumerate(z.tolist()):
        zm = mp.mpf(zi)
        E_ref = mp.exp(-zm) * (mp.exp(zm) - 1 - zm - zm**2 / 2)
        assert rel(E_series[i].item(), E_ref) < 2e-15
        assert rel(E_direct[i].item(), E_ref) > 1e-10


# -- forward kernel vs 60-digit arithmetic --------------------------------------------------------------------
@pytest.mark.parametrize("mass, beta", [(0.25, 4.0), (1.0, 4.0), (0.25, LinearBeta(0.1, 20.0))])
@pytest.mark.parametrize("kind", ["dsm", "hsm", "general"])
def test_forward_kernel_keeps_full_relative_accuracy_from_1e_8_to_1(mass, beta, kind):
    cld = CLD(mass=mass, beta=beta, eps_num=0.0)
    initial = INITIAL[kind]
    pair = (0.0, cld.gamma * cld.mass) if initial == "hsm" else initial
    t = torch.logspace(-8, 0, 9, dtype=torch.float64)
    A = forward_mean_coefficients(cld, t)
    C = forward_covariance(cld, t, initial)
    det = forward_covariance_determinant(cld, t, initial)
    for i, ti in enumerate(t.tolist()):
        Phi, Cr, detr = reference_moments(cld, cld.rescaling.integral(t[i]).item(), pair)
        for a in range(2):
            for b in range(2):
                assert rel(A[i, a, b].item(), Phi[a, b]) < 1e-14, (ti, a, b)
        assert rel(C[i, 0, 0].item(), Cr[0, 0]) < 1e-14, ti
        assert rel(C[i, 1, 1].item(), Cr[1, 1]) < 1e-14, ti
        # off-diagonal: error relative to sqrt(Sxx Svv) (it changes sign for the general Sigma0)
        assert float(abs(C[i, 0, 1].item() - Cr[0, 1])) < 1e-14 * math.sqrt(C[i, 0, 0].item() * C[i, 1, 1].item())
        assert rel(det[i].item(), detr) < 1e-14, ti


@pytest.mark.parametrize("eps_num", [0.0, 1e-9, 1e-6])
@pytest.mark.parametrize("kind", ["hsm", "dsm"])
def test_ell_keeps_full_relative_accuracy_from_1e_8_to_1(eps_num, kind):
    cld = CLD(eps_num=eps_num)
    t = torch.logspace(-8, 0, 9, dtype=torch.float64)
    values = ell(cld, t, kind)
    pair = (0.0, cld.gamma * cld.mass) if kind == "hsm" else (0.0, 0.0)
    for i, ti in enumerate(t.tolist()):
        _, C, det = reference_moments(cld, 4.0 * ti, pair)
        xx, vv = C[0, 0] + eps_num, C[1, 1] + eps_num
        reference = (xx / (xx * vv - C[0, 1] ** 2)) ** 0.5
        assert rel(values[i].item(), reference) < 1e-14, ti


def test_entrywise_hsm_determinant_cancels_where_the_closed_form_does_not():
    # v0 is revealed by x_t - x0 as t -> 0: Sxx Svv - Sxv^2 cancels to leading order (condition ~ 3 gamma / 4s)
    cld = CLD(eps_num=0.0)
    t = torch.tensor([1e-8, 3e-8, 1e-7], dtype=torch.float64)
    C = forward_covariance(cld, t, "hsm")
    entrywise = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] ** 2
    closed = forward_covariance_determinant(cld, t, "hsm")
    errors_entrywise, errors_closed = [], []
    for i, ti in enumerate(t.tolist()):
        _, _, det = reference_moments(cld, 4.0 * ti, (0.0, cld.gamma * cld.mass))
        errors_entrywise.append(rel(entrywise[i].item(), det))
        errors_closed.append(rel(closed[i].item(), det))
    assert max(errors_closed) < 1e-14
    assert max(errors_entrywise) > 1e-12


# -- closed forms vs the generic (matrix exponential / series) kernels ------------------------------------------
def van_loan(cld):
    """The same SDE as a plain LinearSDE: the generic Van Loan kernel (CLD itself uses the closed forms)."""
    return LinearSDE(cld.F, cld.G, cld.rescaling, cld.T)


@pytest.mark.parametrize("beta", [4.0, LinearBeta(0.1, 20.0)])
def test_the_cld_process_runs_the_closed_forms_and_they_agree_with_van_loan(beta):
    cld = CLD(beta=beta)
    t = torch.tensor([0.3, 0.7, 1.0], dtype=torch.float64)
    s = torch.tensor([0.0, 0.2, 0.95], dtype=torch.float64)
    Phi, Q = cld.kernel(t, s)
    delta = cld.rescaling.increment(t, s)
    A, S = forward_increment_kernel(cld, delta)
    assert torch.equal(Phi, A) and torch.equal(Q, S) and torch.equal(cld.transition_matrix(t, s), A)
    Phi_vl, Q_vl = van_loan(cld).kernel(t, s)
    torch.testing.assert_close(Phi, Phi_vl, rtol=1e-12, atol=1e-15)
    # covariances: diagonals relative to themselves, the off-diagonal relative to sqrt(Q_xx Q_vv) (its natural
    # scale; Van Loan's off-diagonal carries cancellation error of that size), as in the logspace test above
    diag = Q.diagonal(dim1=-2, dim2=-1)
    assert ((diag - Q_vl.diagonal(dim1=-2, dim2=-1)).abs() / diag).max() < 1e-10
    assert ((Q[:, 0, 1] - Q_vl[:, 0, 1]).abs() / (Q[:, 0, 0] * Q[:, 1, 1]).sqrt()).max() < 1e-10
    linear = cld.reverse_linear_part()
    assert isinstance(linear, ReverseLinearPart)
    A, S = linear.kernel(torch.tensor(0.5), torch.tensor(0.2))
    Phi_vl, Q_vl = van_loan(cld).reverse_linear_part().kernel(torch.tensor(0.5), torch.tensor(0.2))
    torch.testing.assert_close(A, Phi_vl, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(S, Q_vl, rtol=1e-10, atol=1e-15)
    # an under-damped CLD has no closed form here: the generic kernel
    with pytest.warns(UserWarning):
        under = CLD(friction=0.5)
    assert torch.equal(under.kernel(t, s)[1], van_loan(under).kernel(t, s)[1])



@pytest.mark.parametrize("mass, beta", [(0.25, 4.0), (1.0, 2.0), (0.25, LinearBeta(0.1, 20.0))])
def test_closed_forms_match_the_generic_kernel_over_logspace(mass, beta):
    # the generic kernel is accurate to ~1e-11 relative here (its matrix_exp is the limiting factor near t=1e-3)
    cld = CLD(mass=mass, beta=beta)
    Phi, Q = van_loan(cld).kernel(LOGSPACE)
    assert torch.allclose(forward_mean_coefficients(cld, LOGSPACE), Phi, rtol=1e-10, atol=0.0)
    for initial in INITIAL.values():
        S0 = cld.initial_covariance(initial) if isinstance(initial, str) else torch.diag(torch.tensor(initial, dtype=torch.float64))
        reference = Phi @ S0 @ Phi.transpose(-1, -2) + Q
        C = forward_covariance(cld, LOGSPACE, initial)
        diag_err = ((C - reference).diagonal(dim1=-2, dim2=-1).abs() / reference.diagonal(dim1=-2, dim2=-1)).max()
        scale = (reference[:, 0, 0] * reference[:, 1, 1]).sqrt()
        off_err = ((C[:, 0, 1] - reference[:, 0, 1]).abs() / scale).max()
        assert diag_err < 1e-10 and off_err < 1e-10, (initial, diag_err, off_err)
        assert torch.equal(C, C.transpose(-1, -2))


@pytest.mark.parametrize("eps_num", [0.0, 1e-9, 1e-6])
@pytest.mark.parametrize("kind", ["hsm", "dsm"])
def test_ell_and_cholesky_match_the_perturbation_kernel_where_its_cholesky_is_well_conditioned(eps_num, kind):
    # t >= 1e-6: there the generic Cholesky is accurate to 1e-12 (below, see the 60-digit tests)
    cld = CLD(eps_num=eps_num)
    t = torch.logspace(-6, 0, 25, dtype=torch.float64)
    kernel = cld.perturbation_kernel(t, torch.zeros(len(t), 3, dtype=torch.float64), kind=kind,
                                     v0=torch.zeros(len(t), 3, dtype=torch.float64) if kind == "dsm" else None)
    torch.testing.assert_close(ell(cld, t, kind), 1 / kernel.cholesky[:, 1, 1], rtol=1e-10, atol=0.0)
    L = perturbation_cholesky(cld, t, kind)
    torch.testing.assert_close(L, kernel.cholesky, rtol=1e-10, atol=1e-300)
    torch.testing.assert_close(velocity_variance(cld, t, kind), kernel.covariance[:, 1, 1] + eps_num, rtol=1e-12, atol=0.0)


def test_half_step_kernel_is_eq_85_to_90_and_matches_the_generic_reverse_linear_part():
    cld = CLD()
    G = cld.friction
    linear = van_loan(cld).reverse_linear_part()
    for tau, h in [(0.0, 1e-7), (0.0, 0.005), (0.3, 0.02), (0.5, 0.5)]:
        Phi, Q = linear.kernel(tau + h, tau)
        A, S = reverse_linear_kernel(cld, tau + h, tau)
        # reverse times are represented through T - tau: the step is h up to the rounding of 1 - (tau + h)
        A2, S2 = half_step_kernel(cld, cld.beta(0.5).item() * ((1.0 - tau) - (1.0 - (tau + h))))
        torch.testing.assert_close(A, A2, rtol=1e-14, atol=0.0)
        torch.testing.assert_close(S, S2, rtol=1e-14, atol=0.0)
        torch.testing.assert_close(A, Phi, rtol=1e-10, atol=0.0)
        assert ((S - Q).diagonal().abs() / Q.diagonal()).max() < 1e-10
        assert (S[0, 1] - Q[0, 1]).abs() < 1e-10 * (Q[0, 0] * Q[1, 1]).sqrt()
    # the paper's eq. 85-90 written out literally (well conditioned at this step)
    b = 0.3
    e2, e4 = math.exp(-2 * b / G), math.exp(-4 * b / G)
    A, S = half_step_kernel(cld, b)
    eq85 = torch.tensor([[2 * b / G + 1, -4 * b / G**2], [b, -2 * b / G + 1]], dtype=torch.float64) * e2
    sxx = math.exp(4 * b / G) - 1 - 4 * b / G - 8 * b**2 / G**2
    sxv = -4 * b**2 / G
    svv = G**2 / 4 * (math.exp(4 * b / G) - 1) + b * G - 2 * b**2
    eq87 = torch.tensor([[sxx, sxv], [sxv, svv]], dtype=torch.float64) * e4
    torch.testing.assert_close(A, eq85, rtol=1e-13, atol=0.0)
    torch.testing.assert_close(S, eq87, rtol=1e-12, atol=0.0)


def test_reverse_kernel_with_a_time_dependent_rate_integrates_each_half_step_over_its_own_interval():
    cld = CLD(beta=LinearBeta(0.1, 20.0))
    linear = van_loan(cld).reverse_linear_part()
    for tau, h in [(0.0, 0.05), (0.4, 0.1), (0.9, 0.1)]:
        Phi, Q = linear.kernel(tau + h, tau)
        A, S = reverse_linear_kernel(cld, tau + h, tau)
        torch.testing.assert_close(A, Phi, rtol=1e-10, atol=0.0)
        torch.testing.assert_close(S, Q, rtol=1e-10, atol=1e-15)
        # and it is the constant-rate kernel of the integrated rate over [T - tau - h, T - tau]
        B = cld.rescaling.integral(torch.tensor([1.0 - tau, 1.0 - (tau + h)], dtype=torch.float64))
        torch.testing.assert_close(A, half_step_kernel(cld, (B[0] - B[1]).item())[0], rtol=1e-12, atol=0.0)


# -- limits, float32, large rates --------------------------------------------------------------------------------
def test_ell_limits_at_zero_and_at_equilibrium():
    cld = CLD(eps_num=1e-6)
    M, gamma, eps = cld.mass, cld.gamma, cld.eps_num
    assert math.isclose(ell(cld, 0.0, "hsm").item(), (gamma * M + eps) ** -0.5, rel_tol=1e-12)
    assert math.isclose(ell(cld, 0.0, "dsm").item(), eps**-0.5, rel_tol=1e-12)
    assert math.isclose(velocity_variance(cld, 0.0).item(), gamma * M + eps, rel_tol=1e-14)
    assert math.isclose(ell(CLD(beta=50.0), 1.0, "hsm").item(), 1 / math.sqrt(M + 1e-6), rel_tol=1e-9)
    # without eps_num both ell's diverge like (M s)^(-1/2), s = 2B/Gamma (HSM with a sqrt(3)/2 prefactor)
    exact = CLD(eps_num=0.0)
    t = 1e-8
    s = 2 * exact.beta(t).item() * t / exact.friction
    assert math.isclose(ell(exact, t, "dsm").item() * math.sqrt(M * s), 1.0, rel_tol=1e-6)
    assert math.isclose(ell(exact, t, "hsm").item() * math.sqrt(M * s), math.sqrt(3) / 2, rel_tol=1e-4)
    with pytest.raises(ValueError, match="eps_num"):
        ell(exact, 0.0)


def test_no_overflow_or_nan_for_large_integrated_rates():
    cld = CLD(beta=1000.0)  # B(1) = 1000: e^{4B/Gamma} would overflow
    C = forward_covariance(cld, torch.tensor([0.5, 1.0], dtype=torch.float64), "hsm")
    torch.testing.assert_close(C, torch.diag(torch.tensor([1.0, cld.mass], dtype=torch.float64)).expand(2, 2, 2), rtol=1e-14, atol=1e-300)
    assert torch.isfinite(ell(cld, 1.0)).all() and torch.isfinite(half_step_kernel(cld, 1e4)[1]).all()


@pytest.mark.parametrize("eps_num", [0.0, 1e-9, 1e-6])
def test_float32_path_is_finite_from_1e_8_to_1(eps_num):
    cld = CLD(eps_num=eps_num)
    for kind in ("hsm", "dsm"):
        values = ell(cld, LOGSPACE, kind).float()
        assert torch.isfinite(values).all() and (values > 0).all()
        assert torch.isfinite(forward_covariance(cld, LOGSPACE, kind).float()).all()
        assert torch.isfinite(perturbation_cholesky(cld, LOGSPACE, kind).float()).all()
    model = MixedScore(lambda u, t: u[:, :1] * t.reshape(-1, 1, 1), cld)
    u = torch.randn(len(LOGSPACE), 2, 3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model(u, LOGSPACE)).all() and torch.isfinite(model.alpha(u, LOGSPACE)).all()
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    for loss in (hsm_loss, dsm_loss):
        value = loss(model, x0, cld, t_min=1e-8, generator=torch.Generator().manual_seed(2))
        assert value.dtype == torch.float32 and torch.isfinite(value)


# -- bad input ----------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_argument_named():
    cld = CLD()
    with pytest.warns(UserWarning):
        under = CLD(mass=0.25, friction=2.0)
    with pytest.raises(ValueError, match="critical damping"):
        forward_covariance(under, 0.5)
    with pytest.raises(ValueError, match="critical damping"):
        half_step_kernel(under, 0.1)
    # ell and the variance fall back to the generic kernel for other frictions
    kernel = under.perturbation_kernel(torch.tensor([0.1, 0.7]), torch.zeros(2, 1, dtype=torch.float64))
    torch.testing.assert_close(ell(under, torch.tensor([0.1, 0.7])), 1 / kernel.cholesky[:, 1, 1], rtol=1e-12, atol=0.0)
    with pytest.raises(ValueError, match="diagonal"):
        forward_covariance(cld, 0.5, torch.tensor([[1.0, 0.1], [0.1, 1.0]]))
    with pytest.raises(ValueError, match="Sigma0_vv"):
        forward_covariance(cld, 0.5, (0.0, -1.0))
    with pytest.raises(ValueError, match="kind"):
        ell(cld, 0.5, "ism")
    with pytest.raises(ValueError, match="delta_B"):
        half_step_kernel(cld, -0.1)
    with pytest.raises(ValueError, match="tau >= s"):
        reverse_linear_kernel(cld, 0.1, 0.2)
    with pytest.raises(ValueError, match="t must lie in"):
        forward_mean_coefficients(cld, 1.5)
    with pytest.raises(TypeError, match="cld must be a CLD"):
        forward_covariance("cld", 0.5)
