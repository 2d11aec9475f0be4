"""Exact kernels (Van Loan + series + squaring) against the torchdiffeq moment-ODE reference and each other."""

import math

import pytest
import torch

from splitdyn import ConstantBeta, CustomBeta, LinearBeta, LinearSDE, TimeVaryingLinearSDE, moment_kernels, van_loan_kernel


def random_stable(k, generator):
    A = torch.randn(k, k, generator=generator, dtype=torch.float64)
    S = torch.randn(k, k, generator=generator, dtype=torch.float64)
    F = -(A @ A.T + 0.1 * torch.eye(k, dtype=torch.float64)) + (S - S.T)
    G = torch.randn(k, k, generator=generator, dtype=torch.float64)
    return F, G


def relative_error(a, b):
    return ((a - b).norm(dim=(-2, -1)) / b.norm(dim=(-2, -1))).max().item()


RESCALINGS = {
    "constant": ConstantBeta(2.0),
    "linear": LinearBeta(0.1, 20.0),
    "custom": CustomBeta(lambda t: 1 + torch.sin(3 * t) ** 2, lambda t: 1.5 * t - torch.sin(6 * t) / 12),
}


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("rescaling", sorted(RESCALINGS))
def test_matrix_exponential_kernels_match_moment_odes(k, rescaling, generator):
    F, G = random_stable(k, generator)
    sde = LinearSDE(F, G, RESCALINGS[rescaling])
    t = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=torch.float64)
    s = torch.tensor([0.0, 0.1, 0.3, 0.0], dtype=torch.float64)
    Phi, Q = sde.kernel(t, s)
    Phi_ref, Q_ref = moment_kernels(sde, t, s, rtol=1e-12, atol=1e-14)
    # norm-wise relative error: the reference's absolute tolerance limits entries tiny relative to the norm
    assert relative_error(Phi, Phi_ref) < 1e-8
    assert relative_error(Q, Q_ref) < 1e-8


def test_time_varying_sde_kernels_match_constant_case_and_semigroup():
    F = torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=torch.float64)
    G = torch.tensor([[0.0, 0.0], [0.0, 2**0.5]], dtype=torch.float64)
    constant = LinearSDE(F, G, LinearBeta(0.5, 3.0))
    varying = TimeVaryingLinearSDE(lambda t: (0.5 + 2.5 * t) * F, lambda t: (0.5 + 2.5 * t) ** 0.5 * G, 2)
    Phi_a, Q_a = constant.kernel(0.8, 0.2)
    Phi_b, Q_b = varying.kernel(0.8, 0.2)
    assert relative_error(Phi_a, Phi_b) < 1e-8 and relative_error(Q_a, Q_b) < 1e-8


def test_semigroup_property(generator):
    F, G = random_stable(3, generator)
    sde = LinearSDE(F, G, LinearBeta(0.1, 20.0))
    Phi_ts, Q_ts = sde.kernel(0.9, 0.1)
    Phi_tr, Q_tr = sde.kernel(0.9, 0.4)
    Phi_rs, Q_rs = sde.kernel(0.4, 0.1)
    assert torch.allclose(Phi_tr @ Phi_rs, Phi_ts, rtol=1e-12, atol=1e-14)
    assert torch.allclose(Phi_tr @ Q_rs @ Phi_tr.T + Q_tr, Q_ts, rtol=1e-11, atol=1e-14)


def test_stationary_covariance_is_a_fixed_point(generator):
    F, G = random_stable(3, generator)
    sde = LinearSDE(F, G, 3.0)
    S = sde.stationary_covariance()
    Phi, Q = sde.kernel(0.37)
    assert torch.allclose(Phi @ S @ Phi.T + Q, S, rtol=1e-11, atol=1e-13)


def test_series_and_block_exponential_branches_agree_near_the_switch(generator):
    F, G = random_stable(2, generator)
    norm = torch.linalg.matrix_norm(F, ord=1).item()
    GGt = G @ G.T
    below = torch.tensor([0.4999 / norm], dtype=torch.float64)
    above = torch.tensor([0.5001 / norm], dtype=torch.float64)
    # the same span through both branches: halve `above` once via the semigroup (series on both halves)
    Phi_a, Q_a = van_loan_kernel(F, GGt, above)
    Phi_h, Q_h = van_loan_kernel(F, GGt, above / 2)
    assert relative_error(Phi_h @ Phi_h, Phi_a) < 1e-13
    assert relative_error(Phi_h @ Q_h @ Phi_h.transpose(-1, -2) + Q_h, Q_a) < 1e-13
    assert torch.isfinite(van_loan_kernel(F, GGt, below)[1]).all()


def test_cld_position_noise_has_the_leading_order_near_zero():
    mass, friction = 0.25, 1.0
    F = torch.tensor([[0.0, 1 / mass], [-1.0, -friction / mass]], dtype=torch.float64)
    GGt = torch.diag(torch.tensor([0.0, 2 * friction], dtype=torch.float64))
    for dB in [1e-12, 1e-10, 1e-8]:
        _, Q = van_loan_kernel(F, GGt, torch.tensor(dB, dtype=torch.float64))
        leading = 2 * friction * dB**3 / (3 * mass**2)
        assert math.isclose(Q[0, 0].item(), leading, rel_tol=1e-6)
        assert math.isclose(Q[1, 1].item(), 2 * friction * dB, rel_tol=1e-6)


def test_large_spans_stay_accurate_against_the_ode_reference():
    F = torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=torch.float64)
    G = torch.tensor([[0.0, 0.0], [0.0, 2**0.5]], dtype=torch.float64)
    sde = LinearSDE(F, G, 4.0)
    Phi, Q = sde.kernel(1.0)
    Phi_ref, Q_ref = moment_kernels(sde, 1.0, rtol=1e-13, atol=1e-15)
    assert relative_error(Q, Q_ref) < 1e-9
    assert relative_error(Phi, Phi_ref) < 1e-9
