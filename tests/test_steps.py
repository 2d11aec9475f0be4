"""Steps, compositions and plans: declared orders against exact moments, plans, fusion, FSAL, bookkeeping.

Weak errors are measured by pushing the Gaussian law of the state exactly through each (affine) step with
:meth:`Step.gaussian_moments` and comparing with the exact law from the kernel, so fitted slopes carry no
sampling noise. Slopes are least-squares fits of log(error) against log(h); run ``pytest -s`` to see them.
"""

from __future__ import annotations

import math
import pickle
import resource
from functools import partial

import pytest
import torch

import splitdyn
from splitdyn import (
    Composition,
    CustomBeta,
    EulerDrift,
    EulerMaruyama,
    ExactLinearFlow,
    ExponentialODE,
    ExponentialSDE,
    Intervals,
    LinearSDE,
    NoiseExponentialODE,
    Plan,
    PowerGrid,
    ProbabilityFlowHeun,
    ProbabilityFlowRK4,
    ReverseSDE,
    Step,
    apply_matrix,
    integrate,
    palindromic,
    split_step,
    splitting,
    strang,
    trotter,
    uniform_grid,
)
from splitdyn.integrate import plan_step
from splitdyn.steps.noise import GaussianNoise
from splitdyn.steps import REGISTRY
from splitdyn_cld import CLD
from _mcmc_order_cases import MCMC_ORDER_TABLE
from order_cases_pc import PC_ORDER_CASES
from order_cases_fewstep import FEWSTEP_ORDER_CASES

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


def full_sde(beta=1.0) -> LinearSDE:
    return LinearSDE(F_A + F_B, torch.cat([G_A, G_B], dim=1), beta)


def exact_parts(beta=1.0):
    return ExactLinearFlow(LinearSDE(F_A, G_A, beta)), ExactLinearFlow(LinearSDE(F_B, G_B, beta))


def linear_drift(u, t):
    return apply_matrix(F_A + F_B, u)


def weak_error(step: Step, n: int, beta=1.0, T: float = 1.0, noise: bool = True) -> float:
    """|mean error| + ||covariance error||_F at time T after n exact-moment steps of size T / n."""
    mean, cov = MEAN0.reshape(1, 3, 1), COV0.clone()
    h = T / n
    for i in range(n):
        mean, cov = step.gaussian_moments(mean, cov, i * h, h)
    sde = full_sde(beta) if noise else LinearSDE(F_A + F_B, torch.zeros(3, 1, dtype=F64), beta)
    Phi, Q = sde.kernel(T)
    return (mean.reshape(-1) - Phi @ MEAN0).norm().item() + (cov - (Phi @ COV0 @ Phi.T + Q)).norm().item()


def fitted_slope(errors, counts=STEP_COUNTS) -> float:
    x = torch.log(torch.tensor([1.0 / n for n in counts], dtype=F64))
    y = torch.log(torch.tensor(errors, dtype=F64))
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


# -- the order table -----------------------------------------------------------------------------------------
def gaussian_cld_reverse(gamma: float = 1.0):
    """CLD with N(0, S0) data: the exact velocity score is linear, so every sampler step is affine-Gaussian."""
    cld = CLD(gamma=gamma)
    S0 = torch.diag(torch.tensor([0.5, cld.gamma * cld.mass], dtype=F64))
    return cld, S0, ReverseSDE(cld, LinearGaussianScore(cld, S0, [1]), score_components=[1])


class LinearGaussianScore:
    """Exact score -Sigma_t^{-1} u (rows ``components``) of Gaussian data diffused by a linear SDE (picklable)."""

    def __init__(self, sde, S0, components=None):
        self.sde, self.S0, self.components = sde, S0, components

    def __call__(self, u, t):
        Phi, Q = self.sde.kernel(float(t))
        P = -torch.linalg.inv(Phi @ self.S0 @ Phi.T + Q)
        return apply_matrix(P if self.components is None else P[self.components], u)


def reverse_weak_error(step: Step, n: int, rho: float | None = None, velocity_variance: float | None = None) -> float:
    """Covariance error at the cutoff after n uniform (power-rho) reverse steps from the exact p_T (CLD, Gaussian
    data with velocity variance ``velocity_variance``, default the HSM gamma M)."""
    cld = CLD(gamma=1.0)
    vv = cld.gamma * cld.mass if velocity_variance is None else velocity_variance
    S0 = torch.diag(torch.tensor([0.5, vv], dtype=F64))
    grid = (uniform_grid(n, cld.T, 1e-3) if rho is None else PowerGrid(n, rho).reverse_times(cld.T)).tolist()
    Phi, Q = cld.kernel(cld.T)
    mean, cov = torch.zeros(1, 2, 1, dtype=F64), Phi @ S0 @ Phi.T + Q
    plan = plan_step(step, grid, mean, fuse=False)
    for i in range(n):
        mean, cov = plan.gaussian_moments(mean, cov, i)
    Phi, Q = cld.kernel(1e-3)
    return (cov - (Phi @ S0 @ Phi.T + Q)).norm().item() + mean.norm().item()


# CLD with gamma = 1 reaches the asymptotic regime from n ~ 64 (local orders 1.15, 1.07 for EM at 64, 128)
REVERSE_COUNTS = (64, 128, 256, 512)


def reverse_power(step_factory, counts):
    """On the power-3 grid (the uniform grid's last steps are stiff: exponential integrators pre-asymptotic)."""
    return lambda: (step_factory(gaussian_cld_reverse()[2]), lambda s, n: reverse_weak_error(s, n, 3.0), counts)


def forward(step_factory, noise=True, counts=STEP_COUNTS):
    return lambda: (step_factory(), lambda s, n: weak_error(s, n, noise=noise), counts)


def reverse(step_factory):
    return lambda: (step_factory(gaussian_cld_reverse()[2]), reverse_weak_error, REVERSE_COUNTS)


#: name -> [(label, case)]; each case builds (step, error(step, n), step counts). Every class in the registry
#: must appear here: a new step is registered with its declared order and measured against it.
ORDER_TABLE = {
    "EulerMaruyama": [
        ("forward linear SDE", forward(lambda: EulerMaruyama(full_sde()))),
        ("CLD reverse SDE", reverse(EulerMaruyama)),
    ],
    "ExactLinearFlow": [("forward linear SDE", forward(lambda: ExactLinearFlow(full_sde())))],
    "EulerDrift": [("linear ODE", forward(lambda: EulerDrift(linear_drift, nfe=0), noise=False))],
    "Composition": [
        ("Strang of exact flows", forward(lambda: strang(*exact_parts()))),
        ("Strang of exact flows, time-dependent beta",
         lambda: (strang(*exact_parts(WAVY_BETA)), lambda s, n: weak_error(s, n, WAVY_BETA), STEP_COUNTS)),
        ("Lie-Trotter of exact flows", forward(lambda: trotter(*exact_parts()))),
        ("Strang of an exact flow and Euler-Maruyama",
         forward(lambda: strang(exact_parts()[0], EulerMaruyama(LinearSDE(F_B, G_B))))),
        ("SSCS on the CLD reverse SDE", reverse(split_step)),
        ("SSCS with the midpoint score (S0 stationary: order 2)",
         lambda: (split_step(stationary_velocity_reverse(), time_point=0.5),
                  lambda step, n: reverse_weak_error(step, n, velocity_variance=0.25), REVERSE_COUNTS)),
    ],
    "ExponentialODE": [(f"order {q}, CLD", reverse_power(partial(ExponentialODE, order=q), counts))
                       for q, counts in ((1, (128, 256, 512)), (2, (64, 128, 256)), (3, (32, 64, 128)))],
    "ExponentialSDE": [(f"order {q}, CLD", reverse_power(partial(ExponentialSDE, order=q), (128, 256, 512)))
                       for q in (1, 2, 3)],
    "NoiseExponentialODE": [(f"gDDIM order {q}, CLD", reverse_power(partial(NoiseExponentialODE, order=q),
                                                                    (64, 128, 256))) for q in (2, 3)],
    # uniform grid: on the power-3 grid Heun and RK4 measure 3.2 and 5.0 (leading error terms nearly cancel)
    **{cls.__name__: [("CLD probability flow", lambda cls=cls: (cls(gaussian_cld_reverse()[2]), reverse_weak_error,
                                                                (256, 512, 1024)))]
       for cls in (ProbabilityFlowHeun, ProbabilityFlowRK4)},
}


ORDER_TABLE.update(MCMC_ORDER_TABLE)  # the splitdyn.mcmc steps (tests/_mcmc_order_cases.py)
for _name, _cases in PC_ORDER_CASES.items():  # predictor-corrector steps (tests/order_cases_pc.py)
    ORDER_TABLE.setdefault(_name, []).extend(_cases)
for _name, _cases in FEWSTEP_ORDER_CASES.items():  # UniPC, DPM-Solver++ midpoint (tests/order_cases_fewstep.py)
    ORDER_TABLE.setdefault(_name, []).extend(_cases)


def stationary_velocity_reverse():
    cld, S0, _ = gaussian_cld_reverse()
    S0 = torch.diag(torch.tensor([0.5, cld.mass], dtype=F64))
    return ReverseSDE(cld, LinearGaussianScore(cld, S0, [1]), score_components=[1])


def test_every_registered_step_declares_an_order_and_is_in_the_order_table():
    assert {"EulerMaruyama", "ExactLinearFlow", "EulerDrift", "Composition"} <= set(REGISTRY)
    missing = sorted(set(REGISTRY) - set(ORDER_TABLE))
    assert not missing, f"steps registered without an order-table entry: {missing}"
    for name, cls in REGISTRY.items():
        assert "weak_order" in dir(cls), f"{name} declares no weak_order"


CASES = [(name, label, case) for name, cases in ORDER_TABLE.items() for label, case in cases]


@pytest.mark.parametrize("name, label, case", CASES, ids=[f"{n}: {label}" for n, label, _ in CASES])
def test_measured_weak_order_matches_the_declared_order(name, label, case):
    step, error, counts = case()
    assert type(step).__name__ == name
    errors = [error(step, n) for n in counts]
    declared = step.weak_order
    print(f"\n{label}: errors {['%.3e' % e for e in errors]} declared order {declared}")
    if math.isinf(declared):
        assert max(errors) < 1e-12
    else:
        slope = fitted_slope(errors, counts)
        print(f"fitted order {slope:.3f}")
        assert abs(slope - declared) <= 0.15


def test_declared_orders_of_compositions_follow_their_parts_and_symmetry():
    A, B = exact_parts()
    em = EulerMaruyama(LinearSDE(F_B, G_B))
    assert strang(A, B).weak_order == 2 and trotter(A, B).weak_order == 1
    assert strang(A, em).weak_order == 1  # capped by the Euler-Maruyama part
    assert splitting("ABABA", {"A": A, "B": B}).weak_order == 2
    kick = EulerDrift(lambda u, t: u[:, :1].expand(-1, 3, -1), nfe=1, reads=[0], writes=[1], time_dependent=False)
    assert math.isinf(kick.weak_order) and EulerDrift(linear_drift).weak_order == 1


# -- deterministic orders and compositions ---------------------------------------------------------------------
class MatrixExponentialFlow(Step):
    """The exact flow u -> e^{hA} u of u' = Au, for any sign of h (a user-defined step: not registered)."""

    nfe = 0
    weak_order = math.inf

    def __init__(self, A: torch.Tensor) -> None:
        self.A = A

    def plan(self, intervals, like):
        return MatrixExponentialPlan(torch.linalg.matrix_exp(intervals.spans[:, None, None] * self.A))


class MatrixExponentialPlan(Plan):
    def __init__(self, matrices):
        self.matrices, self.n = matrices, len(matrices)

    def __call__(self, u, i, generator=None):
        return apply_matrix(self.matrices[i], u)


def one_step_matrix(step: Step, h: float) -> torch.Tensor:
    """The matrix of a deterministic linear step, read off by stepping the basis vectors."""
    basis = torch.eye(3, dtype=F64).reshape(3, 3, 1)
    return step(basis, 0.0, h, None)[:, :, 0].T


def deterministic_error(step: Step, n: int) -> float:
    M = torch.linalg.matrix_power(one_step_matrix(step, 1.0 / n), n)
    return (M - torch.linalg.matrix_exp(F_A + F_B)).norm().item()


def test_user_steps_are_not_registered_and_the_parts_do_not_commute():
    assert "MatrixExponentialFlow" not in REGISTRY
    assert (F_A @ F_B - F_B @ F_A).norm() > 0.5


@pytest.mark.parametrize("scheme, low, high", [("lie", 0.8, 1.2), ("strang", 1.8, 2.2)])
def test_deterministic_splitting_orders(scheme, low, high):
    zero = torch.zeros(3, 1, dtype=F64)
    A, B = ExactLinearFlow(LinearSDE(F_A, zero)), ExactLinearFlow(LinearSDE(F_B, zero))
    step = trotter(A, B) if scheme == "lie" else strang(A, B)
    errors = [deterministic_error(step, n) for n in STEP_COUNTS]
    slope = fitted_slope(errors)
    print(f"\n{scheme} deterministic: fitted order {slope:.3f}")
    assert low <= slope <= high
    basis = torch.eye(3, dtype=F64).reshape(3, 3, 1)  # the zero-noise exact flow is deterministic
    assert torch.equal(step(basis, 0.0, 0.1, torch.Generator().manual_seed(0)), step(basis, 0.0, 0.1, None))


def test_yoshida_palindromic_composition_has_order_four():
    w1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
    w0 = 1.0 - 2.0 * w1  # negative: Yoshida's backward sub-step
    coefficients = [w1 / 2, w1, (w0 + w1) / 2, w0, (w0 + w1) / 2, w1, w1 / 2]
    A, B = MatrixExponentialFlow(F_A), MatrixExponentialFlow(F_B)
    step = palindromic([A, B], coefficients, order=4)
    assert [f for _, f in step.steps] == coefficients and step.steps[1][0] is B and step.weak_order == 4
    counts = (2, 4, 8, 16, 32)
    slope = fitted_slope([deterministic_error(step, n) for n in counts], counts)
    print(f"\nYoshida deterministic: fitted order {slope:.3f}")
    assert 3.6 <= slope <= 4.4
    verlet = palindromic([A, B], [0.5, 1.0, 0.5])  # velocity-Verlet coefficients reproduce Strang exactly
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
    grid = torch.linspace(0.0, 0.5, 11, dtype=F64)  # the same through the loop (fusion included)
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
    with pytest.raises(ValueError, match="letters"):
        splitting("AC", {"A": A})
    with pytest.raises(TypeError, match="operators"):
        palindromic([O, lambda u, t: u], [0.5, 1.0, 0.5])
    with pytest.raises(TypeError, match=r"steps\[1\]"):
        Composition([(O, 1.0), (print, 1.0)])
    assert Composition([(O, 0.5), (B, 1.0)], check_fractions=False).nfe == 1


class ClockRecorder(Step):
    """Records the (start, length) of every sub-interval it is planned for (a test step)."""

    nfe = 0
    weak_order = math.inf

    def __init__(self) -> None:
        self.calls = []

    def plan(self, intervals, like):
        self.calls.extend(zip(intervals.starts.tolist(), intervals.spans.tolist()))
        return MatrixExponentialPlan(torch.eye(1, dtype=F64).expand(len(intervals), 1, 1))


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
    A, _ = exact_parts(WAVY_BETA)
    step = strang(A, EulerMaruyama(LinearSDE(F_B, G_B, WAVY_BETA)))
    n = 40000
    g = torch.Generator().manual_seed(5)
    u = MEAN0 + torch.randn(n, 3, generator=g, dtype=F64) @ torch.linalg.cholesky(COV0).T
    out = step(u.reshape(n, 3, 1), 0.3, 0.4, g)[:, :, 0]
    mean, cov = step.gaussian_moments(MEAN0.reshape(1, 3, 1), COV0.clone(), 0.3, 0.4)
    var = torch.diagonal(cov)
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((out.mean(0) - mean.reshape(-1)).abs() / (var / n).sqrt()).max() < 5
    assert ((torch.cov(out.T) - cov).abs() / se_cov).max() < 5


def test_moment_propagation_handles_event_dimensions():
    A, _ = exact_parts()
    step = strang(A, EulerMaruyama(LinearSDE(F_B, G_B)))
    d = 2
    mean = MEAN0.reshape(1, 3, 1).expand(1, 3, d).contiguous()
    m1, c1 = step.gaussian_moments(MEAN0.reshape(1, 3, 1), COV0.clone(), 0.0, 0.2)
    md, cd = step.gaussian_moments(mean, torch.kron(COV0, torch.eye(d, dtype=F64)), 0.0, 0.2)
    assert torch.allclose(md, m1.expand(1, 3, d), rtol=1e-13, atol=1e-15)
    assert torch.allclose(cd, torch.kron(c1, torch.eye(d, dtype=F64)), rtol=1e-12, atol=1e-15)


# -- plans -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("event", [(1,), (3,), (4, 5)], ids=["kron", "kron-d3", "scalars"])
def test_plans_reproduce_the_per_step_coefficients_to_1e_14(event):
    # the old layer computed each step's (Phi, L) from sde.kernel(t + h, t) and EM's drift / diffusion at t
    cld, _, reverse_sde = gaussian_cld_reverse()
    grid = torch.tensor([0.0, 0.1, 0.25, 0.7, 0.999], dtype=F64).tolist()
    u = torch.randn(16, 2, *event, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    linear = reverse_sde.sde.reverse_linear_part()
    flow_plan = plan_step(ExactLinearFlow(linear), grid, u)
    em_plan = plan_step(EulerMaruyama(reverse_sde), grid, u)
    for i, (a, b) in enumerate(zip(grid[:-1], grid[1:])):
        Phi, Q = linear.kernel(b, a)
        L = torch.linalg.cholesky(Q)
        expected = apply_matrix(Phi, u) + apply_matrix(L, z)
        g = GaussianNoise(torch.Generator().manual_seed(1))
        assert torch.allclose(flow_plan(u, i, g), expected, rtol=1e-14, atol=1e-14)
        assert torch.allclose(flow_plan.map.matrices(i)[0], Phi, rtol=1e-14, atol=1e-15)
        h, t = b - a, cld.T - a
        drift = -apply_matrix(cld.drift_matrix(t), u) + apply_matrix(
            cld.diffusion_covariance(t)[:, [1]], reverse_sde.score(u, t))
        # EM draws noise only for the column of G that acts (the velocity's)
        z_v = torch.randn((16, 1, *event), generator=torch.Generator().manual_seed(1), dtype=F64)
        noise = apply_matrix(cld.diffusion_matrix(t)[:, [1]], z_v)
        got = em_plan(u, i, GaussianNoise(torch.Generator().manual_seed(1)))
        assert torch.allclose(got, u + h * drift + math.sqrt(h) * noise, rtol=1e-14, atol=1e-14)


def test_time_homogeneous_flows_store_one_kernel_per_step_size_and_run_past_the_horizon():
    ou = LinearSDE([[-1.0]], [[math.sqrt(2.0)]], beta=1.0, T=1.0)
    times = torch.arange(0, 5001, dtype=F64) * 0.01  # t up to 50 >> T = 1
    plan = plan_step(ExactLinearFlow(ou), times, torch.zeros(4, 1, 1, dtype=F64))
    # one kernel per distinct float64 span (rounding of k * 0.01 leaves a handful), not 5000 kernels
    assert plan.Q.shape[0] == torch.unique(times[1:] - times[:-1]).numel() < 20
    u = torch.zeros(20000, 1, 1, dtype=F64)
    out = integrate(ExactLinearFlow(ou), u, times[:201], generator=torch.Generator().manual_seed(0)).state
    assert abs(out.var().item() - (1 - math.exp(-4.0))) < 5 * math.sqrt(2 / 20000)


def test_a_long_chain_runs_in_memory_independent_of_its_length():
    # 100,000 steps of an exact OU flow: the plan holds a few kernels and one index per step, nothing grows
    ou = LinearSDE([[-1.0]], [[1.0]], beta=1.0)
    step = ExactLinearFlow(ou)
    u = torch.zeros(64, 1, 2, dtype=F64)
    integrate(step, u, torch.arange(0, 1001, dtype=F64) * 0.01)  # warm up allocator and code paths
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = integrate(step, u, torch.arange(0, 100_001, dtype=F64) * 0.01)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"peak RSS growth over 1e5 steps: {grown_mib:.1f} MiB")
    assert grown_mib < 40 and out.nfe == 0 and bool(torch.isfinite(out.state).all())


def test_fsal_reuses_a_force_evaluated_at_the_same_positions_and_matches_no_reuse():
    # BAOAB for a quartic potential, force on the velocity (component 1) read from the position (component 0)
    calls = [0]

    def force(u, t):
        calls[0] += 1
        return torch.stack([torch.zeros_like(u[:, 0]), -(u[:, 0] ** 3)], 1)

    O = ExactLinearFlow(LinearSDE([[0.0, 0.0], [0.0, -1.0]], [[0.0, 0.0], [0.0, math.sqrt(2.0)]], T=1.0))
    A = EulerDrift(lambda u, t: torch.stack([u[:, 1], torch.zeros_like(u[:, 1])], 1), nfe=0, reads=[1],
                   writes=[0], time_dependent=False)
    kick = EulerDrift(force, nfe=1, reads=[0], writes=[1], time_dependent=False)
    plain = EulerDrift(force, nfe=1)  # reads everything: never reused
    n = 40
    grid = torch.arange(n + 1, dtype=F64) * 0.05
    u = torch.randn(128, 2, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    runs = []
    for B in (kick, plain):
        calls[0] = 0
        out = integrate(splitting("BAOAB", {"B": B, "A": A, "O": O}), u, grid, generator=torch.Generator().manual_seed(1))
        runs.append((out, calls[0]))
    (reused, reused_calls), (fresh, fresh_calls) = runs
    assert torch.allclose(reused.state, fresh.state, rtol=1e-14, atol=1e-14)
    assert reused_calls == reused.nfe == n + 1 and fresh_calls == fresh.nfe == 2 * n
    assert math.isinf(kick.weak_order)


def test_sampling_runs_without_autograd_unless_asked():
    cld, _, reverse_sde = gaussian_cld_reverse()
    u = cld.prior_sample((8, 2), dtype=F64).requires_grad_(True)
    out = integrate(EulerMaruyama(reverse_sde), u, uniform_grid(5).tolist())
    assert not out.state.requires_grad
    out = integrate(EulerMaruyama(reverse_sde), u, uniform_grid(5).tolist(), differentiable=True)
    out.state.sum().backward()
    assert u.grad is not None and bool(torch.isfinite(u.grad).all())


def test_steps_plans_and_samplers_pickle():
    _, _, reverse_sde = gaussian_cld_reverse()
    step = split_step(reverse_sde)
    plan = plan_step(step, uniform_grid(4).tolist(), torch.zeros(2, 2, 1, dtype=F64))
    for obj in (step, plan, EulerMaruyama(reverse_sde), splitdyn.SAMPLERS, Intervals.single(0.0, 0.1)):
        pickle.loads(pickle.dumps(obj))
    u = torch.randn(3, 2, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    copy = pickle.loads(pickle.dumps(plan))
    assert torch.equal(copy(u, 1, GaussianNoise(torch.Generator().manual_seed(2))),
                       plan(u, 1, GaussianNoise(torch.Generator().manual_seed(2))))


def test_the_divergence_check_names_the_step_that_diverged():
    sde = LinearSDE([[50.0]], [[1.0]], beta=1.0, T=10.0)  # exploding forward dynamics
    grid = torch.linspace(0.0, 2.0, 41, dtype=F64)
    with pytest.raises(splitdyn.DivergenceError, match=r"at step \d+ \(from t = ") as info:
        integrate(EulerMaruyama(sde), torch.ones(4, 1, 1, dtype=F64), grid, generator=torch.Generator().manual_seed(0))
    assert "smaller steps" in str(info.value)
    with pytest.raises(ValueError, match="initial state"):
        integrate(EulerMaruyama(sde), torch.full((4, 1, 1), float("nan")), grid)


def tensor_time_score(u, t):
    """A smooth velocity score written in tensor arithmetic only, so that it compiles whole with any time."""
    t = torch.as_tensor(t, dtype=u.dtype)
    return -u[:, 1:] / (0.25 * (1.0 + t)) + 0.1 * torch.sin(u[:, :1])


@pytest.mark.parametrize("sampler", ["em", "sscs"])
def test_a_compiled_sampler_equals_eager_and_compiles_once_over_a_50_step_grid(sampler):
    compilations = [0]

    def counting_backend(graph_module, example_inputs):
        compilations[0] += 1
        return graph_module.forward

    torch._dynamo.reset()
    cld = CLD()
    runs = {}
    for mode in (False, {"backend": counting_backend, "fullgraph": True}):
        runs[bool(mode)] = splitdyn.sample(cld, tensor_time_score, (64, 2), uniform_grid(50), step=sampler,
                                           generator=torch.Generator().manual_seed(0), dtype=F64, compile=mode)
        if mode:
            after_run = compilations[0]
    # one graph per compiled function (EM: the step; SSCS: the flow, the score and the Euler update), none per time
    assert after_run == (1 if sampler == "em" else 3)
    assert torch.allclose(runs[True].state, runs[False].state, rtol=1e-12, atol=1e-12)
    assert runs[True].nfe == runs[False].nfe == 51


def test_a_score_that_breaks_the_graph_does_not_recompile_at_every_step():
    """A score that reads its time on the host (``float(t)``: a graph break, like a table indexed by a tensor
    time) splits the compiled step in two graphs, compiled once each, not once per step (dynamo's limit is 8)."""
    compilations = [0]

    def counting_backend(graph_module, example_inputs):
        compilations[0] += 1
        return graph_module.forward

    def host_time_score(u, t):
        scale = 0.25 * (1.0 + float(t))  # a graph break
        return -u[:, 1:] / scale + 0.1 * torch.sin(u[:, :1])

    torch._dynamo.reset()
    cld = CLD()
    runs = [splitdyn.sample(cld, host_time_score, (16, 2), uniform_grid(30), step="em", cache=False,
                            generator=torch.Generator().manual_seed(0), dtype=F64, compile=mode)
            for mode in (False, {"backend": counting_backend})]
    assert compilations[0] <= 3, compilations[0]  # 10 when a per-step list was alive across the break
    assert torch.allclose(runs[0].state, runs[1].state, rtol=1e-12, atol=1e-12)


def test_a_captured_loop_runs_the_same_plan_eagerly_without_cuda():
    cld, _, reverse_sde = gaussian_cld_reverse()
    like = torch.zeros(32, 2, 3, dtype=F64)
    loop = splitdyn.CapturedLoop(split_step(reverse_sde), uniform_grid(6).tolist(), like)
    assert not loop.graphed and loop.nfe == 6
    u = cld.prior_sample((32, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.manual_seed(5)
    captured = loop(u).clone()
    torch.manual_seed(5)
    reference = integrate(split_step(reverse_sde), u, uniform_grid(6).tolist()).state
    assert torch.equal(captured, reference)
    with pytest.raises(RuntimeError, match="CUDA"):
        splitdyn.CapturedLoop(split_step(reverse_sde), uniform_grid(6).tolist(), like, use_graph=True)
