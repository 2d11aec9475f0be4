"""Cost per sampling step: the library's EM and SSCS against an expert's hand loop (the floor) and torchsde.

Everything integrates the same CLD reverse-time SDE (d = 2 by default) with the same linear velocity score
over the same uniform grid, in interleaved timing rounds (so a shared machine's drifting speed affects all
alike; ratios are medians of per-round ratios):

- ``EM`` / ``SSCS``: ``splitdyn.integrate`` with ``EulerMaruyama(reverse)`` / ``split_step(reverse)`` (plans
  built once per grid, outside the timing, as a sampler reused over a grid would);
- ``floor EM`` / ``floor SSCS``: what an expert writes by hand: per-step matrices precomputed (the same
  tables: ``A (x) I_d`` transposed, noise drawn only for the velocity), one ``addmm`` chain per step;
- ``compiled``: the library with ``compile=True`` and the hand loop's step under ``torch.compile`` (CPU
  inductor), when ``--compile`` is given;
- ``torchsde``: ``torchsde.sdeint(method="euler")`` on the same SDE (one call, ``dt`` the step).

Run ``python benchmarks/bench_step_cost.py --help``. Results: ``benchmarks/results/step_cost_<device>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, markdown_table, median_time, write_results  # noqa: E402

from splitdyn import EulerMaruyama, apply_matrix, split_step, uniform_grid  # noqa: E402
from splitdyn.integrate import plan_step  # noqa: E402
from splitdyn.steps.base import Intervals  # noqa: E402
from splitdyn.steps.noise import as_noise_source  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402


class LinearVelocityScore:
    """Exact velocity score of CLD from N(0, data_variance) data: a per-time matrix on the state, precomputed for
    the grid's times (the same user score for every contestant). With a tensor time (compiled plans) the row is
    found by tensor arithmetic on the uniform grid, so the score compiles into the step without graph breaks."""

    def __init__(self, cld: CLD, times, dtype, device, data_variance: float = 0.3) -> None:
        S0 = torch.tensor([[data_variance, 0.0], [0.0, cld.gamma * cld.mass]], dtype=torch.float64)
        self.rows = {}
        rows = []
        for t in times:
            Phi, Q = cld.kernel(float(t))
            rows.append((-torch.linalg.inv(Phi @ S0 @ Phi.T + Q)[1:2]).to(dtype=dtype, device=device))
            self.rows[round(float(t), 9)] = rows[-1]
        self.table = torch.stack(rows)  # (n, 1, 2) for the forward times T - tau_i, tau_i = i * dt
        self.T, self.dt = float(cld.T), float(times[0] - times[1])

    def __call__(self, u, t):
        if isinstance(t, torch.Tensor):
            row = self.table[torch.round((self.T - t) / self.dt).long()]
            return torch.einsum("ij,bj...->bi...", row, u)
        return apply_matrix(self.rows[round(float(t), 9)], u)  # torchsde accumulates t + dt: round


def hand_loop_tables(cld: CLD, times: list[float], d: int, dtype, device, sampler: str):
    """The expert's precomputed per-step tables (transposed ``A (x) I_d``), from the library's float64 maths."""
    reverse = cld.reverse(lambda u, t: u[:, 1:])
    intervals = Intervals.from_grid(times)
    eye = torch.eye(d, dtype=torch.float64)

    def kron_t(table):
        return torch.stack([torch.kron(a.contiguous(), eye).T for a in table]).to(dtype=dtype, device=device).contiguous()

    if sampler == "em":
        M, C, L, score_times = reverse.euler_maruyama_tables(intervals)
        return kron_t(M), kron_t(C), kron_t(L[..., 1:]), score_times
    # SSCS with fused half-flows: S(h) then the exact flow over the joint interval
    plan = plan_step(split_step(reverse), times, torch.zeros(1, 2, d, dtype=torch.float64))
    flow_map = plan.fused.map
    score_map = plan.plans[0].drift.map
    Phi = [flow_map.matrices(i)[0] for i in range(len(times))]
    Lf = [flow_map.matrices(i)[1] for i in range(len(times))]
    Ms = [score_map.matrices(i)[0] for i in range(len(times) - 1)]
    Cs = [score_map.matrices(i)[1] for i in range(len(times) - 1)]
    return kron_t(Phi), kron_t(Lf), kron_t(Ms), kron_t(Cs), plan.plans[0].drift.score_times


def hand_em(u, score, tables, n, generator):
    M, C, L, t = tables
    b = u.shape[0]
    flat = u.reshape(b, -1)
    for i in range(n):
        s = score(flat.view(b, 2, -1), t[i]).reshape(b, -1)
        z = torch.randn((b, L.shape[1]), generator=generator, dtype=u.dtype, device=u.device)
        flat = torch.addmm(torch.addmm(torch.mm(flat, M[i]), s, C[i]), z, L[i])
    return flat.view(u.shape)


def hand_sscs(u, score, tables, n, generator):
    Phi, Lf, Ms, Cs, t = tables
    b = u.shape[0]
    z = torch.randn(flat_shape := (b, Phi.shape[1]), generator=generator, dtype=u.dtype, device=u.device)
    flat = torch.addmm(torch.mm(u.reshape(b, -1), Phi[0]), z, Lf[0])
    for i in range(n):
        s = score(flat.view(b, 2, -1), t[i]).reshape(b, -1)
        flat = torch.addmm(torch.mm(flat, Ms[i]), s, Cs[i])
        z = torch.randn(flat_shape, generator=generator, dtype=u.dtype, device=u.device)
        flat = torch.addmm(torch.mm(flat, Phi[i + 1]), z, Lf[i + 1])
    return flat.view(u.shape)


def run(args) -> dict:
    import torchsde

    device = torch.device(args.device)
    cld = CLD()
    times = uniform_grid(args.steps, eps=1e-3).tolist()
    n, d = args.steps, args.dimension
    rows, records = [], []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch_sizes:
            generator = torch.Generator(device=device).manual_seed(0)
            noise = as_noise_source(generator)
            dtype = torch.float32
            score = LinearVelocityScore(cld, [cld.T - t for t in times], dtype, device)
            reverse = cld.reverse(score)
            u0 = cld.prior_sample((batch, d), generator=generator, dtype=dtype, device=device)
            em_plan = plan_step(EulerMaruyama(reverse), times, u0)
            sscs_plan = plan_step(split_step(reverse), times, u0)
            em_tables = hand_loop_tables(cld, times, d, dtype, device, "em")
            sscs_tables = hand_loop_tables(cld, times, d, dtype, device, "sscs")
            adapter = reverse.as_torchsde((d,), noise_type="diagonal")
            ts = torch.tensor([times[0], times[-1]], dtype=torch.float64, device=device)
            dt = times[1] - times[0]

            def library(plan):
                def go():
                    with torch.no_grad():
                        u = u0
                        for i in range(n):
                            u = plan(u, i, noise)
                return go

            contestants = {
                "EM": library(em_plan),
                "SSCS": library(sscs_plan),
                "floor EM": lambda: hand_em(u0, score, em_tables, n, generator),
                "floor SSCS": lambda: hand_sscs(u0, score, sscs_tables, n, generator),
                "torchsde": lambda: torchsde.sdeint(adapter, u0.reshape(batch, -1), ts, method="euler",
                                                    dt=dt * (1.0 + 1e-11)),
            }
            if args.compile:
                em_compiled = plan_step(EulerMaruyama(reverse), times, u0)
                em_compiled.compile()
                contestants["EM compiled"] = library(em_compiled)
                step = torch.compile(lambda flat, s, z, M, C, L: torch.addmm(torch.addmm(torch.mm(flat, M), s, C), z, L))
                M, C, L, t = em_tables

                def floor_compiled():
                    flat = u0.reshape(batch, -1)
                    for i in range(n):
                        s = score(flat.view(batch, 2, -1), t[i]).reshape(batch, -1)
                        z = torch.randn((batch, L.shape[1]), generator=generator, dtype=dtype, device=device)
                        flat = step(flat, s, z, M[i], C[i], L[i])

                contestants["floor EM compiled"] = floor_compiled
            names = list(contestants)
            rounds = []
            for r in range(args.repeats):
                rounds.append([median_time(contestants[k], 1, device, warmup=2 if r == 0 else 0) / n for k in names])
            med = {k: statistics.median(rr[j] for rr in rounds) for j, k in enumerate(names)}
            ratio = lambda a, b: statistics.median(rr[names.index(a)] / rr[names.index(b)] for rr in rounds)  # noqa: E731
            record = {"threads": threads, "batch": batch, "us_per_step": {k: v * 1e6 for k, v in med.items()},
                      "em_over_floor": ratio("EM", "floor EM"), "sscs_over_floor": ratio("SSCS", "floor SSCS"),
                      "torchsde_over_em": ratio("torchsde", "EM"), "torchsde_over_sscs": ratio("torchsde", "SSCS")}
            if args.compile:
                record["em_compiled_over_floor_compiled"] = ratio("EM compiled", "floor EM compiled")
            records.append(record)
            row = [threads, batch] + [med[k] * 1e6 for k in names] + [
                record["em_over_floor"], record["sscs_over_floor"], record["torchsde_over_em"],
                record["torchsde_over_sscs"]] + ([record["em_compiled_over_floor_compiled"]] if args.compile else [])
            rows.append(row)
            print(" | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row), flush=True)
    headers = ["threads", "batch"] + [f"{k} us" for k in names] + [
        "EM/floor", "SSCS/floor", "torchsde/EM", "torchsde/SSCS"] + (["EM/floor (compiled)"] if args.compile else [])
    table = markdown_table(headers, rows)
    name = f"step_cost_{device.type}" + ("_quick" if args.quick else "")
    command = f"python benchmarks/bench_step_cost.py {' '.join(sys.argv[1:])}"
    write_results(name, {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": records},
                  f"Command: `{command}`\n\n{table}", args.out)
    if args.plot:
        plot(records, names, Path(args.out or RESULTS) / f"{name}.png", args)
    print(table)
    return {"results": records}


def profile(args) -> None:
    """cProfile of the library's EM and SSCS loops and of the hand loop at the smallest batch (where the fixed
    per-step cost shows): ``step_cost_profile_<device>.md``."""
    import cProfile
    import io
    import pstats

    torch.set_num_threads(1)
    cld, n, d, batch = CLD(), args.steps, args.dimension, min(args.batch_sizes)
    times = uniform_grid(n, eps=1e-3).tolist()
    score = LinearVelocityScore(cld, [cld.T - t for t in times], torch.float32, "cpu")
    reverse = cld.reverse(score)
    u0 = cld.prior_sample((batch, d), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    plans = {"EM": plan_step(EulerMaruyama(reverse), times, u0), "SSCS": plan_step(split_step(reverse), times, u0)}
    tables = hand_loop_tables(cld, times, d, torch.float32, "cpu", "em")
    sections = []
    for name, fn in [("library EM", lambda: _loop(plans["EM"], u0, n, generator)),
                     ("library SSCS", lambda: _loop(plans["SSCS"], u0, n, generator)),
                     ("hand loop EM", lambda: hand_em(u0, score, tables, n, generator))]:
        fn()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(100):
            fn()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(10)
        body = text.getvalue()
        sections.append(f"## {name}, batch {batch}, {n} steps x 100 runs\n\n```\n{body[body.index('ncalls'):].strip()}\n```")
    out = Path(args.out or RESULTS) / "step_cost_profile_cpu.md"
    out.write_text(f"Machine: {machine()}\n\nCommand: `python benchmarks/bench_step_cost.py --profile`\n\n"
                   + "\n\n".join(sections) + "\n")
    print(f"wrote {out}")


def _loop(plan, u0, n, generator):
    noise = as_noise_source(generator)
    with torch.no_grad():
        u = u0
        for i in range(n):
            u = plan(u, i, noise)
    return u


def plot(records, names, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.threads), figsize=(6 * len(args.threads), 4), squeeze=False)
    for ax, threads in zip(axes[0], args.threads):
        chosen = [r for r in records if r["threads"] == threads]
        for k in names:
            ax.loglog([r["batch"] for r in chosen], [r["us_per_step"][k] for r in chosen], "o-", label=k)
        ax.set_xlabel("batch size (states)")
        ax.set_ylabel("microseconds per step")
        ax.set_title(f"CLD reverse SDE, d={args.dimension}, {threads} thread(s)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op threads (CPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dimension", type=int, default=2, help="data dimension d (states are 2 x d)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--compile", action="store_true", help="also time the compiled library step and hand loop")
    parser.add_argument("--quick", action="store_true", help="batch sizes 1e2..1e4, 1 thread, 3 repeats")
    parser.add_argument("--profile", action="store_true", help="only profile the smallest batch (cProfile)")
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.threads, args.repeats = [100, 1_000, 10_000], [1], 3
    print(f"machine: {machine()}")
    if args.profile:
        profile(args)
        return {}
    return run(args)


if __name__ == "__main__":
    main()
