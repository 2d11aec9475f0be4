"""Hostile input to splitdyn.mcmc (issue 20's MCMC classes) and the diagnostics that speak up, table-driven.

Each refusal must name the argument; each suspect run must warn (MCMCWarning), not return silently."""

import warnings

import numpy as np
import pytest
import torch

from splitdyn.mcmc import (HMC, MALA, ULA, MCMCWarning, Potential, effective_sample_size, leapfrog, plot_ranks, rhat,
                           run_chain)

F64 = torch.float64
GAUSS = Potential(lambda x: 0.5 * (x**2).sum(-1), lambda x: x.clone())
U1 = torch.zeros(4, 1, 2, dtype=F64)
Q = torch.zeros(4, 2, dtype=F64)

REFUSALS = [
    ("thin above the kept span", lambda: run_chain(ULA(GAUSS), U1, 10, 0.1, burn_in=5, thin=6), ValueError, "thin"),
    ("generator=0", lambda: run_chain(ULA(GAUSS), U1, 10, 0.1, generator=0), TypeError, "generator"),
    ("generator string", lambda: run_chain(ULA(GAUSS), U1, 10, 0.1, generator="seed"), TypeError, "generator"),
    ("numpy generator", lambda: run_chain(ULA(GAUSS), U1, 10, 0.1, generator=np.random.default_rng(0)), TypeError,
     "generator"),
    ("progress=5", lambda: run_chain(ULA(GAUSS), U1, 10, 0.1, progress=5), TypeError, "progress"),
    ("leapfrog n_steps=0", lambda: leapfrog(GAUSS, Q, Q, 0.1, n_steps=0), ValueError, "n_steps"),
    ("leapfrog shapes", lambda: leapfrog(GAUSS, Q, torch.zeros(4, 3, dtype=F64), 0.1), ValueError, "same shape"),
    ("leapfrog h=nan", lambda: leapfrog(GAUSS, Q, Q, float("nan")), ValueError, "h must"),
    ("ESS of NaN draws", lambda: effective_sample_size(torch.full((10, 2, 1), float("nan"))), ValueError, "NaN"),
    ("R-hat of one chain", lambda: rhat(torch.randn(100, 1, 2)), ValueError, "at least 2 chains"),
    ("HMC jitter > 1", lambda: HMC(GAUSS, jitter=2.0), ValueError, "jitter"),
    ("MALA inverse_mass negative", lambda: MALA(GAUSS, inverse_mass=torch.tensor([1.0, -1.0])), ValueError,
     "inverse_mass"),
    ("MALA inverse_mass not SPD", lambda: MALA(GAUSS, inverse_mass=torch.tensor([[1.0, 2.0], [2.0, 1.0]])),
     ValueError, "positive definite"),
    ("inverse_mass wrong size", lambda: run_chain(MALA(GAUSS, inverse_mass=torch.ones(3)), U1, 5, 0.1), ValueError,
     "inverse_mass"),
    ("mass and inverse_mass", lambda: HMC(GAUSS, mass=2.0, inverse_mass=1.0), ValueError, "mass"),
]


@pytest.mark.parametrize("name, call, error, match", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_hostile_input_is_refused_naming_the_argument(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def _nan_outside(x):  # a potential that is NaN outside |x| < 1, whose gradient is zero there
    inside = (x.abs() < 1).all(-1)
    return torch.where(inside, 0.5 * (x**2).sum(-1), torch.full_like(x[:, 0], float("nan")))


def _nan_outside_gradient(x):
    return torch.where((x.abs() < 1).all(-1, keepdim=True), x, torch.zeros_like(x))


WARNED = [
    ("low acceptance", lambda: run_chain(MALA(GAUSS), torch.full((8, 1, 50), 3.0, dtype=F64), 30, 5.0),
     "acceptance rate"),
    ("divergences", lambda: run_chain(HMC(Potential(lambda x: (x**4).sum(-1)), 5, jitter=0.0),
                                      torch.full((8, 1, 2), 3.0, dtype=F64), 10, 1.0), "divergent"),
    ("ULA leaves a NaN region", lambda: run_chain(ULA(Potential(_nan_outside, _nan_outside_gradient)),
                                                  torch.zeros(64, 1, 1, dtype=F64), 400, 0.5,
                                                  generator=torch.Generator().manual_seed(0)), "not finite"),
]


@pytest.mark.parametrize("name, call, match", WARNED, ids=[w[0] for w in WARNED])
def test_suspect_runs_warn_and_keep_the_warning(name, call, match):
    with pytest.warns(MCMCWarning, match=match):
        out = call()
    assert any(match in m for m in out.warnings)
    if name == "divergences":
        assert out.divergences.sum() > 0 and out.divergences.shape == (8,)


def test_summary_reports_rhat_ess_and_the_runs_warnings():
    stuck = torch.zeros(200, 4, 1, dtype=F64)
    stuck[:, 0] += torch.randn(200, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    stuck[:, 1:] += 5.0 + torch.randn(200, 3, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    from splitdyn.mcmc import ChainResult

    result = ChainResult(state=stuck[-1][:, None], samples=stuck, nfe=800, n_steps=200, seconds=1.0,
                         warnings=["an earlier warning"])
    with pytest.warns(MCMCWarning, match="R-hat"):
        summary = result.summary()
    assert summary["max_rhat"] > 1.01 and "an earlier warning" in summary["warnings"]
    assert any("R-hat" in m for m in summary["warnings"])
    one = ChainResult(state=stuck[-1][:1, None], samples=stuck[:, :1], nfe=200, n_steps=200, seconds=1.0)
    with pytest.warns(MCMCWarning, match="at least 2 chains"):
        assert np.isnan(one.summary()["max_rhat"])


def test_a_good_run_is_quiet_and_the_progress_bar_runs(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MCMCWarning)
        out = run_chain(MALA(GAUSS), torch.zeros(8, 1, 2, dtype=F64), 1200, 0.5, burn_in=200,
                        generator=torch.Generator().manual_seed(0), progress=True)
        summary = out.summary()
    assert summary["divergences"] == 0 and summary["warnings"] == []
    plot_ranks(out.samples, (0, 1), path=tmp_path / "ranks.png")
    assert (tmp_path / "ranks.png").stat().st_size > 1000
