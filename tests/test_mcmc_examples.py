"""The MCMC examples run end to end with small settings, report sensible numbers and write their plots."""

import math

import pytest
import torch

from _scripts import load_example


@pytest.mark.parametrize("name", ["mcmc_double_well", "mcmc_banana", "mcmc_gaussian_100d"])
def test_example_runs_with_small_settings_and_writes_plots(name, tmp_path):
    example = load_example(name)
    if name == "mcmc_gaussian_100d":  # warms up: no step size, trace and rank plots
        results = example.main(["--samplers", "MALA", "BAOAB", "--steps", "60", "--warmup", "60", "--chains", "8",
                                "--out", str(tmp_path)])
        assert all(bool(torch.isfinite(r["out"].samples).all()) for r in results.values())
        assert len(list(tmp_path.glob("*.png"))) == 2 * len(results)
        return
    results = example.main(["--steps", "60", "--chains", "16", "--out", str(tmp_path)])
    assert results and all(bool(torch.isfinite(out.samples).all()) for out in results.values())
    assert len(list(tmp_path.glob("*.png"))) == len(results)


@pytest.mark.parametrize("name", ["mcmc_logistic_breast_cancer", "mcmc_eight_schools"])
def test_posterior_examples_warm_up_report_diagnostics_and_plot(name, tmp_path):
    if "breast_cancer" in name:
        pytest.importorskip("sklearn")  # ships the data set (the 'images' extra)
    example = load_example(name)
    results = example.main(["--samplers", "GHMC", "--steps", "60", "--warmup", "80", "--chains", "4",
                            "--out", str(tmp_path)])
    for result in results.values():
        assert bool(torch.isfinite(result["out"].samples).all()) and result["tuned"].step_size > 0
        assert "warnings" in result["summary"]
    assert len(list(tmp_path.glob("*_ranks.png"))) == len(list(tmp_path.glob("*_trace.png"))) == 1


def test_the_100d_example_after_warm_up_matches_the_exact_moments(tmp_path):
    example = load_example("mcmc_gaussian_100d")
    results = example.main(["--samplers", "HMC", "--steps", "300", "--warmup", "300", "--chains", "16",
                            "--leapfrog", "5", "--no-plot"])
    summary = results["HMC"]["summary"]
    assert summary["max_z_mean"] < 4 and summary["max_z_var"] < 4


def test_double_well_example_reference_is_the_quadrature_second_moment():
    example = load_example("mcmc_double_well")
    # E[x^2] under exp(-(x^2 - 1)^2), here by a coarser independent rule (Simpson-like midpoints)
    x = torch.linspace(-6, 6, 240_001, dtype=torch.float64)
    mid = 0.5 * (x[1:] + x[:-1])
    w = torch.exp(-((mid**2 - 1) ** 2))
    assert math.isclose(example.reference()["second_moment"], ((w * mid**2).sum() / w.sum()).item(), rel_tol=1e-8)


def test_examples_explain_themselves_with_help(capsys):
    example = load_example("mcmc_banana")
    with pytest.raises(SystemExit) as info:
        example.main(["--help"])
    assert info.value.code == 0 and "banana" in capsys.readouterr().out


def test_the_minibatch_example_runs_on_a_small_data_set_and_centres_on_the_map():
    example = load_example("mcmc_sg_logistic")
    results = example.main(["--rows", "4000", "--batch", "200", "--steps", "300", "--chains", "8", "--features", "3"])
    for name, result in results.items():
        assert bool(torch.isfinite(result["out"].samples).all())
        assert result["max_z"] < 1.0, (name, result["max_z"])  # means within a Laplace sd of the MAP
