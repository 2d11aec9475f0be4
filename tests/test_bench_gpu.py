"""Smoke test of ``benchmarks/bench_gpu.py`` on the CPU: every part runs in ``--quick`` mode and writes finite numbers.

The CUDA-graph measurements need a GPU; here the test checks that they are skipped with a message, that what
the overhead part times (the library step planned once and called per interval, and ``splitdyn.CapturedLoop``,
which runs the same plan eagerly on the CPU) is the sampler ``splitdyn.sample`` runs, and that graph capture
refuses the CPU with a clear error.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from splitdyn.steps.base import evaluation_count

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
    """One quick CPU run of every part (a few seconds on one thread), under a clock that jumps 50 s at every
    reading: ``--quick`` has no time budget (fixed step and repeat counts), so what it runs cannot depend on
    how loaded the machine is; any budget would run out at once here."""
    out = tmp_path_factory.mktemp("bench_gpu")
    clock = [time.perf_counter()]

    def jumping_clock():
        clock[0] += 50.0
        return clock[0]

    # the benchmark's own clock only (matplotlib and torch keep the real one)
    fake_time = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    fake_time.perf_counter = jumping_clock
    with pytest.MonkeyPatch.context() as patch:
        modules = [m for name, m in sys.modules.items() if name == "gpu" or name.startswith("gpu.")]
        assert modules
        for module in modules:
            if getattr(module, "time", None) is time:
                patch.setattr(module, "time", fake_time)
        results = bench.main(["--quick", "--device", "cpu", "--out", str(out), "--threads", "1"])
    return out, results


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
        assert record["loop_step_s"] > 0 and record["sampler_per_nfe_s"] > 0
        assert record["outside_network_fraction_loop"] < 1
        assert "graph_step_s" not in record and "compiled_step_s" not in record  # no CUDA; no compile in --quick
    assert any("CUDA-graph measurements skipped" in note for note in overhead["notes"])
    assert any("torch.compile skipped" in note for note in overhead["notes"])
    assert not overhead["settings"]["compiled"]

    fp16 = json.loads((out / "gpu_fp16_cpu_quick.json").read_text())
    assert fp16["summary"]["steps_completed"] == 20 and len(fp16["losses"]) == 20  # whatever the clock says
    assert [row["step"] for row in fp16["log"]] == [5, 10, 15, 20]
    assert fp16["summary"]["all_finite"]
    assert (out / "gpu_fp16_cpu_quick.png").stat().st_size > 0

    throughput = json.loads((out / "gpu_throughput_cpu_quick.json").read_text())
    (record,) = throughput["results"]  # eager only: no torch.compile in --quick on the CPU
    assert record["variant"] == "eager" and record["images_per_s"] > 0
    expected = 3 * record["forward_flops_per_batch"] / record["seconds_per_step"] / 1e12
    assert record["tflops_per_s"] == pytest.approx(expected)


def test_graph_capture_needs_cuda():
    from splitdyn.graphs import capture_graph

    with pytest.raises(RuntimeError, match="CUDA"):
        capture_graph(lambda: None, torch.device("cpu"))
    with pytest.raises(TypeError, match="callable"):
        capture_graph(None, torch.device("cpu"))


@pytest.mark.parametrize("sampler", ["sscs", "em"])
def test_overhead_step_and_captured_loop_are_the_library_sampler(bench, sampler):
    """The eager step the overhead part times and the CapturedLoop fallback give splitdyn.sample's states."""
    import splitdyn
    from splitdyn.integrate import plan_step
    from splitdyn_cld.samplers import sample

    _, cld, score_model, _ = bench.sampling_model("tiny", torch.device("cpu"), "fp32")
    u0 = cld.prior_sample((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    times = bench.reverse_times(cld, 4)
    step = bench.library_step(cld, score_model, sampler)
    with torch.no_grad():
        reference = splitdyn.sample(cld, score_model, u0, times, step=sampler, denoise=False,
                                    generator=torch.Generator().manual_seed(3)).state
        preset = sample(cld, score_model, u0, 4, sampler=sampler, grid="quadratic", denoise=False,
                        generator=torch.Generator().manual_seed(3))
        plan = plan_step(step, times, u0)
        eager = bench.run_plan(plan, u0, torch.Generator().manual_seed(3))
        other_noise = bench.run_plan(plan_step(step, times, u0), u0, torch.Generator().manual_seed(4))
    loop = splitdyn.CapturedLoop(step, times, u0)
    assert not loop.graphed and loop.nfe == 4
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(3)  # the loop draws from the default generator, as a captured graph does on CUDA
        captured = loop(u0).clone()
    finally:
        torch.random.set_rng_state(state)
    assert preset.nfe == 4 and torch.equal(preset.state, reference)
    torch.testing.assert_close(eager, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(captured, reference, rtol=1e-6, atol=1e-6)
    assert (other_noise - reference).abs().max() > 1e-2  # the comparison sees the noise


def tensors(value):
    """The tensors in an op's arguments or result (nested lists, tuples and dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)


@pytest.mark.parametrize("sampler", ["sscs", "em"])
def test_the_graphed_loop_copies_nothing_from_the_host_per_step(bench, sampler):
    """What CapturedLoop captures on CUDA does no host-to-device copy (it would synchronise, and fail capture).

    Checked on the meta device as a stand-in: every copy op of the planned loop (network and MixedScore
    included) from a CPU tensor to the device is recorded (a fill with a host scalar is no copy).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    from splitdyn.integrate import plan_step

    class HostToDevice(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if ("copy" in str(func) and any(t.device.type == "cpu" for t in tensors((args, kwargs)))
                    and any(t.device.type == "meta" for t in tensors(out))):
                self.copies.append(str(func))
            return out

    _, cld, score_model, net = bench.sampling_model("tiny", torch.device("cpu"), "fp32")
    net.to("meta")
    u0 = torch.zeros(2, 2, 1, 8, 8, device="meta")
    plan = plan_step(bench.library_step(cld, score_model, sampler), bench.reverse_times(cld, 3), u0)
    with torch.no_grad(), HostToDevice() as mode:
        out = bench.run_plan(plan, u0)
    assert out.device.type == "meta" and evaluation_count(plan) == 3
    assert mode.copies == []


def test_forward_flops_counts_on_meta(bench):
    flops, where = bench.forward_flops("tiny", 4, torch.device("cpu"))
    assert where == "meta" and flops > 0
    assert bench.forward_flops("tiny", 8, torch.device("cpu"))[0] == 2 * flops


def test_report_collects_the_gpu_results(smoke, tmp_path, monkeypatch):
    """benchmarks/report.py builds its README and docs page from these files (a failed part included)."""
    import shutil

    spec = importlib.util.spec_from_file_location("bench_report", SCRIPT.with_name("report.py"))
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    out, _ = smoke
    results, generated = tmp_path / "results", tmp_path / "generated"
    shutil.copytree(out, results)
    (results / "gpu_fp16_cuda.json").write_text(json.dumps({"machine": "m", "error": "Traceback ..."}))
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "GENERATED", generated)
    report.main()
    readme = (results / "README.md").read_text()
    for part in ("sampling", "overhead", "fp16", "throughput"):
        assert f"## gpu_{part}_cpu_quick" in readme
    assert "| sscs |" in readme and "library step ms" in readme
    assert "## gpu_fp16_cuda" in readme and "**failed**" in readme
    assert "gpu_overhead_cpu_quick" in (generated / "benchmarks.rst").read_text()
