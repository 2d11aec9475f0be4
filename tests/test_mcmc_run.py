"""Running chains: no horizon and memory independent of length, the same loop as integrate, first-same-as-last,
components, temperature, diagnostics (ESS against the AR(1) closed form) and bad input."""

import math
import resource
import sys

import pytest
import torch

from splitdyn import integrate, splitting
from splitdyn.mcmc import (
    GHMC,
    HMC,
    MALA,
    SGLD,
    ULA,
    AnnealedLangevin,
    LogDensity,
    MomentumOU,
    Potential,
    StochasticGradient,
    effective_sample_size,
    kinetic_langevin,
    langevin_parts,
    plot_chains,
    rhat,
    run_chain,
    sgld_grid,
    with_momentum,
)

F64 = torch.float64
DOUBLE_WELL = Potential(lambda x: ((x**2 - 1.0) ** 2).sum(-1), lambda x: 4.0 * x * (x**2 - 1.0))


def test_a_chain_of_1e5_steps_needs_no_horizon_and_memory_independent_of_its_length():
    step = kinetic_langevin(DOUBLE_WELL, "BAOAB", friction=1.0)
    u = with_momentum(torch.zeros(16, 1, dtype=F64), generator=torch.Generator().manual_seed(0))
    run_chain(step, u, 2000, 0.1, keep=False)  # warm up allocator and code paths
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = run_chain(step, u, 100_000, 0.1, generator=torch.Generator().manual_seed(1), keep=False)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"\npeak RSS growth over 1e5 BAOAB steps: {grown_mib:.1f} MiB, t = 1e4 >> any horizon")
    assert grown_mib < 20 and bool(torch.isfinite(out.state).all())
    assert out.nfe == 100_001  # one gradient per step (the force is reused across steps and planned blocks)
    generic = splitting("BAOAB", langevin_parts(DOUBLE_WELL))  # the composition re-evaluates once per block
    assert run_chain(generic, u, 3000, 0.1, keep=False).nfe == 3000 + math.ceil(3000 / 1024)


@pytest.mark.parametrize("kind", ["ULA", "BAOAB", "MALA"])
def test_run_chain_is_the_integrate_loop_draw_for_draw(kind):
    x = 0.5 * torch.randn(32, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    step, u = {"ULA": (ULA(DOUBLE_WELL), x[:, None]), "MALA": (MALA(DOUBLE_WELL), x[:, None]),
               "BAOAB": (kinetic_langevin(DOUBLE_WELL, "BAOAB"), with_momentum(x))}[kind]
    grid = torch.arange(51, dtype=F64) * 0.05
    a = integrate(step, u, grid, generator=torch.Generator().manual_seed(1))
    b = run_chain(step, u, 50, 0.05, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.state, b.state) and a.nfe == b.nfe


@pytest.mark.parametrize("sequence", ["BAOAB", "OBABO", "ABOBA", "OABAO", "BAOOAB"])
def test_the_in_place_kinetic_step_is_the_composition_of_the_parts_draw_for_draw(sequence):
    u = with_momentum(0.5 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=F64))
    before = u.clone()
    fused = run_chain(kinetic_langevin(DOUBLE_WELL, sequence, friction=0.7, mass=2.0), u, 40, 0.1,
                      generator=torch.Generator().manual_seed(1))
    generic = run_chain(splitting(sequence, langevin_parts(DOUBLE_WELL, friction=0.7, mass=2.0)), u, 40, 0.1,
                        generator=torch.Generator().manual_seed(1))
    assert torch.allclose(fused.state, generic.state, rtol=1e-13, atol=1e-13)
    assert torch.equal(u, before)  # the input is not modified
    assert fused.nfe == generic.nfe


def test_a_gradient_returning_a_view_of_its_input_is_safe_in_place():
    identity = Potential(lambda x: 0.5 * (x**2).sum(-1), lambda x: x)  # grad U(q) = q itself
    reference = Potential(lambda x: 0.5 * (x**2).sum(-1), lambda x: x.clone())
    u = with_momentum(torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64))
    a = run_chain(kinetic_langevin(identity), u, 20, 0.2, generator=torch.Generator().manual_seed(1)).state
    b = run_chain(kinetic_langevin(reference), u, 20, 0.2, generator=torch.Generator().manual_seed(1)).state
    assert torch.equal(a, b)


def test_baoab_and_obabo_cost_one_gradient_per_step():
    calls = [0]

    def gradient(x):
        calls[0] += 1
        return 4.0 * x * (x**2 - 1.0)

    target = Potential(lambda x: ((x**2 - 1.0) ** 2).sum(-1), gradient)
    for sequence in ("BAOAB", "OBABO"):
        calls[0] = 0
        out = run_chain(kinetic_langevin(target, sequence), with_momentum(torch.zeros(8, 1, dtype=F64)), 100, 0.1)
        assert calls[0] == out.nfe == 101, sequence


def test_each_part_changes_only_its_component():
    parts = langevin_parts(DOUBLE_WELL, friction=2.0, mass=3.0)
    u = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    h = 0.1
    A, B, O = (parts[c](u, 0.0, h, torch.Generator().manual_seed(1)) for c in "ABO")
    assert torch.equal(A[:, 1], u[:, 1]) and torch.allclose(A[:, 0], u[:, 0] + h * u[:, 1] / 3.0, rtol=1e-15)
    assert torch.equal(B[:, 0], u[:, 0]) and torch.allclose(B[:, 1], u[:, 1] - h * DOUBLE_WELL.gradient(u[:, 0]),
                                                           rtol=1e-15)
    assert torch.equal(O[:, 0], u[:, 0]) and not torch.equal(O[:, 1], u[:, 1])
    assert all(math.isinf(parts[c].weak_order) for c in "ABO")


def test_temperature_scales_the_target_and_log_densities_are_potentials():
    hot = Potential(lambda x: 0.5 * (x**2).sum(-1), temperature=2.0)  # pi = N(0, 2)
    out = run_chain(MALA(hot), torch.zeros(4000, 1, 1, dtype=F64), 300, 0.8, generator=torch.Generator().manual_seed(0),
                    burn_in=100, thin=10)
    per_chain = out.samples.square().mean((0, 2)).reshape(-1)
    assert abs(per_chain.mean().item() - 2.0) < 5 * per_chain.std().item() / math.sqrt(per_chain.numel())
    log_density = LogDensity(lambda x: -((x**2 - 1.0) ** 2).sum(-1))
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.allclose(log_density.gradient(x), DOUBLE_WELL.gradient(x), rtol=1e-14)
    assert torch.allclose(log_density.energy(x), DOUBLE_WELL.energy(x), rtol=1e-15)


def ar1_chains(rho: float, draws: int, chains: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(draws, chains, 2, dtype=F64)
    x[0] = torch.randn(chains, 2, generator=g, dtype=F64)
    noise = math.sqrt(1 - rho * rho) * torch.randn(draws, chains, 2, generator=g, dtype=F64)
    for t in range(1, draws):
        x[t] = rho * x[t - 1] + noise[t]
    return x


def test_ess_matches_the_ar1_closed_form_and_rhat_flags_disagreeing_chains():
    pytest.importorskip("arviz_stats")
    rho, draws, chains = 0.8, 4000, 4
    ess = effective_sample_size(ar1_chains(rho, draws, chains))
    expected = draws * chains * (1 - rho) / (1 + rho)  # integrated autocorrelation time (1 + rho) / (1 - rho)
    assert ess.shape == (2,) and bool(((ess / expected - 1).abs() < 0.2).all()), (ess, expected)
    assert bool((rhat(ar1_chains(rho, draws, chains)) < 1.01).all())
    shifted = ar1_chains(rho, draws, chains, seed=1)
    shifted[:, 0] += 3.0  # one chain elsewhere
    assert bool((rhat(shifted) > 1.1).all())


def test_summary_reports_acceptance_ess_and_rhat():
    pytest.importorskip("arviz_stats")
    out = run_chain(MALA(DOUBLE_WELL), 0.5 * torch.randn(4, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64),
                    400, 0.1, generator=torch.Generator().manual_seed(1), burn_in=100)
    summary = out.summary()
    assert 0 < summary["acceptance_rate"] <= 1 and summary["min_ess"] > 10 and summary["ess"].shape == (1,)
    assert summary["ess_per_gradient"] == summary["min_ess"] / out.nfe


def test_diagnostics_name_the_missing_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz_stats", None)
    monkeypatch.setitem(sys.modules, "arviz_stats.base", None)
    with pytest.raises(ImportError, match=r"arviz-stats.*splitdyn\[mcmc\]"):
        effective_sample_size(torch.zeros(10, 2, 1))


def test_plot_chains_draws_traces_and_histograms(tmp_path):
    samples = ar1_chains(0.5, 200, 3)
    fig = plot_chains(samples, coordinates=(0, 1), density=lambda x: torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi),
                      path=tmp_path / "chains.png")
    assert len(fig.axes) == 4 and (tmp_path / "chains.png").stat().st_size > 1000


def test_bad_input_is_refused_naming_the_argument():
    with pytest.raises(TypeError, match="energy"):
        Potential(3.0)
    with pytest.raises(ValueError, match="temperature"):
        Potential(lambda x: x.sum(-1), temperature=-1.0)
    with pytest.raises(ValueError, match="energy returned shape"):
        Potential(lambda x: x).gradient(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="n_leapfrog"):
        HMC(DOUBLE_WELL, n_leapfrog=0)
    with pytest.raises(ValueError, match="friction"):
        MomentumOU(friction=-1.0)
    with pytest.raises(ValueError, match="mass"):
        GHMC(DOUBLE_WELL, mass=0.0)
    with pytest.raises(ValueError, match="letters"):
        kinetic_langevin(DOUBLE_WELL, "BAXAB")
    with pytest.raises(TypeError, match="gradient"):
        SGLD(lambda x: x)
    with pytest.raises(TypeError, match="fn"):
        StochasticGradient(None)
    with pytest.raises(ValueError, match="gamma"):
        sgld_grid(10, a=0.1, gamma=2.0)
    with pytest.raises(ValueError, match="burn_in"):
        run_chain(ULA(DOUBLE_WELL), torch.zeros(2, 1, 1), 10, 0.1, burn_in=10)
    with pytest.raises(ValueError, match="burn_in"):
        run_chain(ULA(DOUBLE_WELL), torch.zeros(2, 1, 1), 10, 0.1, burn_in=11, keep=False)
    with pytest.raises(ValueError, match="step_size"):
        run_chain(ULA(DOUBLE_WELL), torch.zeros(2, 1, 1), 10, -0.1)
    with pytest.raises(ValueError, match="n_steps and step_size"):
        run_chain(ULA(DOUBLE_WELL), torch.zeros(2, 1, 1), 10)
    with pytest.raises(TypeError, match="step"):
        run_chain(lambda u: u, torch.zeros(2, 1, 1), 10, 0.1)
    with pytest.raises(ValueError, match="noise_levels"):
        from splitdyn import VESDE

        AnnealedLangevin(lambda u, t: u, VESDE(), [0.1, 0.5], 1.0)


def test_states_with_the_wrong_components_or_dtype_are_refused():
    with pytest.raises(ValueError, match=r"like must have shape \(batch, 1"):
        run_chain(MALA(DOUBLE_WELL), torch.zeros(3, 2, 1, dtype=F64), 5, 0.1)
    with pytest.raises(ValueError, match=r"like must have shape \(batch, 2"):
        run_chain(kinetic_langevin(DOUBLE_WELL), torch.zeros(3, 1, 1, dtype=F64), 5, 0.1)
    promoting = Potential(lambda x: (x**2).sum(-1), lambda x: 2.0 * x.double())
    with pytest.raises(TypeError, match="gradient returned dtype torch.float64"):
        run_chain(ULA(promoting), torch.zeros(3, 1, 1), 5, 0.1)
    with pytest.raises(TypeError, match="keep"):
        run_chain(ULA(DOUBLE_WELL), torch.zeros(3, 1, 1), 5, 0.1, keep=1)
    with pytest.raises(TypeError, match="potential"):
        MALA(3.0)


def test_a_diverging_chain_is_reported():
    with pytest.raises(ValueError, match="diverged"):
        run_chain(ULA(DOUBLE_WELL), torch.full((2, 1, 1), 3.0, dtype=F64), 50, 0.5)


def test_keeping_draws_or_not_runs_the_same_chain_and_counts_acceptance_after_burn_in():
    u = 0.5 * torch.randn(16, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    runs = [run_chain(MALA(DOUBLE_WELL), u, 100, 0.3, generator=torch.Generator().manual_seed(1), burn_in=37, block=16,
                      keep=keep) for keep in (True, False)]
    assert torch.equal(runs[0].state, runs[1].state)
    assert torch.equal(runs[0].acceptance_rate, runs[1].acceptance_rate) and runs[0].nfe == runs[1].nfe
    assert runs[0].samples.shape == (63, 16, 1) and torch.equal(runs[0].samples[-1], runs[0].state[:, 0])
