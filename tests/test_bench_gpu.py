"""Smoke test of ``benchmarks/bench_gpu.py`` on the CPU: every part runs in ``--quick`` mode and writes finite numbers.

The CUDA-graph measurements need a GPU; here the test checks that they are skipped with a message, that the
capturable sampler step reproduces the library's SSCS and EM samplers exactly, and that capture refuses a CPU
state with a clear error.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small CPU work: one thread avoids oversubscribing a busy machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    """One quick CPU run of every part (a few seconds on one thread)."""
    out = tmp_path_factory.mktemp("bench_gpu")
    return out, bench.main(["--quick", "--device", "cpu", "--out", str(out), "--threads", "1"])


def numbers(value):
    """Every int/float inside a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


@pytest.mark.parametrize("part", ["sampling", "overhead", "fp16", "throughput"])
def test_quick_run_writes_finite_results(smoke, part):
    out, results = smoke
    assert "error" not in results[part], results[part].get("error")
    payload = json.loads((out / f"gpu_{part}_cpu_quick.json").read_text())  # json rejects no NaN: check below
    assert (out / f"gpu_{part}_cpu_quick.md").read_text().startswith("Machine: ")
    assert payload["device_name"] == "cpu" and payload["machine"]
    values = list(numbers(payload))
    assert values and all(math.isfinite(v) for v in values)


def test_quick_run_contents(smoke):
    out, _ = smoke
    sampling = json.loads((out / "gpu_sampling_cpu_quick.json").read_text())
    assert {r["sampler"] for r in sampling["results"]} == {"sscs", "em"}
    assert all(r["nfe"] == 4 and r["seconds_per_nfe"] > 0 for r in sampling["results"])  # 3 steps + denoising

    overhead = json.loads((out / "gpu_overhead_cpu_quick.json").read_text())
    for name in ("sscs", "em"):
        record = overhead["results"][name]
        assert record["outside_network_fraction_loop"] < 1
        assert record["graph_step_vs_library_rel_diff"] < 1e-5
        assert "graph_step_s" not in record
    assert any("CUDA-graph measurements skipped" in note for note in overhead["notes"])

    fp16 = json.loads((out / "gpu_fp16_cpu_quick.json").read_text())
    assert fp16["summary"]["steps_completed"] == 20 and len(fp16["losses"]) == 20
    assert [row["step"] for row in fp16["log"]] == [5, 10, 15, 20]
    assert fp16["summary"]["all_finite"]
    assert (out / "gpu_fp16_cpu_quick.png").stat().st_size > 0

    throughput = json.loads((out / "gpu_throughput_cpu_quick.json").read_text())
    (record,) = throughput["results"]  # eager only: no torch.compile in --quick on the CPU
    assert record["variant"] == "eager" and record["images_per_s"] > 0
    expected = 3 * record["forward_flops_per_batch"] / record["seconds_per_step"] / 1e12
    assert record["tflops_per_s"] == pytest.approx(expected)


def test_capture_needs_cuda(bench):
    with pytest.raises(RuntimeError, match="CUDA"):
        bench.capture_sampler_loop(lambda u, i, g: u, torch.zeros(2, 2, 1, 4, 4), 3, use_graph=True)


@pytest.mark.parametrize("sampler", ["sscs", "em"])
def test_graph_loop_falls_back_to_eager_and_matches_the_library(bench, sampler):
    """On the CPU the capturable loop runs eagerly (same buffers and step counter) and is the library's sampler."""
    from splitdyn import integrate, make_grid

    _, cld, score_model, net = bench.sampling_model("tiny", torch.device("cpu"), "fp32")
    u0 = cld.prior_sample((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    grid = make_grid("quadratic", 4, cld.T, 1e-3)
    table = bench.step_coefficients(cld, score_model, grid, sampler, torch.device("cpu"))
    run = bench.capture_sampler_loop(bench.make_sampler_step(sampler, net, table, score_model.mixed), u0, 4)
    assert not run.graphed
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(3)  # the loop draws from the default generator, as a captured graph does on CUDA
        ours = run(u0).clone()
        torch.manual_seed(3)
        again = run(u0).clone()  # the counter restarts: the same steps again
    finally:
        torch.random.set_rng_state(state)
    with torch.no_grad():
        reference = integrate(bench.library_propagator(cld, score_model, sampler), u0, grid,
                              generator=torch.Generator().manual_seed(3), fuse_exact_flows=False).state
    assert torch.equal(ours, again)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_capturable_step_detects_a_wrong_coefficient(bench, monkeypatch):
    """The comparison with the library is sensitive: a 1% error in one coefficient shows up."""
    from splitdyn import make_grid

    _, cld, score_model, net = bench.sampling_model("tiny", torch.device("cpu"), "fp32")
    u0 = cld.prior_sample((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    grid = make_grid("quadratic", 3, cld.T, 1e-3)
    assert bench.compare_with_library(cld, score_model, net, "sscs", u0, grid) < 1e-6
    original = bench.make_sampler_step

    def perturbed(sampler, network, coefficients, mixed=True):
        return original(sampler, network, dict(coefficients, ell=coefficients["ell"] * 1.01), mixed)

    monkeypatch.setattr(bench, "make_sampler_step", perturbed)
    for sampler in ("sscs", "em"):
        assert bench.compare_with_library(cld, score_model, net, sampler, u0, grid) > 1e-3


def test_forward_flops_counts_on_meta(bench):
    flops, where = bench.forward_flops("tiny", 4, torch.device("cpu"))
    assert where == "meta" and flops > 0
    assert bench.forward_flops("tiny", 8, torch.device("cpu"))[0] == 2 * flops
