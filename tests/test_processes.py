"""The VP, sub-VP and VE presets (:mod:`splitdyn.processes`) against independent oracles.

Oracles: the generic Van Loan kernel (:func:`splitdyn.linear_sde.van_loan_kernel`) for the two processes that are
time-rescaled linear SDEs (VP, VE), a tight torchdiffeq solve of the moment ODEs of a
:class:`~splitdyn.linear_sde.TimeVaryingLinearSDE` whose coefficients are written out here from the papers'
definitions (all three), bisection for the log-SNR inverses, and autograd for the kernels' scores.
"""

from __future__ import annotations

import math

import pytest
import torch

from splitdyn import (
    DiffusionProcess,
    GeometricSigma,
    LinearBeta,
    LinearSDE,
    NoisePredictionScore,
    PerturbationKernel,
    SubVPSDE,
    TimeVaryingLinearSDE,
    VESDE,
    VPSDE,
    log_snr_bisection,
    score_from_noise_prediction,
    van_loan_kernel,
)

F64 = torch.float64
BMIN, BMAX, SMIN, SMAX = 0.1, 20.0, 0.01, 50.0
# spans from 1e-7 (Taylor branches, cancellation) to the whole horizon, from two start times
TIMES_T = torch.tensor([1e-7, 1e-3, 0.05, 0.3, 1.0, 0.3 + 1e-7, 0.7, 1.0], dtype=F64)
TIMES_S = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3], dtype=F64)


# -- the coefficients, written out independently of splitdyn.schedules --------------------------------------
def beta_vp(t):
    return BMIN + (BMAX - BMIN) * t


def B_vp(t):
    return BMIN * t + 0.5 * (BMAX - BMIN) * t * t


def sigma_geo(t):
    return SMIN * (SMAX / SMIN) ** t


def g2_ve(t):  # d sigma^2 / dt
    return 2.0 * math.log(SMAX / SMIN) * sigma_geo(t) ** 2


def ode_process(name: str) -> TimeVaryingLinearSDE:
    """The process as a TimeVaryingLinearSDE; the tiny atol resolves the sub-VP's Q = O(t^2) near t = 0."""
    tol = {"rtol": 1e-12, "atol": 1e-24}
    if name == "vp":
        return TimeVaryingLinearSDE(lambda t: (-0.5 * beta_vp(t)).reshape(1, 1),
                                    lambda t: beta_vp(t).sqrt().reshape(1, 1), 1, **tol)
    if name == "subvp":
        return TimeVaryingLinearSDE(lambda t: (-0.5 * beta_vp(t)).reshape(1, 1),
                                    lambda t: (beta_vp(t) * -torch.expm1(-2 * B_vp(t))).sqrt().reshape(1, 1), 1, **tol)
    return TimeVaryingLinearSDE(lambda t: torch.zeros(1, 1, dtype=F64), lambda t: g2_ve(t).sqrt().reshape(1, 1), 1, **tol)


PROCESSES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def make(name: str) -> DiffusionProcess:
    return PROCESSES[name]()


# -- kernels --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_closed_form_kernels_match_the_van_loan_kernel(name):
    process = make(name)
    F = torch.tensor([[-0.5 if name == "vp" else 0.0]], dtype=F64)
    Phi_vl, Q_vl = van_loan_kernel(F, torch.ones(1, 1, dtype=F64), process.rescaling.increment(TIMES_T, TIMES_S))
    Phi, Q = process.kernel(TIMES_T, TIMES_S)
    torch.testing.assert_close(Phi, Phi_vl, rtol=1e-12, atol=0)
    torch.testing.assert_close(Q, Q_vl, rtol=1e-12, atol=0)
    # and the generic LinearSDE route (Van Loan inside) with the same rescaling
    generic = LinearSDE(F, [[1.0]], process.rescaling)
    torch.testing.assert_close(Q, generic.kernel(TIMES_T, TIMES_S)[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(process.transition_matrix(TIMES_T, TIMES_S), generic.transition_matrix(TIMES_T, TIMES_S),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_closed_form_kernels_match_the_moment_odes(name):
    process = make(name)
    Phi_ode, Q_ode = ode_process(name).kernel(TIMES_T, TIMES_S)
    Phi, Q = process.kernel(TIMES_T, TIMES_S)
    torch.testing.assert_close(Phi, Phi_ode, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(Q, Q_ode, rtol=1e-10, atol=1e-14)
    # the process's own coefficients drive the same ODEs
    t = torch.tensor([0.0, 0.2, 1.0], dtype=F64)
    torch.testing.assert_close(process.drift_matrix(t), ode_process(name).drift_matrix(t), rtol=1e-14, atol=0)
    torch.testing.assert_close(process.diffusion_covariance(t), ode_process(name).diffusion_covariance(t),
                               rtol=1e-13, atol=0)


def test_sub_vp_closed_form_for_q_and_sigma():
    t, s = torch.tensor([1e-6, 0.4, 1.0], dtype=F64), torch.tensor([0.0, 0.1, 0.5], dtype=F64)
    Q = SubVPSDE().noise_covariance(t, s)[:, 0, 0]
    dB, total = B_vp(t) - B_vp(s), B_vp(t) + B_vp(s)
    torch.testing.assert_close(Q[1:], ((1 - torch.exp(-dB)) * (1 - torch.exp(-total)))[1:], rtol=1e-13, atol=0)
    torch.testing.assert_close(Q[0], torch.tensor(B_vp(1e-6) ** 2, dtype=F64), rtol=1e-5, atol=0)  # O(B^2) start
    sub, vp = SubVPSDE(), VPSDE()
    assert bool((sub.sigma(t) < vp.sigma(t)).all())  # "sub"-VP: variance below the VP's


def test_ve_kernel_is_the_difference_of_squared_noise_scales():
    ve = VESDE()
    t, s = torch.tensor([0.2, 0.8, 1.0], dtype=F64), torch.tensor([0.0, 0.5, 0.3], dtype=F64)
    torch.testing.assert_close(ve.noise_covariance(t, s)[:, 0, 0], sigma_geo(t) ** 2 - sigma_geo(s) ** 2,
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(ve.noise_scale(t), sigma_geo(t), rtol=1e-14, atol=0)
    torch.testing.assert_close(ve.sigma(t), (sigma_geo(t) ** 2 - SMIN**2).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(GeometricSigma(SMIN, SMAX).beta(t), g2_ve(t), rtol=1e-13, atol=0)
    # near t = 0 the std keeps full relative precision: sigma(t)^2 = sigma_min^2 (2 c t + 2 c^2 t^2 + ...)
    c, tiny = math.log(SMAX / SMIN), 1e-12
    assert ve.sigma(tiny).item() == pytest.approx(SMIN * math.sqrt(2 * c * tiny * (1 + c * tiny)), rel=1e-14)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_alpha_and_sigma_are_the_kernel_from_zero(name):
    process = make(name)
    t = torch.tensor([1e-9, 1e-4, 0.1, 0.5, 1.0], dtype=F64)
    Phi, Q = ode_process(name).kernel(t, torch.zeros_like(t))
    torch.testing.assert_close(process.alpha(t), Phi[:, 0, 0], rtol=1e-10, atol=0)
    torch.testing.assert_close(process.sigma(t) ** 2, Q[:, 0, 0], rtol=1e-9, atol=1e-30)


def test_schedules_rate_is_the_derivative_of_the_integral_and_inverses_round_trip():
    t = torch.tensor([1e-9, 1e-3, 0.25, 0.8, 1.0], dtype=F64)
    for schedule, B_ref in ((LinearBeta(BMIN, BMAX), B_vp), (GeometricSigma(SMIN, SMAX), lambda r: sigma_geo(r) ** 2 - SMIN**2)):
        torch.testing.assert_close(schedule.integral(t), B_ref(t), rtol=1e-12, atol=1e-19)  # B_ref cancels at 0
        tt = t.clone().requires_grad_(True)
        (rate,) = torch.autograd.grad(B_ref(tt).sum(), tt)  # autograd of the independent B(t)
        torch.testing.assert_close(schedule.beta(t), rate, rtol=1e-12, atol=0)
        torch.testing.assert_close(schedule.inverse_integral(schedule.integral(t)), t, rtol=1e-12, atol=0)
        s = t * 0.5
        torch.testing.assert_close(schedule.increment(t, s), B_ref(t) - B_ref(s), rtol=1e-9, atol=0)
    ve = GeometricSigma(SMIN, SMAX)
    # the increment keeps relative precision over a span of 1e-12 where B(t) - B(s) cancels
    assert ve.increment(0.5 + 1e-12, 0.5).item() == pytest.approx(g2_ve(torch.tensor(0.5, dtype=F64)).item() * 1e-12,
                                                                  rel=1e-9)


# -- log-SNR --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_log_snr_is_log_alpha_over_sigma_and_decreasing(name):
    process = make(name)
    t = torch.tensor([1e-10, 1e-6, 1e-3, 0.1, 0.5, 0.9, 1.0], dtype=F64)
    Phi, Q = ode_process(name).kernel(t, torch.zeros_like(t))
    lam = process.log_snr(t)
    torch.testing.assert_close(lam, torch.log(Phi[:, 0, 0]) - 0.5 * torch.log(Q[:, 0, 0]), rtol=1e-9, atol=1e-9)
    assert bool((lam[1:] < lam[:-1]).all())
    assert process.log_snr(0.0).item() == math.inf


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_log_snr_inverse_round_trip_and_matches_bisection(name):
    process = make(name)
    t = torch.tensor([1e-12, 1e-8, 1e-5, 1e-3, 0.02, 0.3, 0.77, 1.0], dtype=F64)
    lam = process.log_snr(t)
    closed = process.time_from_log_snr(lam)
    torch.testing.assert_close(closed, t, rtol=1e-10, atol=0)
    torch.testing.assert_close(log_snr_bisection(process, lam), t, rtol=1e-10, atol=0)
    # the generic (bisection) inverse of the base class agrees with the closed form
    torch.testing.assert_close(DiffusionProcess.time_from_log_snr(process, lam), closed, rtol=1e-10, atol=0)
    # and the other way round, on a grid of log-SNR values
    grid = torch.linspace(float(lam[-1]), 20.0, 41, dtype=F64)
    torch.testing.assert_close(process.log_snr(process.time_from_log_snr(grid)), grid, rtol=1e-10, atol=1e-10)


def test_vp_log_snr_closed_forms():
    t = torch.tensor([0.25], dtype=F64)
    assert VPSDE().log_snr(t).item() == pytest.approx(-0.5 * math.log(math.expm1(B_vp(0.25))), rel=1e-14)
    sub_lam = SubVPSDE().log_snr(t).item()
    assert math.sinh(B_vp(0.25) / 2) == pytest.approx(math.exp(-sub_lam) / 2, rel=1e-13)
    # extreme log-SNRs stay finite and in range
    assert SubVPSDE(T=200.0, beta_max=20.0).time_from_log_snr(-900.0).item() <= 200.0
    assert LinearBeta(BMIN, BMAX).inverse_integral(B_vp(torch.tensor(0.6, dtype=F64))).item() == pytest.approx(0.6, rel=1e-15)


# -- prior and perturbation kernel ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_prior_is_the_kernel_at_t(name):
    process = make(name)
    assert process.alpha(1.0).item() < 1e-2
    assert abs(process.sigma(1.0).item() ** 2 - process.prior_std**2) < 1e-4
    # KL(N(alpha x0, sigma^2) || N(0, 1)) per coordinate for |x0| <= 3 is below 1e-3
    a, s2 = process.alpha(1.0).item(), process.sigma(1.0).item() ** 2
    kl = 0.5 * (s2 + (3 * a) ** 2 - 1 - math.log(s2))
    assert kl < 1e-3


def test_ve_prior_matches_the_kernel_std_at_t():
    ve = VESDE()
    assert ve.prior_std == SMAX
    assert ve.sigma(1.0).item() == pytest.approx(SMAX, rel=1e-7)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_prior_sample_and_log_prob(name):
    process = make(name)
    g = torch.Generator().manual_seed(0)
    u = process.prior_sample((20000, 3), generator=g, dtype=F64)
    assert u.shape == (20000, 1, 3) and u.dtype == F64
    assert u.std().item() == pytest.approx(process.prior_std, rel=0.02)
    logp = process.prior_log_prob(u[:5])
    reference = torch.distributions.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(process.prior_std, dtype=F64)).log_prob(u[:5]).sum((1, 2))
    torch.testing.assert_close(logp, reference, rtol=1e-12, atol=1e-12)
    assert process.prior_sample((2,), dtype=torch.float32).shape == (2, 1)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_perturbation_kernel_moments_and_score_against_autograd(name):
    process = make(name)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 3, generator=g, dtype=F64)
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=F64)
    kernel = process.perturbation_kernel(t, x0)
    assert isinstance(kernel, PerturbationKernel)
    shape = (-1, 1, 1, 1)
    torch.testing.assert_close(kernel.mean[:, 0], process.alpha(t).reshape(-1, 1, 1) * x0, rtol=1e-14, atol=0)
    torch.testing.assert_close(kernel.covariance[:, 0, 0], process.sigma(t) ** 2, rtol=1e-14, atol=0)
    u, noise = kernel.sample(generator=g)
    torch.testing.assert_close(u, process.alpha(t).reshape(shape) * x0[:, None] + process.sigma(t).reshape(shape) * noise,
                               rtol=1e-12, atol=1e-14)
    u = u.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(kernel.log_prob(u).sum(), u)
    torch.testing.assert_close(kernel.score(u.detach()), grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kernel.score_from_noise(noise), grad, rtol=1e-9, atol=1e-9)
    # the log density is the Gaussian N(alpha x0, sigma^2) summed over coordinates
    reference = torch.distributions.Normal(process.alpha(t).reshape(shape) * x0[:, None],
                                           process.sigma(t).reshape(shape)).log_prob(u.detach()).sum((1, 2, 3))
    torch.testing.assert_close(kernel.log_prob(u.detach()), reference, rtol=1e-12, atol=1e-10)


# -- noise-prediction score -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_noise_prediction_score_of_the_exact_noise_is_the_kernel_score(name):
    process = make(name)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 2, generator=g, dtype=F64)
    t = torch.tensor([0.01, 0.2, 0.4, 0.8, 1.0], dtype=F64)
    kernel = process.perturbation_kernel(t, x0)
    u, _ = kernel.sample(generator=g)
    alpha, sigma = process.alpha(t).reshape(-1, 1, 1), process.sigma(t).reshape(-1, 1, 1)
    calls = []

    def eps_model(x, times):
        calls.append(times)
        return (x - alpha.to(x.dtype) * x0[:, None]) / sigma.to(x.dtype)

    score = score_from_noise_prediction(eps_model, process)
    assert isinstance(score, NoisePredictionScore)
    torch.testing.assert_close(score(u, t), kernel.score(u), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(calls[-1], t)
    torch.testing.assert_close(score.sigma(t), process.sigma(t), rtol=0, atol=0)


def test_noise_prediction_score_with_a_plain_linear_sde_uses_its_kernel():
    plain = LinearSDE([[-0.5]], [[1.0]], LinearBeta(BMIN, BMAX))
    t = torch.tensor([0.05, 0.5], dtype=F64)
    torch.testing.assert_close(NoisePredictionScore(lambda x, s: x, plain).sigma(t), VPSDE().sigma(t),
                               rtol=1e-12, atol=0)
    net = torch.nn.Linear(1, 1)
    module = score_from_noise_prediction(lambda x, s: net(x.transpose(1, -1)).transpose(1, -1), VPSDE())
    assert sum(p.numel() for p in module.parameters()) == 0  # a plain callable is not registered
    assert sum(p.numel() for p in score_from_noise_prediction(torch.nn.Identity(), VPSDE()).parameters()) == 0


def test_processes_work_with_the_generic_machinery():
    from splitdyn import ExactLinearFlow

    for process in (VPSDE(), SubVPSDE(), VESDE()):
        flow = ExactLinearFlow(process)
        u = flow(torch.zeros(3, 1, 2, dtype=F64), 0.2, 0.1, generator=torch.Generator().manual_seed(0))
        assert u.shape == (3, 1, 2)
        assert process.noise_dimension == 1 and process.num_components == 1
    rev = VPSDE().reverse_linear_part()
    assert isinstance(rev, LinearSDE)
    assert "VPSDE(beta_min=0.1" in repr(VPSDE()) and "SubVPSDE" in repr(SubVPSDE()) and "VESDE" in repr(VESDE())


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_reverse_sampling_with_the_exact_score_recovers_gaussian_data(name):
    """End to end: prior -> Euler-Maruyama on the reverse SDE over a log-SNR grid -> denoising, for data
    N(0, 0.5^2) whose score is exact, -x / (alpha^2 0.25 + sigma^2)."""
    from splitdyn import LogSNRGrid, sample

    process = make(name)

    def score(u, t):
        t = torch.as_tensor(t, dtype=F64)
        variance = process.alpha(t) ** 2 * 0.25 + process.sigma(t) ** 2
        return -u / variance.to(u.dtype).reshape(-1, *([1] * (u.ndim - 1)))

    g = torch.Generator().manual_seed(3)
    grid = LogSNRGrid(100, process, eps=1e-3)
    solution = sample(process, score, (5000, 1), grid, step="em", generator=g, dtype=F64)
    assert solution.state.std().item() == pytest.approx(0.5, rel=0.05)


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_clear_messages():
    with pytest.raises(ValueError, match="sigma_max must be larger"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        VPSDE(beta_max=0.0)
    with pytest.raises(ValueError, match="beta_min"):
        SubVPSDE(beta_min=-1.0)
    with pytest.raises(TypeError, match="T must be"):
        VPSDE(T=True)
    vp = VPSDE()
    with pytest.raises(ValueError, match="t must lie in"):
        vp.sigma(1.5)
    with pytest.raises(ValueError, match="lam must be at least"):
        vp.time_from_log_snr(-6.0)
    with pytest.raises(ValueError, match="lam must be finite"):
        SubVPSDE().time_from_log_snr(float("nan"))
    with pytest.raises(TypeError, match="lam must be"):
        VESDE().time_from_log_snr("high")
    with pytest.raises(TypeError, match="process must be a DiffusionProcess"):
        log_snr_bisection(LinearSDE([[-0.5]], [[1.0]]), 0.0)
    with pytest.raises(ValueError, match=r"shape\[0\] must be an integer >= 1"):
        vp.prior_sample((0, 2))
    with pytest.raises(TypeError, match=r"shape\[1\] must be an integer"):
        vp.prior_sample((2, 2.5))
    with pytest.raises(TypeError, match="shape must be a sequence"):
        vp.prior_sample(3)
    with pytest.raises(ValueError, match="u must have shape"):
        vp.prior_log_prob(torch.zeros(2, 2, 3))
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        vp.perturbation_kernel(0.5, [1.0, 2.0])
    with pytest.raises(ValueError, match="x0 must have shape"):
        vp.perturbation_kernel(0.5, torch.tensor(1.0))
    with pytest.raises(TypeError, match="net must be"):
        score_from_noise_prediction(3, vp)
    with pytest.raises(TypeError, match="sde must be a LinearSDEBase"):
        score_from_noise_prediction(lambda x, t: x, "vp")
    with pytest.raises(ValueError, match="one component"):
        score_from_noise_prediction(lambda x, t: x, LinearSDE([[-1.0, 0.0], [0.0, -1.0]], [[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        score_from_noise_prediction(lambda x, t: x, vp)(torch.zeros(3, 1, 2), torch.tensor([0.1, 0.2]))
