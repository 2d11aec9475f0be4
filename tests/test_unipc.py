"""UniPC and both DPM-Solver++(2M) forms: against diffusers' schedulers for VP, and the general-k rules.

Oracles: diffusers' ``UniPCMultistepScheduler`` (predict_x0) and ``DPMSolverMultistepScheduler``
(dpmsolver++) run on the same grid (their sigmas overwritten with ours) and the same deterministic
epsilon model; the declared weak orders are measured from exact Gaussian moments in tests/test_steps.py.
"""

from __future__ import annotations

import pytest
import torch

from splitdyn import (
    VPSDE,
    ExponentialODE,
    ExponentialSDE,
    LogSNRGrid,
    PowerGrid,
    ReverseSDE,
    UniPC,
    integrate,
    sample,
)
from splitdyn.integrate import plan_step
from splitdyn.steps.base import evaluation_count
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn.steps.exponential import (
    exponential_tables,
    linear_rule_weights,
    log_quadrature,
    weight_integrand,
)
from splitdyn.steps.exponential_weights import DiffusionGeometry
from splitdyn.steps.unipc import unipc_orders, unipc_tables
from splitdyn_cld import CLD

diffusers = pytest.importorskip("diffusers")
F64 = torch.float64
VP = VPSDE()


def epsilon_model(x, t):
    """A fixed nonlinear epsilon prediction of (x, t), x of shape (batch, 2)."""
    A = torch.tensor([[0.9, -0.4], [0.3, 0.7]], dtype=F64)
    return 0.6 * torch.tanh(x @ A.T + 0.5 * t) + 0.3 * x * (1 + t)


def score(u, t):  # our convention: s = -epsilon / sigma_t, state (batch, 1, 2)
    t = float(t)
    return -epsilon_model(u[:, 0], t)[:, None] / VP.sigma(torch.tensor(t, dtype=F64)).item()


def grid_times(n, kind="power"):
    grid = PowerGrid(n, 3.0) if kind == "power" else LogSNRGrid(n, VP)
    times = grid.reverse_times(VP.T)
    return times.tolist(), (VP.T - times)  # reverse grid and forward times t_0 = T > ... > t_n = eps


def run_diffusers(scheduler, forward_t, x):
    n = len(forward_t) - 1
    scheduler.set_timesteps(n)
    scheduler.sigmas = VP.sigma(forward_t) / VP.alpha(forward_t)  # variance-exploding sigmas of our nodes
    assert len(scheduler.timesteps) == n
    for i, timestep in enumerate(scheduler.timesteps):
        x = scheduler.step(epsilon_model(x, float(forward_t[i])), timestep, x).prev_sample
    return x


def start(batch=64):
    return torch.randn(batch, 2, generator=torch.Generator().manual_seed(0), dtype=F64)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("lower_order_final", [False, True])
def test_vp_unipc_equals_diffusers_unipc(order, variant, lower_order_final):
    times, forward_t = grid_times(8)
    x = start()
    scheduler = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=variant, predict_x0=True,
                                                  lower_order_final=lower_order_final)
    reference = run_diffusers(scheduler, forward_t, x)
    step = UniPC(ReverseSDE(VP, score), order, variant, interpolation="log_snr", lower_order_final=lower_order_final)
    ours = integrate(step, x[:, None], times).state[:, 0]
    assert (ours - reference).abs().max().item() < 1e-6
    if order > 1:  # the comparison can fail: the other variant differs
        other = UniPC(ReverseSDE(VP, score), order, "bh1" if variant == "bh2" else "bh2", interpolation="log_snr",
                      lower_order_final=lower_order_final)
        assert (integrate(other, x[:, None], times).state[:, 0] - reference).abs().max().item() > 1e-4


@pytest.mark.parametrize("name, solver_type", [("dpmpp-2m-midpoint", "midpoint"), ("dpmpp-2m-heun", "heun"),
                                               ("dpmpp-2m", "midpoint")])
@pytest.mark.parametrize("grid", ["power", "log_snr"])
def test_both_dpm_solver_pp_2m_forms_equal_diffusers(name, solver_type, grid):
    times, forward_t = grid_times(10, grid)
    x = start()
    scheduler = diffusers.DPMSolverMultistepScheduler(solver_order=2, algorithm_type="dpmsolver++",
                                                      solver_type=solver_type, lower_order_final=False,
                                                      final_sigmas_type="sigma_min")
    reference = run_diffusers(scheduler, forward_t, x)
    ours = sample(VP, score, x[:, None], times, step=name, denoise=False).state[:, 0]
    # relative: diffusers' DPMSolverMultistepScheduler.step casts the sample to float32 at every step (its
    # states here reach 15, so its own rounding is ~4e-6 absolute); UniPC's scheduler keeps float64
    scale = reference.abs().max().item()
    assert (ours - reference).abs().max().item() < 1e-6 * scale
    other = "dpmpp-2m-heun" if solver_type == "midpoint" else "dpmpp-2m-midpoint"
    assert (sample(VP, score, x[:, None], times, step=other, denoise=False).state[:, 0]
            - reference).abs().max().item() > 1e-4 * scale


def test_unipc_orders_warm_up_and_lower_the_final_orders():
    assert unipc_orders(5, 3) == [1, 2, 3, 3, 3]
    assert unipc_orders(5, 3, True) == [1, 2, 3, 2, 1]
    assert unipc_orders(2, 2, True) == [1, 1]


@pytest.mark.parametrize("name, process, components", [("CLD", CLD(), [1]), ("VP", VP, None)], ids=["CLD", "VP"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_weights_of_a_constant_estimate_reproduce_the_mean_path(name, process, components, variant):
    """Every predictor and corrector row integrates a constant x0_hat exactly (the B(h) rules included)."""
    geometry = DiffusionGeometry(process, score_components=components)
    tau = PowerGrid(12, 3.0).reverse_times(1.0)
    t, s = 1.0 - tau[:-1], 1.0 - tau[1:]
    tables = unipc_tables(geometry, t, s, 3, variant)
    phi_t, _ = geometry.marginal(t)
    phi_s, _ = geometry.marginal(s)
    target = phi_s[..., None] - tables["K"] @ phi_t[..., None]
    assert ((tables["predictor"].sum(1) - target).abs().max() / target.abs().max()).item() < 1e-10
    assert ((tables["corrector"][1:].sum(1) - target[:-1]).abs().max() / target.abs().max()).item() < 1e-10
    assert tables["corrector"][0].abs().max().item() == 0.0


def test_bh1_weight_is_the_end_point_density_and_bh2_the_total_weight_for_vp():
    """VP in the log-SNR: B = alpha_s h (bh1) and alpha_s (1 - e^{-h}) (bh2), UniPC's B(h) = h and e^h - 1."""
    geometry = DiffusionGeometry(VP)
    tau = PowerGrid(6, 3.0).reverse_times(1.0)
    t, s = 1.0 - tau[1:-1], 1.0 - tau[2:]
    other = 1.0 - tau[:-2]
    q, w = log_quadrature(t, s)
    left, values = weight_integrand("ode", geometry, s, q, "R")
    h = VP.log_snr(s) - VP.log_snr(t)
    r = (VP.log_snr(other) - VP.log_snr(t)) / h
    alpha_s = VP.alpha(s)
    for rule, B in (("bh1", alpha_s * h), ("bh2", alpha_s * -torch.expm1(-h))):
        W = linear_rule_weights(rule, geometry, "log_snr", left, values, w, t, s, other)[..., 0, 0]
        assert ((W[:, 1] - 0.5 * B / r).abs().max() / B.abs().max()).item() < 1e-10
        assert ((W.sum(1) - alpha_s * -torch.expm1(-h)).abs().max()).item() < 1e-10


def test_linear_rule_changes_only_the_two_node_steps():
    geometry = DiffusionGeometry(VP)
    tau = PowerGrid(6, 3.0).reverse_times(1.0)
    t, s = 1.0 - tau[:-1], 1.0 - tau[1:]
    exact = exponential_tables("ode", geometry, t, s, 3, "log_snr")["W"]
    midpoint = exponential_tables("ode", geometry, t, s, 3, "log_snr", linear_rule="bh2")["W"]
    assert torch.equal(exact[[0, 2, 3, 4, 5]], midpoint[[0, 2, 3, 4, 5]])
    assert (exact[1] - midpoint[1]).abs().max().item() > 1e-6


def test_cld_unipc_samples_gaussian_data_to_the_exact_moments():
    cld = CLD()
    data_var = 0.5
    S0 = torch.diag(torch.tensor([data_var, cld.gamma * cld.mass], dtype=F64))

    def gaussian_score(u, t):
        Phi, Q = cld.kernel(float(t))
        return torch.einsum("ij,bj...->bi...", -torch.linalg.inv(Phi @ S0 @ Phi.T + Q)[1:], u)

    n = 20_000
    for name in ("unipc-2", "unipc-3-bh1"):
        x = sample(cld, gaussian_score, (n, 1), PowerGrid(20, 4.0), step=name, dtype=F64, denoise="score-free",
                   generator=torch.Generator().manual_seed(3)).state[:, 0, 0]
        assert abs(x.var().item() - data_var) < 4 * data_var * (2 / n) ** 0.5 and abs(x.mean().item()) < 0.03


def test_unipc_plan_repeats_exactly_and_counts_one_evaluation_per_step():
    cld = CLD()
    reverse = ReverseSDE(cld, DiffusedGaussianMixture(diamond_mixture(), cld, cld.initial_covariance()).score_fn([1]), [1])
    times = PowerGrid(6, 3.0).reverse_times(1.0).tolist()
    u = cld.prior_sample((30, 2), torch.Generator().manual_seed(0), dtype=F64)
    plan = plan_step(UniPC(reverse, 3), times, u)
    runs = []
    for _ in range(2):
        state = u
        for i in range(6):
            state = plan(state, i)
        runs.append(state)
    assert evaluation_count(plan) == 12 and torch.equal(runs[0], runs[1])


def test_bad_arguments_are_refused_with_the_argument_named():
    reverse = ReverseSDE(CLD(), lambda u, t: u[:, 1:], [1])
    with pytest.raises(ValueError, match="variant"):
        UniPC(reverse, 2, "bh3")
    with pytest.raises(ValueError, match="order"):
        UniPC(reverse, 4)
    with pytest.raises(TypeError, match="lower_order_final"):
        UniPC(reverse, 2, lower_order_final=1)
    with pytest.raises(TypeError, match="log_snr"):
        UniPC(reverse, 2, interpolation="log_snr")
    with pytest.raises(ValueError, match="linear_rule"):
        ExponentialODE(reverse, 2, linear_rule="midpoint")
    with pytest.raises(ValueError, match="linear_rule"):
        ExponentialSDE(reverse, 2, linear_rule="bh1")
