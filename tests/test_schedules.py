"""Custom schedules (:mod:`splitdyn.schedules`) in every process, against independent oracles.

Oracles: each schedule's :math:`B(t)` written out here from its paper's definition (autograd of it for
:math:`\\beta`), the generic Van Loan kernel and a torchdiffeq solve of the moment ODEs for the closed-form
kernels, the monotone bisection for the closed-form inverses, and the exact probability-flow map of Gaussian
data for the samplers that interpolate in the log-SNR.
"""

from __future__ import annotations

import math

import pytest
import torch

from splitdyn import (
    VESDE,
    VPSDE,
    ConstantBeta,
    CosineSchedule,
    CustomBeta,
    DiscreteSchedule,
    GeometricSigma,
    LinearBeta,
    LinearSDE,
    LinearSigma,
    LogSNRGrid,
    Schedule,
    SubVPSDE,
    TimeRescaling,
    TimeVaryingLinearSDE,
    log_snr_bisection,
    sample,
    van_loan_kernel,
)

F64 = torch.float64
DDPM_ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=F64), 0)


def cosine_B(t, s=0.008, end=0.9946, T=1.0):
    """Nichol & Dhariwal: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s)); B = -log alpha_bar."""
    f = lambda r: torch.cos(0.5 * math.pi * (end * r / T + s) / (1 + s)) ** 2
    return -torch.log(f(t) / f(torch.zeros_like(t)))


def schedules() -> dict[str, tuple[Schedule, object]]:
    """name -> (schedule, independent B(t) or None where the schedule is itself the definition)."""
    return {
        "constant": (ConstantBeta(3.0), lambda t: 3.0 * t),
        "linear": (LinearBeta(0.1, 20.0), lambda t: 0.1 * t + 9.95 * t * t),
        "cosine": (CosineSchedule(), cosine_B),
        "geometric": (GeometricSigma(0.01, 50.0), lambda t: 0.01**2 * ((5000.0 ** (2 * t)) - 1)),
        "linear-sigma": (LinearSigma(80.0), lambda t: (80.0 * t) ** 2),
        "custom": (CustomBeta(lambda t: 1 + 2 * t, lambda t: t + t * t), lambda t: t + t * t),
        "discrete": (DiscreteSchedule(DDPM_ALPHAS_CUMPROD), None),
    }


NAMES = sorted(schedules())
T_VALUES = torch.tensor([1e-3, 0.0137, 0.25, 0.5, 0.8, 0.999, 1.0], dtype=F64)


@pytest.mark.parametrize("name", NAMES)
def test_rate_is_the_derivative_of_the_independent_integral(name):
    schedule, B_ref = schedules()[name]
    t = T_VALUES
    if B_ref is None:  # the tabulated schedule: B is exact at the knots, beta its derivative inside a piece
        knots = schedule.knots[[0, 5, 500, 999]]
        torch.testing.assert_close(schedule.integral(knots), -torch.log(DDPM_ALPHAS_CUMPROD[[0, 5, 500, 999]]),
                                   rtol=1e-13, atol=0)
        inside = schedule.knots[[3, 400, 900]] + 0.3e-3
        h = 1e-7
        fd = (schedule.integral(inside + h) - schedule.integral(inside - h)) / (2 * h)
        torch.testing.assert_close(schedule.beta(inside), fd, rtol=1e-6, atol=0)
        return
    torch.testing.assert_close(schedule.integral(t), B_ref(t), rtol=1e-11, atol=1e-15)
    tt = t.clone().requires_grad_(True)
    (rate,) = torch.autograd.grad(B_ref(tt).sum(), tt)
    torch.testing.assert_close(schedule.beta(t), rate, rtol=1e-9, atol=0)
    s = 0.5 * t
    torch.testing.assert_close(schedule.increment(t, s), B_ref(t) - B_ref(s), rtol=1e-9, atol=1e-15)


def test_discrete_schedule_is_linear_in_log_snr_between_knots():
    d = DiscreteSchedule(DDPM_ALPHAS_CUMPROD)
    lam = 0.5 * (torch.log(DDPM_ALPHAS_CUMPROD) - torch.log1p(-DDPM_ALPHAS_CUMPROD))
    mid = 0.5 * (d.knots[:-1] + d.knots[1:])
    torch.testing.assert_close(d.log_snr(mid), 0.5 * (lam[:-1] + lam[1:]), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(d.log_snr(d.knots), lam, rtol=1e-11, atol=1e-11)
    # below the first knot: a constant rate from B = 0
    assert d.integral(0.5 * d.knots[0]).item() == pytest.approx(0.5 * -math.log(DDPM_ALPHAS_CUMPROD[0].item()),
                                                                rel=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_inverse_round_trips_to_1e_10_and_matches_bisection(name):
    schedule, _ = schedules()[name]
    t = torch.cat([torch.tensor([1e-9, 1e-6], dtype=F64), T_VALUES])
    B = schedule.integral(t)
    inverse = schedule.inverse_integral(B)
    torch.testing.assert_close(inverse, t, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(Schedule.inverse_integral(schedule, B), t, rtol=1e-10, atol=1e-14)  # bisection


PROCESS_CASES = [
    ("vp", "cosine"), ("vp", "discrete"), ("vp", "constant"),
    ("subvp", "cosine"), ("subvp", "discrete"),
    ("ve", "linear-sigma"), ("ve", "custom"),
]


def make_process(kind: str, name: str):
    schedule, _ = schedules()[name]
    return {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}[kind](schedule=schedule)


@pytest.mark.parametrize("kind, name", [c for c in PROCESS_CASES if c[0] != "subvp"])
def test_closed_form_kernels_match_the_van_loan_kernel(kind, name):
    process = make_process(kind, name)
    t = torch.tensor([1e-6, 0.01, 0.3, 1.0, 0.7, 1.0], dtype=F64)
    s = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, 0.31], dtype=F64)
    F = torch.tensor([[-0.5 if kind == "vp" else 0.0]], dtype=F64)
    generic = LinearSDE(F, [[1.0]], process.schedule)
    Phi, Q = process.kernel(t, s)
    Phi_vl, Q_vl = van_loan_kernel(F, torch.ones(1, 1, dtype=F64), process.schedule.increment(t, s))
    torch.testing.assert_close(Phi, Phi_vl, rtol=1e-12, atol=0)
    torch.testing.assert_close(Q, Q_vl, rtol=1e-12, atol=0)
    torch.testing.assert_close(Q, generic.kernel(t, s)[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_sub_vp_kernels_match_the_moment_odes(name):
    schedule, B_ref = schedules()[name]
    process = SubVPSDE(schedule=schedule)

    def beta(t):
        tt = t.detach().clone().requires_grad_(True)
        (rate,) = torch.autograd.grad(B_ref(tt), tt)
        return rate

    ode = TimeVaryingLinearSDE(lambda t: (-0.5 * beta(t)).reshape(1, 1),
                               lambda t: (beta(t) * -torch.expm1(-2 * B_ref(t))).sqrt().reshape(1, 1), 1,
                               rtol=1e-12, atol=1e-24)
    t = torch.tensor([0.05, 0.5, 1.0], dtype=F64)
    s = torch.tensor([0.0, 0.2, 0.5], dtype=F64)
    Phi, Q = process.kernel(t, s)
    Phi_ode, Q_ode = ode.kernel(t, s)
    torch.testing.assert_close(Phi, Phi_ode, rtol=1e-9, atol=0)
    torch.testing.assert_close(Q, Q_ode, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("kind, name", PROCESS_CASES)
def test_log_snr_inverse_round_trip(kind, name):
    process = make_process(kind, name)
    T = process.T
    t = torch.tensor([1e-8, 1e-4, 0.01, 0.3, 0.77, 1.0], dtype=F64) * T
    lam = process.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(lam, torch.log(process.alpha(t)) - torch.log(process.sigma(t)), rtol=1e-9, atol=1e-9)
    closed = process.time_from_log_snr(lam)
    torch.testing.assert_close(closed, t, rtol=1e-10, atol=0)
    torch.testing.assert_close(log_snr_bisection(process, lam), t, rtol=1e-10, atol=0)
    grid = torch.linspace(float(lam[-1]), 15.0, 31, dtype=F64)
    torch.testing.assert_close(process.log_snr(process.time_from_log_snr(grid)), grid, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind, name", [("vp", "cosine"), ("vp", "discrete"), ("subvp", "cosine"),
                                        ("ve", "linear-sigma")])
def test_dpm_solver_on_a_log_snr_grid_converges_to_the_exact_flow(kind, name):
    """Gaussian data N(m, v): the probability flow maps x_T to m + sqrt(v / (alpha_T^2 v + sigma_T^2)) (x_T -
    alpha_T m) exactly; DPM-Solver++(2M) on a log-SNR grid reaches it with the error of a second-order method."""
    process = make_process(kind, name)
    m, v = 0.7, 0.3**2
    T, eps = process.T, 1e-3 * process.T

    def score(u, t):
        t = torch.as_tensor(t, dtype=F64)
        a, s = process.alpha(t), process.sigma(t)
        return (-(u.double() - a * m) / (a * a * v + s * s)).to(u.dtype)

    x_T = process.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    aT, sT = process.alpha(T).item(), process.sigma(T).item()
    ae, se = process.alpha(eps).item(), process.sigma(eps).item()
    # the exact flow to t = eps
    exact = ae * m + math.sqrt((ae * ae * v + se * se) / (aT * aT * v + sT * sT)) * (x_T - aT * m)
    errors = []
    for n in (20, 40):
        out = sample(process, score, x_T, LogSNRGrid(n, process, eps=eps), step="dpmpp-2m-heun", denoise=False).state
        errors.append((out - exact).abs().max().item())
    assert errors[1] < 2e-2  # 5.9e-3 (linear VP), 1.1e-2 (DDPM table), 1.4e-2 (sub-VP cosine) at n = 40
    if name == "discrete":
        # the table's rate jumps at its 1000 knots, and the exponential integrators' weights come from a
        # quadrature in log t that does not see the jumps: a floor near 4e-3 (3M) appears below n = 80, so
        # only a halving is asserted here (2.6 measured from n = 20 to 40)
        assert errors[0] / errors[1] > 2.0
    else:
        assert errors[0] / errors[1] > 3.0  # second order: 3.5 to 4.1 measured
        # the midpoint form (plain "dpmpp-2m") is second order too, but reaches its rate later: on the linear-sigma
        # VE its ratio is 2.6 from n = 20 to 40, then 3.6, 3.8, 3.9 (with errors 2-3x smaller than the heun form's)
        midpoint = [(sample(process, score, x_T, LogSNRGrid(n, process, eps=eps), step="dpmpp-2m",
                            denoise=False).state - exact).abs().max().item() for n in (40, 80)]
        assert midpoint[0] / midpoint[1] > 3.0


def test_schedule_parameters_are_validated_with_the_argument_named():
    cases = [
        (lambda: VPSDE(beta_min=20, beta_max=0.1), "beta_max"),
        (lambda: SubVPSDE(beta_min=20, beta_max=0.1), "beta_max"),
        (lambda: LinearBeta(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: LinearBeta(beta_min=-1.0), "beta_min"),
        (lambda: CosineSchedule(end=1.0), "end"),
        (lambda: CosineSchedule(s=0.0), "s"),
        (lambda: LinearSigma(sigma_max=-1.0), "sigma_max"),
        (lambda: DiscreteSchedule([0.9, 0.95]), "alphas_cumprod"),
        (lambda: DiscreteSchedule([1.0, 0.5]), "alphas_cumprod"),
        (lambda: DiscreteSchedule([0.5]), "alphas_cumprod"),
        (lambda: VPSDE(beta_min=0.2, schedule=CosineSchedule()), "beta_min"),
        (lambda: VESDE(sigma_max=3.0, schedule=LinearSigma()), "sigma_max"),
        (lambda: VPSDE(T=2.0, schedule=CosineSchedule()), "T"),
        (lambda: Schedule.inverse_integral(LinearBeta(), -1.0), "B"),
    ]
    for build, argument in cases:
        with pytest.raises(ValueError, match=argument):
            build()
    with pytest.raises(TypeError, match="schedule"):
        VPSDE(schedule="cosine")


def test_one_name_for_the_schedule_of_every_process():
    assert TimeRescaling is Schedule
    from splitdyn_cld import CLD

    for process in (VPSDE(), SubVPSDE(), VESDE(), VPSDE(schedule=CosineSchedule()), CLD(),
                    LinearSDE([[-1.0]], [[1.0]], 2.0)):
        assert isinstance(process.schedule, Schedule)
    assert VPSDE().schedule is VPSDE().rescaling or isinstance(VPSDE().schedule, LinearBeta)
    cut = VPSDE(T=0.5, schedule=CosineSchedule())  # a horizon may cut a schedule short
    assert cut.T == 0.5 and cut.log_snr(0.5).item() == pytest.approx(VPSDE(schedule=CosineSchedule()).log_snr(0.5).item())
    assert VESDE(schedule=LinearSigma(80.0, T=80.0)).prior_std == 80.0
    assert repr(VPSDE()) == "VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)"
