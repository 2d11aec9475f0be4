"""Convergence orders measured without Monte Carlo noise (exact Gaussian moment propagation)."""

import math

import pytest
import torch

from splitdyn import (
    Composition,
    EulerDrift,
    EulerMaruyama,
    ExactLinearFlow,
    LinearSDE,
    palindromic,
    splitting,
    strang,
    trotter,
)

F_A = torch.tensor([[-1.0, 2.0], [0.0, -0.5]], dtype=torch.float64)
F_B = torch.tensor([[-0.3, 0.0], [-1.5, -1.0]], dtype=torch.float64)
G_A = torch.tensor([[0.7, 0.0], [0.0, 0.0]], dtype=torch.float64)
G_B = torch.tensor([[0.0, 0.0], [0.2, 0.9]], dtype=torch.float64)


def full_sde():
    GGt = G_A @ G_A.T + G_B @ G_B.T
    return LinearSDE(F_A + F_B, torch.linalg.cholesky(GGt + 1e-300 * torch.eye(2, dtype=torch.float64)), 1.0)


def propagate(step, n, T=1.0):
    mean = torch.tensor([[[1.0], [-0.5]]], dtype=torch.float64)
    cov = torch.eye(2, dtype=torch.float64) * 0.1
    h = T / n
    for i in range(n):
        mean, cov = step.gaussian_moments(mean, cov, i * h, h)
    return mean, cov


def weak_error(step, n):
    sde = full_sde()
    mean, cov = propagate(step, n)
    Phi, Q = sde.kernel(1.0)
    m0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact_mean, exact_cov = Phi @ m0, Phi @ (0.1 * torch.eye(2, dtype=torch.float64)) @ Phi.T + Q
    return (mean.reshape(-1) - exact_mean).norm().item() + (cov - exact_cov).norm().item()


def fitted_slope(step, ns=(8, 16, 32, 64, 128)):
    errors = [weak_error(step, n) for n in ns]
    x = torch.log(torch.tensor([1.0 / n for n in ns]))
    y = torch.log(torch.tensor(errors))
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return slope.item()


def parts():
    return ExactLinearFlow(LinearSDE(F_A, G_A, 1.0)), ExactLinearFlow(LinearSDE(F_B, G_B, 1.0))


def test_euler_maruyama_has_weak_order_one():
    slope = fitted_slope(EulerMaruyama(full_sde()))
    print(f"EM weak order: {slope:.3f}")
    assert 0.8 < slope < 1.2


def test_strang_of_two_exact_parts_has_weak_order_two():
    A, B = parts()
    slope = fitted_slope(strang(A, B))
    print(f"Strang weak order: {slope:.3f}")
    assert 1.8 < slope < 2.2


def test_lie_trotter_has_weak_order_one():
    A, B = parts()
    slope = fitted_slope(trotter(A, B))
    print(f"Lie-Trotter weak order: {slope:.3f}")
    assert 0.8 < slope < 1.2


def test_yoshida_composition_has_order_four_on_a_deterministic_problem():
    A = ExactLinearFlow(LinearSDE(F_A, torch.zeros(2, 2), 1.0))
    B = ExactLinearFlow(LinearSDE(F_B, torch.zeros(2, 2), 1.0))
    w1 = 1 / (2 - 2 ** (1 / 3))
    w0 = -(2 ** (1 / 3)) * w1
    yoshida = palindromic([A, B], [w1 / 2, w1, (w0 + w1) / 2, w0, (w0 + w1) / 2, w1, w1 / 2])
    # negative sub-steps need the flows backwards in time: exact linear flows with zero noise allow it
    exact = torch.linalg.matrix_exp(F_A + F_B)
    errors = []
    for n in (2, 4, 8, 16):
        h = 1.0 / n
        M = torch.eye(2, dtype=torch.float64)
        for op, c in yoshida.steps:
            M = torch.linalg.matrix_exp(c * h * op.sde.F) @ M
        M_n = torch.linalg.matrix_power(M, n)
        errors.append((M_n - exact).norm().item())
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    print("Yoshida orders:", slopes)
    assert 3.6 < slopes[-1] < 4.4


def test_string_splitting_equals_the_hand_composed_sequence():
    O = ExactLinearFlow(LinearSDE([[-1.0]], [[1.0]], 1.0))
    B = EulerDrift(lambda u, t: -(u**3), nfe=1)
    A = EulerDrift(lambda u, t: 0.5 * u, nfe=0)
    built = splitting("OBABO", {"O": O, "B": B, "A": A})
    hand = Composition([(O, 0.5), (B, 0.5), (A, 1.0), (B, 0.5), (O, 0.5)])
    u = torch.randn(64, 1, 3, generator=torch.Generator().manual_seed(0))
    a = built(u, 0.1, 0.05, torch.Generator().manual_seed(1))
    b = hand(u, 0.1, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert built.nfe == 2


def test_fractions_that_do_not_sum_to_one_are_refused():
    A, B = parts()
    with pytest.raises(ValueError, match="sum to"):
        Composition([(A, 0.5), (B, 1.0)])
    with pytest.raises(ValueError, match="letters"):
        splitting("AC", {"A": A})
