r"""The ``overhead`` part: the share of a sampler step spent outside the network, eager, compiled and graphed.

Everything measured is the library's own sampler: the step of :data:`splitdyn.SAMPLERS` (``"sscs"``:
:func:`splitdyn.split_step`, ``"em"``: :class:`splitdyn.EulerMaruyama`) of ``cld.reverse(score_model)``,
planned once for the grid with :func:`splitdyn.integrate.plan_step` and called ``plan(u, i)`` per interval
(the loop :func:`splitdyn.integrate` runs), the whole :func:`splitdyn_cld.samplers.sample` call, the same plan
compiled (:meth:`splitdyn.Plan.compile`) and the same step captured with :class:`splitdyn.CapturedLoop`.
"""

from __future__ import annotations

import time

import torch

import splitdyn
from _common import markdown_table
from splitdyn.graphs import capture_graph
from splitdyn.integrate import plan_step
from splitdyn.steps.noise import as_noise_source
from splitdyn_cld.samplers import sample

from .common import (OutOfTime, budgeted_median, image_shape_of, left, models_for, notes_text, synchronize,
                     time_limit, wants_compiled, write_part)
from .sampling import SAMPLER_NAMES

__all__ = ["library_step", "reverse_times", "run_plan", "measure_compiled", "part_overhead"]

#: Forward time at which the network and the score are timed alone.
T_NETWORK = 0.5


def library_step(cld, score_model, name: str) -> splitdyn.Step:
    """The library's sampler step ``name`` (a key of :data:`splitdyn.SAMPLERS`) for ``cld.reverse(score_model)``."""
    return splitdyn.SAMPLERS[name](cld.reverse(score_model))


def reverse_times(cld, n_steps: int) -> list[float]:
    """The quadratic grid of :func:`splitdyn_cld.samplers.sample` (reverse time, cutoff ``1e-3``) as floats."""
    return splitdyn.make_grid("quadratic", n_steps, cld.T, 1e-3).tolist()


def run_plan(plan: splitdyn.Plan, u: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The eager loop over a plan: ``u = plan(u, i, generator)`` for every interval (as ``integrate`` runs it)."""
    noise = as_noise_source(generator)
    for i in range(plan.n):
        u = plan(u, i, noise)
    return u


def measure_compiled(step, times, u0, generator, repeats: int, seconds: float, options: dict | None = None) -> dict:
    """Time the compiled plan of ``step`` (:meth:`splitdyn.Plan.compile`): compile time, then per-step time.

    The first run of the loop compiles (once per plan, never per time); the remaining time of ``seconds``
    goes to the timed runs. Raises :class:`~gpu.common.OutOfTime` when compilation outlasts ``seconds``.
    ``options`` go to ``torch.compile`` (default: none, inductor).
    """
    device = u0.device
    begin = time.perf_counter()
    with time_limit(seconds):
        plan = plan_step(step, times, u0)
        plan.compile(**(options or {}))
        synchronize(device)
        start = time.perf_counter()
        final = run_plan(plan, u0, generator)
        synchronize(device)
        compile_s = time.perf_counter() - start
    remaining = 0.9 * seconds - (time.perf_counter() - begin)
    t = budgeted_median(lambda: run_plan(plan, u0, generator), repeats, device, max(remaining, 0.0))[0]
    return {"compiled_step_s": t / plan.n, "compile_s": compile_s,
            "compiled_sample_finite": bool(torch.isfinite(final).all())}


def measure_graph(step, times, u0, seed: int, repeats: int, seconds: float) -> dict:
    """Time :class:`splitdyn.CapturedLoop` of ``step`` (one graph replay per sampler run), per step."""
    torch.cuda.manual_seed(seed)  # the captured noise comes from the default CUDA generator
    loop = splitdyn.CapturedLoop(step, times, u0, use_graph=True)
    t = budgeted_median(lambda: loop(u0), repeats, u0.device, seconds)[0]
    return {"graph_step_s": t / (len(times) - 1), "graph_sample_finite": bool(torch.isfinite(loop(u0)).all())}


def measure_network_graph(net, u0, times, repeats: int, seconds: float) -> float:
    """Time of the network alone, captured with :func:`splitdyn.graphs.capture_graph` and replayed."""
    out = {}

    def body():
        out["y"] = net(u0, times)  # the dict keeps the graph's static output alive

    graph = capture_graph(body, u0.device, warmup=3)
    return budgeted_median(graph.replay, repeats, u0.device, seconds)[0]


@torch.no_grad()
def part_overhead(args, deadline: float, cache: dict) -> dict:
    """Share of a sampler step spent outside the network: eager step, full call, compiled step, CUDA graph.

    Parameters
    ----------
    args:
        The parsed command line.
    deadline:
        ``perf_counter`` time by which the part must be done.
    cache:
        Model cache shared with the sampling part (:func:`~gpu.common.models_for`).
    """
    device = args.device_obj
    settings, cld, score_model, net = models_for(args, cache, args.sample_config)
    shape = (args.batch, *image_shape_of(args.sample_config))
    n = args.sample_steps
    times = reverse_times(cld, n)
    generator = torch.Generator(device).manual_seed(args.seed)
    u0 = cld.prior_sample(shape, generator=generator, dtype=torch.float32, device=device)
    net_times = torch.full((args.batch,), T_NETWORK, dtype=u0.dtype, device=device)
    compiled, skip_note = wants_compiled(args)
    graphs = device.type == "cuda"
    eager_share = 0.5 if compiled else 1.0  # compilation gets the other half of the part's time
    per = max(left(deadline), 0.0) * eager_share / (2 + (6 + 2 * graphs) * len(SAMPLER_NAMES) + graphs)
    results: dict = {"batch": args.batch, "steps": n}
    notes: list[str] = [] if skip_note is None else [skip_note]

    results["network_s"] = budgeted_median(lambda: net(u0, net_times), args.repeats, device, per)[0]
    results["score_s"] = budgeted_median(lambda: score_model(u0, T_NETWORK), args.repeats, device, per)[0]
    steps = {name: library_step(cld, score_model, name) for name in SAMPLER_NAMES}
    for name, step in steps.items():
        plan = plan_step(step, times, u0)
        t_loop = budgeted_median(lambda: run_plan(plan, u0, generator), args.repeats, device, 3 * per)[0] / n
        full = lambda: sample(cld, score_model, shape, n, sampler=name, grid="quadratic",  # noqa: E731
                              generator=generator, device=device)
        t_full = budgeted_median(full, args.repeats, device, 3 * per)[0] / (n + 1)
        record = {"loop_step_s": t_loop, "sampler_per_nfe_s": t_full,
                  "outside_network_fraction_loop": 1.0 - results["network_s"] / t_loop,
                  "outside_network_fraction_sampler": 1.0 - results["network_s"] / t_full}
        if graphs and left(deadline) > 0:
            try:
                record.update(measure_graph(step, times, u0, args.seed, args.repeats, 2 * per))
                if "network_graph_s" not in results:
                    results["network_graph_s"] = measure_network_graph(net, u0, net_times, args.repeats, per)
                record.update(graph_speedup_vs_loop=t_loop / record["graph_step_s"],
                              outside_network_fraction_graph=1.0 - results["network_graph_s"] / record["graph_step_s"])
            except Exception as exc:  # noqa: BLE001 - report and go on
                notes.append(f"{name}: CUDA-graph capture failed: {type(exc).__name__}: {exc}")
                print(f"  {notes[-1]}", flush=True)
        results[name] = record
        print(f"  {name}: step {t_loop * 1e3:.2f} ms, network {results['network_s'] * 1e3:.2f} ms, outside the "
              f"network {record['outside_network_fraction_loop']:.1%}" + ("" if "outside_network_fraction_graph" not in record else
              f"; CUDA graph: step {record['graph_step_s'] * 1e3:.2f} ms, outside "
              f"{record['outside_network_fraction_graph']:.1%}"), flush=True)
    if not graphs:
        notes.append("CUDA-graph measurements skipped: they need a CUDA device (this run is on "
                     f"{device.type}); `splitdyn.CapturedLoop` would run the same plan eagerly here.")
        print(f"  {notes[-1]}", flush=True)
    if compiled:
        for i, (name, step) in enumerate(steps.items()):
            seconds = left(deadline) / (len(steps) - i)
            if seconds < (20 if device.type == "cuda" else 1):
                notes.append(f"{name} compiled: skipped, {max(seconds, 0):.0f} s of the budget left")
                print(f"  {notes[-1]}", flush=True)
                continue
            try:
                record = measure_compiled(step, times, u0, generator, args.repeats, seconds)
                record["compiled_speedup_vs_loop"] = results[name]["loop_step_s"] / record["compiled_step_s"]
                results[name].update(record)
                print(f"  {name} compiled: step {record['compiled_step_s'] * 1e3:.2f} ms (compiled in "
                      f"{record['compile_s']:.0f} s)", flush=True)
            except OutOfTime:
                notes.append(f"{name} compiled: not finished within its {seconds:.0f} s (torch.compile still "
                             "compiling?)")
                print(f"  {notes[-1]}", flush=True)
            except Exception as exc:  # noqa: BLE001 - torch.compile may not work here: report, go on
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                notes.append(f"{name} compiled: failed: {type(exc).__name__}: {first_line}")
                print(f"  {notes[-1]}", flush=True)
            finally:
                torch._dynamo.reset()
    text, table = overhead_text(args, results, notes)
    print(table, flush=True)
    payload = {"settings": {"config": args.sample_config, "batch": args.batch, "precision": args.precision,
                            "steps": n, "grid": "quadratic", "cudnn_benchmark": torch.backends.cudnn.benchmark,
                            "compiled": compiled},
               "results": results, "notes": notes}
    write_part(args, "overhead", payload, text)
    return payload


def overhead_text(args, results: dict, notes: list[str]) -> tuple[str, str]:
    """The markdown of the overhead part and its table."""
    def ms(record, key):
        return "-" if key not in record else record[key] * 1e3

    rows = []
    for name in SAMPLER_NAMES:
        r = results[name]
        rows.append([name, results["network_s"] * 1e3, results["score_s"] * 1e3, r["loop_step_s"] * 1e3,
                     r["outside_network_fraction_loop"], r["sampler_per_nfe_s"] * 1e3,
                     r["outside_network_fraction_sampler"], ms(r, "compiled_step_s"), ms(r, "graph_step_s"),
                     r.get("outside_network_fraction_graph", "-")])
    headers = ["sampler", "network ms", "score ms", "library step ms", "outside net (step)", "sampler ms/NFE",
               "outside net (sampler)", "compiled step ms", "graph step ms", "outside net (graph)"]
    table = markdown_table(headers, rows)
    graph_net = results.get("network_graph_s")
    text = (f"Sampler overhead, `{args.sample_config}` UNet (random weights), batch {args.batch}, {args.precision} "
            f"autocast, {args.sample_steps}-step quadratic grid. Network: `UNetVelocityNet` alone; score: "
            "`MixedScore` (host-side coefficients); library step: the library's SSCS / EM step planned once "
            "(`plan_step`) and called `plan(u, i)` per interval; sampler: the full `splitdyn_cld.samplers.sample` "
            "call per NFE; compiled step: the same plan after `plan.compile()` (torch.compile); graph step: "
            "`splitdyn.CapturedLoop` of the same step, one graph replay per run. Outside-network fraction = "
            "1 - t_network / t_step (with graphs: the network replayed as a graph alone)."
            + ("" if graph_net is None else f" Network replayed as a CUDA graph: {graph_net * 1e3:.3f} ms.")
            + f"\n\n{table}\n\n" + notes_text(notes))
    return text, table
