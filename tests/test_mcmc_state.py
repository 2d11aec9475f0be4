"""No hidden state: what a kernel reuses travels with an explicit ChainState, and a plan's cache is validated.

Oracle: a fresh plan (no cache) applied to the edited state with the same generator seed. Also: evaluation
counts are the calls made (the user's gradient counted by hand), and the scalar, diagonal and dense metrics
agree draw for draw when the matrix is c * I; the dense metric keeps a correlated Gaussian exactly.
"""

import math

import pytest
import torch

from splitdyn import Intervals
from splitdyn.steps.noise import GaussianNoise
from splitdyn.mcmc import (GHMC, HMC, MALA, SGLD, ULA, ChainState, MassMatrix, MomentumOU, Potential, kinetic_langevin,
                           run_chain, with_momentum)

F64 = torch.float64
DOUBLE_WELL = Potential(lambda x: ((x**2 - 1.0) ** 2).sum(-1), lambda x: 4.0 * x * (x**2 - 1.0))

KERNELS = {
    "ULA": (lambda: ULA(DOUBLE_WELL), 1),
    "SGLD": (lambda: SGLD(DOUBLE_WELL), 1),
    "MALA": (lambda: MALA(DOUBLE_WELL), 1),
    "MALA diagonal": (lambda: MALA(DOUBLE_WELL, inverse_mass=torch.tensor([0.5, 2.0], dtype=F64)), 1),
    "HMC": (lambda: HMC(DOUBLE_WELL, 3, jitter=0.0), 1),  # jitter indexes the plan's iteration count
    "GHMC": (lambda: GHMC(DOUBLE_WELL, n_leapfrog=2), 2),
    "BAOAB": (lambda: kinetic_langevin(DOUBLE_WELL, "BAOAB"), 2),
    "OBABO dense": (lambda: kinetic_langevin(DOUBLE_WELL, "OBABO", inverse_mass=torch.tensor(
        [[1.0, 0.3], [0.3, 0.5]], dtype=F64)), 2),
    "MomentumOU": (lambda: MomentumOU(1.0), 2),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("edit", ["add_", "setitem"])
def test_a_state_edited_in_place_is_stepped_like_a_fresh_state(name, edit):
    factory, k = KERNELS[name]
    x = 0.7 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    u0 = x[:, None] if k == 1 else with_momentum(x, generator=torch.Generator().manual_seed(1))
    step = factory()
    plan = step.plan(Intervals.from_grid([0.0, 0.1, 0.2]), u0)
    u1 = plan(u0, 0, GaussianNoise(torch.Generator().manual_seed(2)))
    if edit == "add_":
        u1.add_(0.5)
    else:
        u1[:, 0] = u1[:, 0] * -1.0 + 0.25
    after = plan(u1, 1, GaussianNoise(torch.Generator().manual_seed(3)))
    fresh = factory().plan(Intervals.from_grid([0.0, 0.1, 0.2]), u0)(u1.clone(), 1, GaussianNoise(torch.Generator().manual_seed(3)))
    assert torch.allclose(after, fresh, rtol=0, atol=1e-12), (after - fresh).abs().max()


@pytest.mark.parametrize("name", ["MALA", "HMC", "GHMC", "BAOAB"])
def test_an_unedited_state_reuses_its_gradient_and_counts_are_the_calls_made(name):
    calls = [0]

    def gradient(x):
        calls[0] += 1
        return 4.0 * x * (x**2 - 1.0)

    target = Potential(lambda x: ((x**2 - 1.0) ** 2).sum(-1), gradient)
    step = {"MALA": MALA(target), "HMC": HMC(target, 4), "GHMC": GHMC(target, n_leapfrog=3),
            "BAOAB": kinetic_langevin(target)}[name]
    x = 0.5 * torch.randn(8, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    u = with_momentum(x) if name in ("GHMC", "BAOAB") else x[:, None]
    out = run_chain(step, u, 50, 0.1, generator=torch.Generator().manual_seed(1))
    assert out.nfe == calls[0]
    if name == "HMC":  # jittered lengths: the count is the sum of the actual L_k, not 50 * 4
        assert out.nfe == 1 + sum(step.leapfrog_steps(k) for k in range(1, 51)) and out.nfe != 1 + 50 * 4
    else:
        assert out.nfe == 1 + 50 * {"MALA": 1, "GHMC": 3, "BAOAB": 1}[name]  # BAOAB: its two kicks share one


def test_explicit_states_need_no_plan_and_match_the_plan():
    step = MALA(DOUBLE_WELL)
    x = 0.5 * torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    state = step.init(x)
    assert isinstance(state, ChainState) and torch.allclose(state.gradient, DOUBLE_WELL.gradient(x))
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        state, info = step.transition(state, 0.1, g)
    planned = run_chain(step, x[:, None], 5, 0.1, generator=torch.Generator().manual_seed(4)).state
    assert torch.allclose(state.as_tensor(), planned, rtol=1e-12, atol=1e-12)  # spans from a grid: rounding
    assert torch.allclose(state.energy, DOUBLE_WELL.energy(state.position), rtol=1e-14)


SCALED = 0.6  # M^{-1} = 0.6 I in three forms, and mass = 1 / 0.6


@pytest.mark.parametrize("kind", ["MALA", "HMC", "GHMC", "BAOAB"])
def test_scalar_diagonal_and_dense_metrics_agree_draw_for_draw(kind):
    forms = [dict(inverse_mass=SCALED), dict(inverse_mass=torch.full((3,), SCALED, dtype=F64)),
             dict(inverse_mass=SCALED * torch.eye(3, dtype=F64))]
    x = 0.5 * torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    states = []
    for form in forms:
        factory = {"MALA": lambda f: MALA(DOUBLE_WELL, **f), "HMC": lambda f: HMC(DOUBLE_WELL, 3, **f),
                   "GHMC": lambda f: GHMC(DOUBLE_WELL, **f), "BAOAB": lambda f: kinetic_langevin(DOUBLE_WELL, **f)}
        step = factory[kind](form)
        u = x[:, None] if kind in ("MALA", "HMC") else torch.stack((x, torch.ones_like(x)), 1)
        states.append(run_chain(step, u, 20, 0.1, generator=torch.Generator().manual_seed(1)).state)
    assert torch.allclose(states[0], states[1], rtol=1e-12, atol=1e-12)
    assert torch.allclose(states[0], states[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["MALA", "HMC", "GHMC"])
def test_a_dense_metric_keeps_a_correlated_gaussian_exactly(kind):
    # start from exact draws of N(0, S); a correct MH kernel keeps that law at any step size and any metric
    S = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    P = torch.linalg.inv(S)
    target = Potential(lambda x: 0.5 * ((x @ P) * x).sum(-1), lambda x: x @ P)
    metric = torch.tensor([[1.0, -0.5], [-0.5, 2.0]], dtype=F64)  # deliberately not S: any SPD metric is valid
    chains = 20000
    x = torch.randn(chains, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) @ torch.linalg.cholesky(S).T
    step = {"MALA": MALA(target, inverse_mass=metric), "HMC": HMC(target, 3, inverse_mass=metric),
            "GHMC": GHMC(target, inverse_mass=metric)}[kind]
    u = x[:, None] if kind != "GHMC" else torch.stack((x, MassMatrix(metric).momentum(x)), 1)
    out = run_chain(step, u, 10, 0.4, generator=torch.Generator().manual_seed(1), keep=False)
    y = out.state[:, 0]
    cov = y.T @ y / chains
    se = math.sqrt(2.0 / chains)  # standard error of a unit-variance Gaussian's second moment, about
    assert (cov - S).abs().max() < 5 * se * 1.3, cov
    assert 0.2 < out.acceptance_rate.mean() < 1.0
