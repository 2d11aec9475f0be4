"""Smoke test of ``benchmarks/bench_sample_call.py --quick`` (issue 22): every part runs and writes its tables
with the machine line and the load note (no timing is asserted)."""

import json
import math

from _scripts import load_script

bench = load_script("benchmarks/bench_sample_call.py", "bench_sample_call")


def test_quick_run_writes_every_part(tmp_path):
    payload = bench.main(["--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "sample_call_cpu_quick.json").read_text())
    markdown = (tmp_path / "sample_call_cpu_quick.md").read_text()
    assert markdown.startswith("Machine: ") and "shared with 6 other" in markdown
    assert set(bench.PARTS) <= set(data) and data["machine"]
    call = payload["call"][0]
    assert set(call["us_per_step"]) >= {"sample EM", "planned EM", "hand EM", "sample SSCS", "torchsde euler"}
    assert all(math.isfinite(v) and v > 0 for v in call["us_per_step"].values())
    assert call["plan_ms_per_call"]["EM"] > 0 and call["plan_ms_per_call"]["SSCS"] > 0
    floor = payload["floor"][0]
    assert floor["floor_ms"] > floor["noise_ms"] > 0 and floor["bandwidth_GBs"] > 0
    assert {r["sampler"] for r in payload["unet"]} == {"sscs", "em", "ei-ode-3"}
    assert all(r["nfe"] == 3 for r in payload["unet"])  # 2 steps and the denoising step
    assert payload["training"][0]["library_ms_per_step"] > 0
