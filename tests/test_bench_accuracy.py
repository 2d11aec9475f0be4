"""The accuracy benchmark's protocol (issue 21): verdict rules and a quick end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

from _scripts import load_script

common = load_script(Path("benchmarks") / "_common.py", "bench_common")


def test_verdicts_need_two_standard_errors_inside_the_target():
    assert common.verdict_at_most(1.0, 0.09, 1.2) == "met"
    assert common.verdict_at_most(1.0, 0.11, 1.2) == "not resolved at this sample size"  # 1.22 > 1.2
    assert common.verdict_at_most(1.5, 0.1, 1.2) == "missed"
    assert common.verdict_at_most(1.39, 0.1, 1.2) == "not resolved at this sample size"
    assert common.verdict_not_worse(-0.3, 0.1) == "met (better)"
    assert common.verdict_not_worse(0.15, 0.1) == "met (tie within 2 s.e.)"
    assert common.verdict_not_worse(0.25, 0.1) == "missed"
    mean, se = common.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(se - 1.0 / 3 ** 0.5) < 1e-15


def test_quick_run_writes_every_metric_with_its_standard_error(tmp_path):
    bench = load_script(Path("benchmarks") / "bench_accuracy.py", "bench_accuracy")
    bench.main(["--quick", "--samples", "300", "--nfe", "5", "--no-peers", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "accuracy_mixture2d_quick.json").read_text())
    assert data["machine"] and data["floor"]["draws"] == 5 and len(data["floor"]["sw2_draws"]) == 5
    methods = {r["method"] for r in data["results"]}
    assert {"CLD ei-ode-3 (power-3)", "CLD ei-ode-3 (optimised)", "VP ei-ode-3 (optimised)",
            "CLD SSCS (quadratic)"} <= methods
    for row in data["results"]:
        assert {"ratio", "ratio_se", "nll_gap", "nll_gap_se", "mode_weight_error", "mode_weight_error_se"} <= set(row)
        assert row["ratio_se"] > 0 and len(row["per_seed"]) == 2
    assert any("CLD ei-ode-3 4" in key or "CLD ei-ode-3 5" in key for key in data["optimised_grids"])
    assert all(any(word in t for word in ("**met", "**missed", "**not resolved")) for t in data["targets"])
    assert (tmp_path / "accuracy_mixture2d_quick.md").read_text().startswith("Machine:")
    assert (tmp_path / "accuracy_mixture2d_quick.png").exists()


def test_cached_sliced_w2_equals_the_library_metric():
    import torch

    from splitdyn.metrics import wasserstein_sliced

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 3, generator=g, dtype=torch.float64), torch.randn(500, 3, generator=g, dtype=torch.float64)
    expected = wasserstein_sliced(x, y + 0.1, generator=torch.Generator().manual_seed(0))
    assert abs(common.SlicedW2(y + 0.1)(x) - expected) < 1e-12 * expected


def test_report_builds_the_guidance_table_from_the_result_files(tmp_path, monkeypatch):
    report = load_script(Path("benchmarks") / "report.py", "bench_report")
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert report.guidance() is None
    entry = {"process": "CLD", "nfe": 10, "sampler": "unipc-3", "grid": "optimised", "ratio": 1.04}
    (tmp_path / "accuracy_mixture2d.json").write_text(json.dumps({"guidance": [entry]}))
    (tmp_path / "trained_samplers_quick.json").write_text(json.dumps(
        {"guidance": [{**entry, "sampler": "ei-sde-2", "grid": "power-4", "ratio": 1.5}]}))
    markdown, rst = report.guidance()
    assert "| CLD | 10 | unipc-3, optimised grid (1.04x floor) | ei-sde-2, power-4 grid (1.50x floor) |" in markdown
    assert "(quick run)" in markdown and ".. list-table::" in rst
