"""Warm-up: dual averaging reaches its target acceptance, the windowed mass matrix recovers variances, the tuned
kernels sample an ill-conditioned 100-D Gaussian within Monte-Carlo error, the unadjusted tuner meets its
energy target with a stated bias, and warm-up is deterministic and works for 1, 4 and 1000 chains.

Oracles: exact Gaussian moments; for logistic regression only the acceptance (a property of the run itself);
Monte-Carlo standard errors from the ESS (arviz-stats)."""

import math

import pytest
import torch

from splitdyn.mcmc import (GHMC, HMC, MALA, TARGET_ACCEPTANCE, LogDensity, Potential, effective_sample_size,
                           kinetic_langevin, run_chain, tuned_step, warmup, with_momentum)
from splitdyn.mcmc.adaptation import DualAveraging, WindowedCovariance, window_schedule

F64 = torch.float64
SD10 = torch.logspace(-1, 1, 10, dtype=F64)  # standard deviations 0.1 .. 10
GAUSS10 = Potential(lambda x: 0.5 * (x**2 / SD10**2).sum(-1), lambda x: x / SD10**2)


def logistic_target(seed=0, rows=200, features=5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(rows, features, generator=g, dtype=F64)
    w = torch.randn(features, generator=g, dtype=F64)
    y = torch.bernoulli(torch.sigmoid(X @ w), generator=g)

    def log_prob(beta):  # (chains, features); N(0, 1) prior
        logits = beta @ X.T
        return (y * logits - torch.nn.functional.softplus(logits)).sum(-1) - 0.5 * (beta**2).sum(-1)

    return LogDensity(log_prob)


def start(chains, dim, kinetic, seed=0, scale=1.0):
    x = scale * torch.randn(chains, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return with_momentum(x, generator=torch.Generator().manual_seed(seed + 1)) if kinetic else x[:, None]


def test_window_schedule_is_stans():
    assert window_schedule(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    windows = window_schedule(100)  # short: 15% / 75% / 10%
    assert windows[0][0] == 15 and windows[-1][1] == 90
    assert window_schedule(10) == []


def test_dual_averaging_converges_on_a_known_acceptance_curve():
    # acceptance exp(-h) (a smooth decreasing curve): the fixed point is h* = -log(target)
    averaging = DualAveraging(1.0, 0.8)
    h = 1.0
    for _ in range(2000):
        h = averaging.update(math.exp(-h))
    assert abs(averaging.step_size - (-math.log(0.8))) < 0.02 * -math.log(0.8)


def test_windowed_covariance_pools_batches_exactly():
    x = torch.randn(7, 50, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    for dense in (False, True):
        est = WindowedCovariance(dense)
        for batch in x:
            est.update(batch)
        flat = x.reshape(-1, 3)
        exact = torch.cov(flat.T) if dense else flat.var(0)
        assert torch.allclose(est.estimate(regularise=False), exact, rtol=1e-12)


@pytest.mark.parametrize("kind", ["MALA", "HMC", "GHMC"])
@pytest.mark.parametrize("target", ["gaussian", "logistic"])
def test_dual_averaging_reaches_its_target_acceptance(kind, target):
    potential, dim = (GAUSS10, 10) if target == "gaussian" else (logistic_target(), 5)
    step = {"MALA": MALA(potential), "HMC": HMC(potential, 5), "GHMC": GHMC(potential)}[kind]
    u = start(64, dim, kind == "GHMC", scale=0.5)
    tuned = warmup(step, u, 400, generator=torch.Generator().manual_seed(1))
    out = run_chain(tuned.step, tuned.state, 200, tuned.step_size, generator=torch.Generator().manual_seed(2),
                    keep=False)
    acceptance = out.acceptance_probability.mean().item()
    print(f"\n{kind} on {target}: h = {tuned.step_size:.3g}, acceptance {acceptance:.3f} "
          f"(target {TARGET_ACCEPTANCE[kind]}), warm-up {tuned.nfe} gradients")
    assert abs(acceptance - TARGET_ACCEPTANCE[kind]) < 0.05


@pytest.mark.parametrize("kind", ["MALA", "HMC", "BAOAB"])
def test_the_adapted_diagonal_mass_matrix_recovers_the_variances(kind):
    step = {"MALA": MALA(GAUSS10), "HMC": HMC(GAUSS10, 5), "BAOAB": kinetic_langevin(GAUSS10)}[kind]
    tuned = warmup(step, start(128, 10, kind == "BAOAB", scale=1.0), 400, generator=torch.Generator().manual_seed(3))
    ratio = tuned.parameters["inverse_mass"] / SD10**2
    print(f"\n{kind}: adapted variances / exact in [{ratio.min():.3f}, {ratio.max():.3f}]")
    assert ((ratio - 1.0).abs() < 0.10).all(), ratio


def test_a_dense_mass_matrix_recovers_a_correlated_covariance():
    S = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.04]], dtype=F64)
    P = torch.linalg.inv(S)
    target = Potential(lambda x: 0.5 * ((x @ P) * x).sum(-1), lambda x: x @ P)
    tuned = warmup(HMC(target, 5), start(128, 3, False), 400, mass_matrix="dense",
                   generator=torch.Generator().manual_seed(4))
    C = tuned.parameters["inverse_mass"]
    assert tuned.step.mass_matrix.kind == "dense" and ((C - S).abs() / S.diag().sqrt().outer(S.diag().sqrt())).max() < 0.1


def _z_scores(samples, mean, sd):
    """z of the means (MCSE from the ESS of x) and of the variances (MCSE from the ESS of (x - mean)^2, as
    arviz's mcse of the sd does: HMC's draws can be anticorrelated in x and correlated in x^2)."""
    m = samples.mean((0, 1))
    square = (samples - m) ** 2
    z_mean = (m - mean) / (samples.std((0, 1)) / effective_sample_size(samples).sqrt())
    z_var = (square.mean((0, 1)) - sd**2) / (square.std((0, 1)) / effective_sample_size(square).sqrt())
    return z_mean, z_var


@pytest.mark.parametrize("kind", ["MALA", "HMC"])
def test_tuned_kernels_sample_an_ill_conditioned_100d_gaussian(kind):
    sd = torch.logspace(-2, 0, 100, dtype=F64)  # condition number 10^4
    target = Potential(lambda x: 0.5 * (x**2 / sd**2).sum(-1), lambda x: x / sd**2)
    step = MALA(target) if kind == "MALA" else HMC(target, 8)
    tuned = warmup(step, start(32, 100, False, scale=0.1), 500, generator=torch.Generator().manual_seed(5))
    out = run_chain(tuned.step, tuned.state, 400, tuned.step_size, generator=torch.Generator().manual_seed(6))
    z_mean, z_sd = _z_scores(out.samples, torch.zeros(100, dtype=F64), sd)
    print(f"\n{kind} 100-D: h = {tuned.step_size:.3g}, max |z| mean {z_mean.abs().max():.2f}, sd {z_sd.abs().max():.2f}")
    assert z_mean.abs().max() < 4 and z_sd.abs().max() < 4


def test_the_kinetic_tuner_meets_its_energy_target_with_a_small_stated_bias():
    tuned = warmup(kinetic_langevin(GAUSS10, "BAOAB"), start(128, 10, True), 400,
                   generator=torch.Generator().manual_seed(7))
    assert 0.5 * 5e-4 < tuned.energy_variance < 2 * 5e-4
    out = run_chain(tuned.step, tuned.state, 400, tuned.step_size, generator=torch.Generator().manual_seed(8))
    ratio = out.samples.var((0, 1)) / SD10**2
    # the stated bias: at 5e-4 per dimension BAOAB's stationary variances are within 3% (BAOAB is exact in q for
    # a Gaussian in the limit of high friction; here it is a few 0.1%), plus Monte-Carlo error (~3% here)
    print(f"\nBAOAB tuned h = {tuned.step_size:.3g}, variance ratios in [{ratio.min():.3f}, {ratio.max():.3f}]")
    assert ((ratio - 1.0).abs() < 0.08).all()


def test_warmup_is_deterministic_and_replays_from_its_parameters():
    runs = [warmup(MALA(GAUSS10), start(8, 10, False), 150, generator=torch.Generator().manual_seed(9))
            for _ in range(2)]
    assert runs[0].step_size == runs[1].step_size and torch.equal(runs[0].state, runs[1].state)
    assert torch.equal(runs[0].parameters["inverse_mass"], runs[1].parameters["inverse_mass"])
    replay = tuned_step(GAUSS10, runs[0].parameters)
    a = run_chain(replay, runs[0].state, 20, runs[0].step_size, generator=torch.Generator().manual_seed(1)).state
    b = run_chain(runs[0].step, runs[0].state, 20, runs[0].step_size, generator=torch.Generator().manual_seed(1)).state
    assert torch.equal(a, b)


@pytest.mark.parametrize("chains", [1, 4, 1000])
@pytest.mark.parametrize("kind", ["HMC", "BAOAB"])
def test_warmup_works_for_1_4_and_1000_chains(chains, kind):
    step = HMC(GAUSS10, 4) if kind == "HMC" else kinetic_langevin(GAUSS10)
    tuned = warmup(step, start(chains, 10, kind == "BAOAB"), 120, generator=torch.Generator().manual_seed(10))
    assert tuned.state.shape[0] == chains and math.isfinite(tuned.step_size) and tuned.step_size > 0
    assert bool(torch.isfinite(tuned.state).all()) and tuned.nfe > 0


def test_chees_adapts_a_trajectory_length_and_refuses_one_chain():
    tuned = warmup(HMC(GAUSS10, 5), start(256, 10, False), 300, trajectory="chees",
                   generator=torch.Generator().manual_seed(11))
    T = tuned.parameters["n_leapfrog"] * tuned.step_size
    print(f"\nChEES: T = {T:.2f} (L = {tuned.parameters['n_leapfrog']}, h = {tuned.step_size:.3g})")
    assert 0.3 < T < 20 and tuned.step.jitter == 1.0
    with pytest.raises(ValueError, match="at least 2 chains"):
        warmup(HMC(GAUSS10), start(1, 10, False), 100, trajectory="chees")


def test_bad_warmup_arguments_are_refused_naming_them():
    with pytest.raises(TypeError, match="step"):
        warmup(object(), start(4, 10, False))
    with pytest.raises(ValueError, match="mass_matrix"):
        warmup(MALA(GAUSS10), start(4, 10, False), mass_matrix="full")
    with pytest.raises(ValueError, match="trajectory"):
        warmup(MALA(GAUSS10), start(4, 10, False), trajectory="chees")
    with pytest.raises(ValueError, match=r"\(chains, 2"):
        warmup(GHMC(GAUSS10), start(4, 10, False))
    with pytest.raises(TypeError, match="progress"):
        warmup(MALA(GAUSS10), start(4, 10, False), 30, progress="yes")
    assert warmup(MALA(GAUSS10), start(4, 10, False), 30, progress=True).step_size > 0
