"""The few-step CLD benchmark (issue 21): a quick end-to-end run writes every metric with its standard error."""

from __future__ import annotations

import json
from pathlib import Path

from _scripts import load_script


def test_quick_run_scans_confirms_on_fresh_seeds_and_decomposes(tmp_path):
    bench = load_script(Path("benchmarks") / "bench_cld_fewstep.py", "bench_cld_fewstep")
    bench.main(["--quick", "--samples", "500", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "cld_fewstep_quick.json").read_text())
    assert data["machine"] and data["floor"]["draws"] == 3
    assert {(r["sampler"], r["grid"]) for r in data["scan"]} == {
        (s, g) for s in ("unipc-3", "ei-ode-3") for g in ("power-3", "power-5")}
    for row in data["scan"] + data["confirm"]:
        assert row["ratio"] > 0 and row["ratio_se"] > 0 and row["nll_gap_se"] > 0 and row["rms"] > 0
        assert len(row["per_seed"]["ratio"]) == 2
    # confirmation only on seeds that were not used to choose
    assert data["confirm"] and all(set(r["seeds"]).isdisjoint(data["settings"]["choose_seeds"])
                                   for r in data["confirm"])
    (d,) = data["decomposition"]
    prefix = d["prefix"]
    assert [p["k"] for p in prefix] == list(range(6)) and prefix[0]["ms"] == 0.0 and prefix[-1]["ms"] > 0
    assert abs(prefix[-1]["t_k"] - 1e-3) < 1e-12
    assert all(any(word in t for word in ("**met", "**missed", "**not resolved")) for t in data["targets"])
    assert (tmp_path / "cld_fewstep_quick.md").read_text().startswith("Machine:")
