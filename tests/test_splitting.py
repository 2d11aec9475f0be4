"""Propagators and splitting compositions: convergence orders without Monte Carlo noise, and bookkeeping.

Weak errors are measured by pushing the Gaussian law of the state exactly through each (affine) step with
:meth:`Propagator.gaussian_moments` and comparing with the exact law from the kernel, so the fitted slopes
carry no sampling noise. Slopes are least-squares fits of log(error) against log(h) on h = 1/8 ... 1/128;
run ``pytest -s`` to see them.
"""

from __future__ import annotations

import math

import pytest
import torch

from splitdyn import (
    Composition,
    CustomBeta,
    EulerDrift,
    EulerMaruyama,
    ExactLinearFlow,
    LinearSDE,
    Propagator,
    apply_matrix,
    integrate,
    palindromic,
    splitting,
    strang,
    trotter,
)

F64 = torch.float64

# Two non-commuting stable drifts and two noise matrices: u' = (A + B) u + noise, GG^T = G_A G_A^T + G_B G_B^T
F_A = torch.tensor([[-1.0, 2.0, 0.0], [0.0, -0.5, 0.3], [0.2, 0.0, -0.8]], dtype=F64)
F_B = torch.tensor([[-0.3, 0.0, 0.4], [-1.5, -1.0, 0.0], [0.0, 0.7, -0.2]], dtype=F64)
G_A = torch.tensor([[0.7, 0.0], [0.0, 0.0], [0.1, 0.3]], dtype=F64)
G_B = torch.tensor([[0.0, 0.0], [0.2, 0.9], [0.0, 0.4]], dtype=F64)
MEAN0 = torch.tensor([1.0, -0.5, 0.25], dtype=F64)
COV0 = torch.tensor([[0.1, 0.02, 0.0], [0.02, 0.2, 0.05], [0.0, 0.05, 0.15]], dtype=F64)
STEP_COUNTS = (8, 16, 32, 64, 128)
# beta(t) = 1 + sin(3t)^2, B(t) = 3t/2 - sin(6t)/12
WAVY_BETA = CustomBeta(lambda t: 1 + torch.sin(3 * t) ** 2, lambda t: 1.5 * t - torch.sin(6 * t) / 12)


def test_the_two_parts_do_not_commute():
    assert (F_A @ F_B - F_B @ F_A).norm() > 0.5


def full_sde(beta=1.0) -> LinearSDE:
    return LinearSDE(F_A + F_B, torch.cat([G_A, G_B], dim=1), beta)


def exact_parts(beta=1.0):
    return ExactLinearFlow(LinearSDE(F_A, G_A, beta)), ExactLinearFlow(LinearSDE(F_B, G_B, beta))


def weak_error(step: Propagator, n: int, beta=1.0, T: float = 1.0) -> float:
    """|mean error| + ||covariance error||_F at time T after n exact-moment steps of size T / n."""
    mean, cov = MEAN0.reshape(1, 3, 1), COV0.clone()
    h = T / n
    for i in range(n):
        mean, cov = step.gaussian_moments(mean, cov, i * h, h)
    Phi, Q = full_sde(beta).kernel(T)
    return (mean.reshape(-1) - Phi @ MEAN0).norm().item() + (cov - (Phi @ COV0 @ Phi.T + Q)).norm().item()


def fitted_slope(errors, counts=STEP_COUNTS) -> float:
    x = torch.log(torch.tensor([1.0 / n for n in counts], dtype=F64))
    y = torch.log(torch.tensor(errors, dtype=F64))
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


def report(name: str, errors, slope: float) -> None:
    print(f"\n{name}: errors {['%.3e' % e for e in errors]} fitted order {slope:.3f}")


def test_euler_maruyama_has_weak_order_one():
    step = EulerMaruyama(full_sde())
    errors = [weak_error(step, n) for n in STEP_COUNTS]
    slope = fitted_slope(errors)
    report("Euler-Maruyama weak", errors, slope)
    assert 0.8 <= slope <= 1.2


@pytest.mark.parametrize("beta", ["constant", "time-dependent"])
def test_strang_splitting_of_two_exact_flows_has_weak_order_two(beta):
    # with a time-dependent beta(t) each half-step integrates beta over its own interval; evaluating both
    # halves from the step's left end would drop the order to one
    beta = 1.0 if beta == "constant" else WAVY_BETA
    A, B = exact_parts(beta)
    errors = [weak_error(strang(A, B), n, beta) for n in STEP_COUNTS]
    slope = fitted_slope(errors)
    report(f"Strang weak (beta {beta!r})", errors, slope)
    assert 1.8 <= slope <= 2.2


def test_lie_trotter_splitting_of_two_exact_flows_has_weak_order_one():
    A, B = exact_parts()
    errors = [weak_error(trotter(A, B), n) for n in STEP_COUNTS]
    slope = fitted_slope(errors)
    report("Lie-Trotter weak", errors, slope)
    assert 0.8 <= slope <= 1.2


class MatrixExponentialFlow(Propagator):
    """The exact flow :math:`u \\mapsto e^{hA}u` of :math:`u' = Au`, for any sign of ``h`` (test helper)."""

    nfe = 0

    def __init__(self, A: torch.Tensor) -> None:
        self.A = A

    def __call__(self, u, t, h, generator=None):
        return apply_matrix(torch.linalg.matrix_exp(h * self.A), u)


def one_step_matrix(step: Propagator, h: float) -> torch.Tensor:
    """The matrix of a deterministic linear step, read off by stepping the basis vectors."""
    basis = torch.eye(3, dtype=F64).reshape(3, 3, 1)
    return step(basis, 0.0, h, None)[:, :, 0].T


def deterministic_error(step: Propagator, n: int) -> float:
    M = torch.linalg.matrix_power(one_step_matrix(step, 1.0 / n), n)
    return (M - torch.linalg.matrix_exp(F_A + F_B)).norm().item()


def zero_noise_parts():
    zero = torch.zeros(3, 1, dtype=F64)
    return ExactLinearFlow(LinearSDE(F_A, zero)), ExactLinearFlow(LinearSDE(F_B, zero))


@pytest.mark.parametrize("scheme, low, high", [("lie", 0.8, 1.2), ("strang", 1.8, 2.2)])
def test_deterministic_splitting_orders(scheme, low, high):
    A, B = zero_noise_parts()
    step = trotter(A, B) if scheme == "lie" else strang(A, B)
    errors = [deterministic_error(step, n) for n in STEP_COUNTS]
    slope = fitted_slope(errors)
    report(f"{scheme} deterministic", errors, slope)
    assert low <= slope <= high
    # the zero-noise exact flow is deterministic
    basis = torch.eye(3, dtype=F64).reshape(3, 3, 1)
    assert torch.equal(step(basis, 0.0, 0.1, torch.Generator().manual_seed(0)), step(basis, 0.0, 0.1, None))


def test_yoshida_palindromic_composition_has_order_four():
    w1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
    w0 = 1.0 - 2.0 * w1  # negative: Yoshida's backward sub-step
    coefficients = [w1 / 2, w1, (w0 + w1) / 2, w0, (w0 + w1) / 2, w1, w1 / 2]
    A, B = MatrixExponentialFlow(F_A), MatrixExponentialFlow(F_B)
    step = palindromic([A, B], coefficients)
    assert [f for _, f in step.steps] == coefficients and step.steps[1][0] is B
    counts = (2, 4, 8, 16, 32)
    errors = [deterministic_error(step, n) for n in counts]
    slope = fitted_slope(errors, counts)
    report("Yoshida deterministic", errors, slope)
    assert 3.6 <= slope <= 4.4
    # ... and velocity-Verlet coefficients reproduce Strang exactly
    verlet = palindromic([A, B], [0.5, 1.0, 0.5])
    assert torch.equal(one_step_matrix(verlet, 0.1), one_step_matrix(strang(A, B), 0.1))


def obabo_operators():
    O = ExactLinearFlow(LinearSDE([[-1.0, 0.0], [0.0, -2.0]], [[1.0, 0.0], [0.0, 0.5]]))
    B = EulerDrift(lambda u, t: -(u**3) * (1 + t), nfe=1)
    A = EulerMaruyama(LinearSDE([[0.0, 1.0], [-1.0, 0.0]], [[0.3, 0.0], [0.0, 0.3]]))
    return O, B, A


def test_string_splitting_with_default_fractions_equals_the_hand_composed_sequence():
    O, B, A = obabo_operators()
    built = splitting("O B A B O", {"O": O, "B": B, "A": A})
    hand = Composition([(O, 0.5), (B, 0.5), (A, 1.0), (B, 0.5), (O, 0.5)])
    assert [(op, f) for op, f in built.steps] == [(op, f) for op, f in hand.steps]
    u = torch.randn(256, 2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = built(u, 0.1, 0.05, torch.Generator().manual_seed(1))
    b = hand(u, 0.1, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, hand(u, 0.1, 0.05, torch.Generator().manual_seed(2)))  # the noise matters
    assert built.nfe == hand.nfe == 2
    # the same through the integrator loop
    grid = torch.linspace(0.0, 0.5, 11, dtype=F64)
    sa = integrate(built, u, grid, generator=torch.Generator().manual_seed(3))
    sb = integrate(hand, u, grid, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sa.state, sb.state) and sa.nfe == sb.nfe == 20


def test_explicit_fractions_are_used_and_must_sum_to_one_per_operator():
    O, B, A = obabo_operators()
    built = splitting("OBABO", {"O": O, "B": B, "A": A}, fractions=[0.25, 0.5, 1.0, 0.5, 0.75])
    assert [f for _, f in built.steps] == [0.25, 0.5, 1.0, 0.5, 0.75]
    with pytest.raises(ValueError, match="sum to"):
        splitting("OBABO", {"O": O, "B": B, "A": A}, fractions=[0.5, 0.5, 1.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="sum to"):
        Composition([(O, 0.5), (B, 1.0)])
    with pytest.raises(ValueError, match="sum to"):
        palindromic([O, B], [0.5, 0.9, 0.5])
    with pytest.raises(ValueError, match="one entry per letter"):
        splitting("OBABO", {"O": O, "B": B, "A": A}, fractions=[0.5, 0.5])
    relaxed = Composition([(O, 0.5), (B, 1.0)], check_fractions=False)
    assert relaxed.nfe == 1


class ClockRecorder(Propagator):
    """Records the (start, length) of every sub-step it is asked to take."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, u, t, h, generator=None):
        self.calls.append((t, h))
        return u


def test_each_operator_follows_its_own_clock():
    A, B = ClockRecorder(), ClockRecorder()
    strang(A, B)(torch.zeros(1, 1, 1), 0.2, 0.1)
    assert A.calls == [pytest.approx((0.2, 0.05)), pytest.approx((0.25, 0.05))]
    assert B.calls == [pytest.approx((0.2, 0.1))]
    A.calls.clear(), B.calls.clear()
    splitting("ABABA", {"A": A, "B": B})(torch.zeros(1, 1, 1), 0.0, 0.3)
    assert A.calls == [pytest.approx((0.0, 0.1)), pytest.approx((0.1, 0.1)), pytest.approx((0.2, 0.1))]
    assert B.calls == [pytest.approx((0.0, 0.15)), pytest.approx((0.15, 0.15))]


def test_gaussian_moments_agree_with_monte_carlo_for_a_composition():
    # the exact moment propagation (used for all weak orders above) against sampling the same step
    A, B = exact_parts(WAVY_BETA)
    step = strang(A, EulerMaruyama(LinearSDE(F_B, G_B, WAVY_BETA)))
    n = 40000
    L0 = torch.linalg.cholesky(COV0)
    g = torch.Generator().manual_seed(5)
    u = MEAN0 + torch.randn(n, 3, generator=g, dtype=F64) @ L0.T
    out = step(u.reshape(n, 3, 1), 0.3, 0.4, g)[:, :, 0]
    mean, cov = step.gaussian_moments(MEAN0.reshape(1, 3, 1), COV0.clone(), 0.3, 0.4)
    mean = mean.reshape(-1)
    var = torch.diagonal(cov)
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((out.mean(0) - mean).abs() / (var / n).sqrt()).max() < 5
    assert ((torch.cov(out.T) - cov).abs() / se_cov).max() < 5


def test_moment_propagation_handles_event_dimensions():
    # (1, k, d) states: the covariance is (k d) x (k d) and a linear step acts as Phi kron I_d
    A, B = exact_parts()
    step = strang(A, EulerMaruyama(LinearSDE(F_B, G_B)))
    d = 2
    mean = MEAN0.reshape(1, 3, 1).expand(1, 3, d).contiguous()
    cov = torch.kron(COV0, torch.eye(d, dtype=F64))
    m1, c1 = step.gaussian_moments(MEAN0.reshape(1, 3, 1), COV0.clone(), 0.0, 0.2)
    md, cd = step.gaussian_moments(mean, cov, 0.0, 0.2)
    assert torch.allclose(md, m1.expand(1, 3, d), rtol=1e-13, atol=1e-15)
    assert torch.allclose(cd, torch.kron(c1, torch.eye(d, dtype=F64)), rtol=1e-12, atol=1e-15)
    assert math.isfinite(cd.sum().item())
