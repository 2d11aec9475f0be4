"""Exponential integrators (data and noise prediction), DPM-Solver++ and the fixed-grid probability-flow steps.

Independent oracles: closed-form Gaussian conditioning, the DPM-Solver++ formulas written in the log-SNR
lambda with the closed-form phi-functions, a torchdiffeq integration of the linear part, the exact flow of a
single data point, and exact Gaussian data moments. The declared weak orders are measured in
``tests/test_steps.py`` (ORDER_TABLE).
"""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from splitdyn import (ExponentialODE, ExponentialSDE, Intervals, NoiseExponentialODE, LogSNRGrid, PowerGrid,
                      ProbabilityFlowHeun, ProbabilityFlowRK4, ReverseSDE, VPSDE, apply_matrix, integrate, sample)
from splitdyn.integrate import plan_step
from splitdyn.steps.base import evaluation_count
from splitdyn.steps.noise import GaussianNoise
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn.steps.exponential import exponential_tables, weight_integrand
from splitdyn.steps.exponential_weights import (DiffusionGeometry, cumulative_products, interpolation_variable,
                                                lagrange_basis, log_quadrature)
from splitdyn_cld import CLD

F64 = torch.float64


def forward_steps(n=20, rho=3.0):
    tau = PowerGrid(n, rho).reverse_times(1.0)
    return 1.0 - tau[:-1], 1.0 - tau[1:]


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def processes():
    return [("CLD", CLD(), [1]), ("VP", VPSDE(), None)]


@pytest.mark.parametrize("kind", ["ode", "sde"])
@pytest.mark.parametrize("name, process, components", processes(), ids=["CLD", "VP"])
def test_data_weights_of_a_constant_estimate_reproduce_the_mean_path(kind, name, process, components):
    geometry = DiffusionGeometry(process, score_components=components)
    t, s = forward_steps()
    tables = exponential_tables(kind, geometry, t, s, 3)
    phi_t, _ = geometry.marginal(t)
    phi_s, _ = geometry.marginal(s)
    target = phi_s[..., None] - tables["K"] @ phi_t[..., None]  # phi_s - R_s R_t^{-1} phi_t (ODE)
    assert relative(tables["W"].sum(1), target) < 1e-10


@pytest.mark.parametrize("name, process, components", processes(), ids=["CLD", "VP"])
def test_noise_weights_of_a_constant_noise_reproduce_the_factor_path(name, process, components):
    geometry = DiffusionGeometry(process, score_components=components)
    t, s = forward_steps()
    tables = exponential_tables("noise", geometry, t, s, 3)
    target = geometry.factor(s) - tables["K"] @ geometry.factor(t)  # R_s - Phi(s, t) R_t
    assert relative(tables["W"].sum(1), target) < 1e-10


def test_factor_squares_to_the_covariance_and_follows_the_linear_part_of_the_flow():
    cld = CLD()
    geometry = DiffusionGeometry(cld, score_components=[1])
    t, _ = forward_steps()
    R = geometry.factor(t)
    _, Sigma = geometry.marginal(t)
    assert relative(R @ R.transpose(-1, -2), Sigma) < 1e-10

    def linear_part(log_t, y):  # dR/dlog t = t (F + GG^T Sigma^{-1} / 2) R, integrated independently
        tt = log_t.exp().clamp_max(1.0)
        _, _, P = geometry.precision(tt)
        F, GGt = geometry.drift(tt)
        return tt * ((F + 0.5 * GGt @ P) @ y.reshape(2, 2)).reshape(-1)

    path = torchdiffeq.odeint(linear_part, R[0].reshape(-1), t.log(), rtol=1e-12, atol=1e-14)
    assert relative(path.reshape(-1, 2, 2), R) < 1e-9


def test_order_one_sde_step_is_the_exact_gaussian_posterior_of_ddpm():
    vp = VPSDE()
    geometry = DiffusionGeometry(vp)
    t, s = forward_steps(10)
    tables = exponential_tables("sde", geometry, t, s, 1)
    a_t, a_s, sig_t, sig_s = vp.alpha(t), vp.alpha(s), vp.sigma(t), vp.sigma(s)
    a_ts = a_t / a_s
    var_ts = sig_t**2 - a_ts**2 * sig_s**2
    assert relative(tables["K"][:, 0, 0], a_ts * sig_s**2 / sig_t**2) < 1e-12
    assert relative(tables["W"][:, 0, 0, 0], a_s * var_ts / sig_t**2) < 1e-10
    noise = tables["noise"][:, 0, 0] ** 2
    assert relative(noise, var_ts * sig_s**2 / sig_t**2) < 1e-10


def test_order_one_sde_step_of_cld_matches_direct_gaussian_conditioning():
    cld = CLD()
    geometry = DiffusionGeometry(cld, score_components=[1])
    t, s = forward_steps(10)
    tables = exponential_tables("sde", geometry, t, s, 1)
    _, Sigma_t = geometry.marginal(t)
    phi_s, Sigma_s = geometry.marginal(s)
    Psi = cld.transition_matrix(t, s)
    gain = Sigma_s @ Psi.transpose(-1, -2) @ torch.linalg.inv(Sigma_t)
    covariance = Sigma_s - gain @ Psi @ Sigma_s
    assert relative(tables["K"], gain) < 1e-10
    noise = tables["noise"] @ tables["noise"].transpose(-1, -2)
    assert relative(noise, covariance) < 1e-8


def test_tweedie_estimate_from_the_velocity_score_equals_the_one_from_the_full_score():
    cld = CLD()
    oracle = DiffusedGaussianMixture(diamond_mixture(), cld, cld.initial_covariance())
    geometry = DiffusionGeometry(cld, score_components=[1])
    full = DiffusionGeometry(cld)
    for t in (0.01, 0.3, 1.0):
        u = oracle.sample(50, t, torch.Generator().manual_seed(0), dtype=F64)
        D, E = geometry.tweedie(torch.tensor(t, dtype=F64))
        D2, E2 = full.tweedie(torch.tensor(t, dtype=F64))
        velocity = apply_matrix(D, u) + apply_matrix(E, oracle.component_score(u, t, [1]))
        both = apply_matrix(D2, u) + apply_matrix(E2, oracle.score(u, t))
        assert relative(velocity, both) < 1e-9


def dpm_solver_pp(vp, score, x, times, order):
    """DPM-Solver++ (data prediction) in lambda = log(alpha / sigma), written from its formulas: the exact
    integrals of the Lagrange polynomial of x0_hat in lambda (phi_1 = expm1(-h), phi_2 = phi_1 / h + 1,
    2 phi_3 = 2 (phi_2 / h - 1/2))."""
    t = [1.0 - tau for tau in times]
    tt = torch.tensor(t, dtype=F64)
    alpha, sigma, lam = vp.alpha(tt), vp.sigma(tt), vp.log_snr(tt)
    history, states = [], [x]
    for i in range(len(t) - 1):
        x0 = (x + sigma[i] ** 2 * score(x, t[i])) / alpha[i]
        history.insert(0, x0)
        q = min(order, i + 1)
        h = lam[i + 1] - lam[i]
        phi1 = torch.expm1(-h)
        phi2 = phi1 / h + 1
        phi3 = phi2 / h - 0.5
        out = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * phi1 * history[0]
        if q >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d10 = (history[0] - history[1]) / r0
            d1 = d10
            if q == 3:
                r1 = (lam[i - 1] - lam[i - 2]) / h
                d11 = (history[1] - history[2]) / r1
                d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
                out = out - 2 * alpha[i + 1] * phi3 * (d10 - d11) / (r0 + r1)
            out = out + alpha[i + 1] * phi2 * d1
        x = out
        states.append(x)
    return states


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("grid", ["log_snr", "power"])
def test_vp_exponential_ode_equals_dpm_solver_pp_written_in_the_log_snr(order, grid):
    vp = VPSDE()
    score = DiffusedGaussianMixture(diamond_mixture(), vp).score_fn()
    times = (LogSNRGrid(12, vp) if grid == "log_snr" else PowerGrid(12, 3.0)).reverse_times(1.0).tolist()
    x = torch.randn(200, 1, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    step = ExponentialODE(ReverseSDE(vp, score), order, interpolation="log_snr")
    reference = dpm_solver_pp(vp, score, x, times, order)
    # step by step from the reference's states (the mixture's flow amplifies rounding along a whole run)
    plan = plan_step(step, times, x)
    for i in range(len(times) - 1):
        assert relative(plan(reference[i], i), reference[i + 1]) < 1e-10
    # a whole run on well-conditioned (Gaussian) data
    gaussian = lambda u, t: -u / (vp.alpha(t) ** 2 * 0.25 + vp.sigma(t) ** 2)  # noqa: E731
    whole = integrate(ExponentialODE(ReverseSDE(vp, gaussian), order, interpolation="log_snr"), x, times).state
    assert relative(whole, dpm_solver_pp(vp, gaussian, x, times, order)[-1]) < 1e-10


def test_data_prediction_and_gddim_follow_the_exact_flow_of_one_data_point_but_cholesky_noise_does_not():
    cld = CLD()
    geometry = DiffusionGeometry(cld, score_components=[1])
    x0 = torch.tensor([[0.7, -1.2]], dtype=F64)

    def point_score(u, t):  # exact velocity score of the data x0: -Sigma_t^{-1} (u - phi_t x0)
        phi, _, P = geometry.precision(torch.tensor(float(t), dtype=F64))
        return apply_matrix(-P[1:], u - phi[None, :, None] * x0[:, None, :])

    reverse = ReverseSDE(cld, point_score, [1])
    times = PowerGrid(8, 3.0).reverse_times(1.0).tolist()
    u = torch.randn(5, 2, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([1.0, 1.0 - times[-1]], dtype=F64)
    R = geometry.factor(t)
    phi, _ = geometry.marginal(t)
    exact = phi[1, None, :, None] * x0[:, None] + apply_matrix(R[1] @ torch.linalg.inv(R[0]),
                                                               u - phi[0, None, :, None] * x0[:, None])
    for step in (ExponentialODE(reverse, 3), NoiseExponentialODE(reverse, 3)):
        assert (integrate(step, u, times).state - exact).abs().max().item() < 1e-9
    cholesky = integrate(NoiseExponentialODE(reverse, 3, factor="cholesky"), u, times, divergence_factor=None).state
    assert not (cholesky - exact).abs().max().item() < 1e-2


@pytest.mark.parametrize("name, steps", [("ei-ode-3", 40), ("ei-sde-2", 40), ("gddim-2", 120), ("rk4", 40)])
def test_cld_samplers_with_gaussian_data_reach_the_exact_data_moments(name, steps):
    cld = CLD()
    data_var = 0.5
    S0 = torch.diag(torch.tensor([data_var, cld.gamma * cld.mass], dtype=F64))

    def score(u, t):
        Phi, Q = cld.kernel(float(t))
        return apply_matrix(-torch.linalg.inv(Phi @ S0 @ Phi.T + Q)[1:], u)

    n = 20_000
    solution = sample(cld, score, (n, 1), PowerGrid(steps, 3.0), step=name, dtype=F64,
                      generator=torch.Generator().manual_seed(3))
    x = solution.state[:, 0, 0]
    error = 4 * data_var * math.sqrt(2 / n)  # four standard errors of the sample variance
    assert abs(x.var().item() - data_var) < error and abs(x.mean().item()) < 4 * math.sqrt(data_var / n)


@pytest.mark.parametrize("step_type, nfe", [(ExponentialODE, 1), (ExponentialSDE, 1), (ProbabilityFlowHeun, 2),
                                            (ProbabilityFlowRK4, 4)])
def test_nfe_counts_real_evaluations_and_a_replanned_run_repeats_exactly(step_type, nfe):
    cld = CLD()
    reverse = ReverseSDE(cld, DiffusedGaussianMixture(diamond_mixture(), cld, cld.initial_covariance()).score_fn([1]), [1])
    step = step_type(reverse) if step_type not in (ExponentialODE, ExponentialSDE) else step_type(reverse, 3)
    times = PowerGrid(6, 3.0).reverse_times(1.0).tolist()
    u = cld.prior_sample((30, 2), torch.Generator().manual_seed(0), dtype=F64)
    plan = plan_step(step, times, u)
    runs = []
    for _ in range(2):  # the same plan twice: the history is reset at step 0
        state, generator = u, GaussianNoise(torch.Generator().manual_seed(5))
        for i in range(len(times) - 1):
            state = plan(state, i, generator)
        runs.append(state)
    assert evaluation_count(plan) == 2 * 6 * nfe == 2 * 6 * step.nfe
    assert torch.equal(runs[0], runs[1])


def test_bad_arguments_are_refused_with_the_argument_named():
    cld = CLD()
    reverse = ReverseSDE(cld, lambda u, t: u[:, 1:], [1])
    with pytest.raises(ValueError, match="order"):
        ExponentialODE(reverse, 4)
    with pytest.raises(TypeError, match="order"):
        ExponentialODE(reverse, 2.5)
    with pytest.raises(TypeError, match="log_snr"):
        ExponentialODE(reverse, 2, interpolation="log_snr")
    with pytest.raises(ValueError, match="interpolation"):
        ExponentialSDE(reverse, 2, interpolation="sigma")
    with pytest.raises(ValueError, match="factor"):
        NoiseExponentialODE(reverse, 2, factor="qr")
    with pytest.raises(ValueError, match="factor"):
        ExponentialSDE(reverse, 2, factor="cholesky")
    with pytest.raises(ValueError, match="score_components"):
        DiffusionGeometry(cld, score_components=[2])
    t, s = forward_steps(4)
    with pytest.raises(ValueError, match="kind"):
        exponential_tables("ddim", DiffusionGeometry(cld), t, s, 1)
    with pytest.raises(ValueError, match="width"):
        log_quadrature(t, s, width=0.0)
    with pytest.raises(TypeError, match="reverse"):
        ExponentialODE(object(), 2)
    with pytest.raises(ValueError, match="initial_covariance"):
        ExponentialODE(reverse, 2, initial_covariance=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="contiguous"):
        ExponentialODE(reverse, 2).plan(Intervals(torch.tensor([0.0, 0.5], dtype=F64),
                                                  torch.tensor([0.1, 0.1], dtype=F64)), torch.zeros(1, 2, 1))
    with pytest.raises(ValueError, match="eps"):
        ExponentialODE(reverse, 1).plan(Intervals.from_grid([0.0, 0.5, 1.0]), torch.zeros(1, 2, 1))


def test_named_samplers_build_the_documented_steps():
    from splitdyn.sample import sampler_step

    vp = VPSDE()
    reverse = ReverseSDE(vp, lambda u, t: -u)
    expected = {"ei-ode-3": (ExponentialODE, 3, "time"), "ei-sde-2": (ExponentialSDE, 2, "time"),
                "gddim-2": (NoiseExponentialODE, 2, "time"), "dpmpp-1": (ExponentialODE, 1, "log_snr"),
                "dpmpp-2m": (ExponentialODE, 2, "log_snr"), "dpmpp-3m": (ExponentialODE, 3, "log_snr")}
    for name, (cls, order, variable) in expected.items():
        step = sampler_step(name, reverse)
        assert type(step) is cls and step.order == order and step.interpolation == variable
    assert type(sampler_step("heun", reverse)) is ProbabilityFlowHeun
    assert type(sampler_step("rk4", reverse)) is ProbabilityFlowRK4


def test_cumulative_products_by_doubling_equal_the_sequential_products():
    steps = torch.linalg.matrix_exp(0.1 * torch.randn(37, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64))
    current, expected = torch.eye(3, dtype=F64), []
    for step in steps:
        current = step @ current
        expected.append(current)
    assert (cumulative_products(steps) - torch.stack(expected)).abs().max().item() < 1e-13


@pytest.mark.parametrize("kind", ["ode", "sde", "noise"])
@pytest.mark.parametrize("name, process, components", processes(), ids=["CLD", "VP"])
def test_batched_planning_equals_the_per_step_loop(kind, name, process, components):
    """The tables batched over the steps equal a step-by-step quadrature and Lagrange basis to 1e-13."""
    geometry = DiffusionGeometry(process, score_components=components)
    t, s = forward_steps(12)
    variable = "log_snr" if name == "VP" and kind == "ode" else "time"
    rho = interpolation_variable(process, variable)
    tables = exponential_tables(kind, geometry, t, s, 3, variable)
    tau, omega = log_quadrature(t, s)
    left, values = weight_integrand(kind, geometry, s, tau, "R")
    for i in range(len(t)):
        tau_i, omega_i = log_quadrature(t[i: i + 1], s[i: i + 1])  # this step's rule alone
        P = tau_i.shape[1]
        assert torch.equal(tau_i[0], tau[i, :P]) and torch.equal(omega_i[0], omega[i, :P])
        assert not omega[i, P:].any()
        q = min(3, i + 1)
        basis = lagrange_basis(rho(t[i - q + 1: i + 1].flip(0))[None], rho(tau_i))[0]
        expected = left[i] @ torch.einsum("p,jp,pkm->jkm", omega_i[0], basis, values[i, :P])
        assert relative(tables["W"][i, :q], expected) < 1e-13
