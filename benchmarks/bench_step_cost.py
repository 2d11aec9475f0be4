"""Cost per sampling step: SSCS and our Euler-Maruyama vs ``torchsde.sdeint(method="euler")``.

All three integrate the identical CLD reverse-time SDE with the identical score function over the same
uniform grid; the figure is the median wall time per step at each batch size, and the ratios
``torchsde / ours`` and ``SSCS / our EM``. The score is a cheap analytic Gaussian score by default (so the
benchmark exposes the per-step overhead of the integrators themselves); ``--score mixture`` uses the exact
score of the 2-D 9-mode Gaussian mixture instead.

Run ``python benchmarks/bench_step_cost.py --help``. Results go to ``benchmarks/results/step_cost_<device>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, markdown_table, median_time, write_results  # noqa: E402

from splitdyn import EulerMaruyama, ExactLinearFlow, EulerDrift, apply_matrix, integrate, strang, uniform_grid  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402


def gaussian_velocity_score(cld: CLD, data_variance: float = 0.3):
    """Exact velocity score of CLD started from N(0, data_variance) data (a linear map of the state)."""
    S0 = torch.tensor([[data_variance, 0.0], [0.0, cld.gamma * cld.mass]], dtype=torch.float64)
    cache: dict = {}

    def score(u, t):
        key = (float(t), u.dtype, u.device)
        if key not in cache:
            Phi, Q = cld.kernel(float(t))
            precision = torch.linalg.inv(Phi @ S0 @ Phi.T + Q)
            cache[key] = (-precision[1:2]).to(dtype=u.dtype, device=u.device)
        return apply_matrix(cache[key], u)

    return score


def mixture_velocity_score(cld: CLD):
    from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture

    oracle = DiffusedGaussianMixture(diamond_mixture(), cld, initial_covariance=[[cld.gamma * cld.mass]])
    return lambda u, t: oracle.component_score(u, t, [1])


def run(args) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cld = CLD()
    score = gaussian_velocity_score(cld) if args.score == "gaussian" else mixture_velocity_score(cld)
    reverse = cld.reverse(score)
    sscs = strang(ExactLinearFlow(cld.reverse_linear_part()), EulerDrift(reverse.score_drift()))
    em = EulerMaruyama(reverse)
    grid = uniform_grid(args.steps, eps=1e-3)
    dt = float(grid[1] - grid[0])
    adapter = reverse.as_torchsde((args.dimension,), noise_type="diagonal")
    import torchsde

    rows, records = [], []
    for batch in args.batch_sizes:
        generator = torch.Generator(device=device).manual_seed(0)
        u0 = cld.prior_sample((batch, args.dimension), generator=generator, dtype=torch.float32, device=device)
        y0 = u0.reshape(batch, -1)
        # what a user writes: one sdeint call over [tau_0, tau_n] with dt = the step (enlarged by 1e-11 relative so
        # that float rounding of t0 + k dt cannot add a spurious extra step; see splitdyn.sample_torchsde)
        ts = torch.tensor([float(grid[0]), float(grid[-1])], dtype=torch.float64, device=device)

        def ours_sscs():
            integrate(sscs, u0, grid, generator=generator, check_finite=False)

        def ours_em():
            integrate(em, u0, grid, generator=generator, check_finite=False)

        def reference():
            torchsde.sdeint(adapter, y0, ts, method="euler", dt=dt * (1.0 + 1e-11))

        # interleaved rounds (SSCS, EM, torchsde, SSCS, ...): a shared machine's drifting speed then affects the
        # three alike, and the ratios are medians of per-round ratios
        rounds = [[median_time(fn, 1, device, warmup=1 if r == 0 else 0) / args.steps
                   for fn in (ours_sscs, ours_em, reference)] for r in range(args.repeats)]
        t_sscs, t_em, t_ref = (statistics.median(r[i] for r in rounds) for i in range(3))
        ratio = lambda i, j: statistics.median(r[i] / r[j] for r in rounds)  # noqa: E731
        record = {
            "batch": batch,
            "sscs_s_per_step": t_sscs,
            "em_s_per_step": t_em,
            "torchsde_euler_s_per_step": t_ref,
            "torchsde_over_em": ratio(2, 1),
            "torchsde_over_sscs": ratio(2, 0),
            "sscs_over_em": ratio(0, 1),
        }
        records.append(record)
        rows.append([batch, t_sscs * 1e6, t_em * 1e6, t_ref * 1e6, record["torchsde_over_em"], record["torchsde_over_sscs"],
                     record["sscs_over_em"]])
        print(
            f"batch {batch:>8}: SSCS {t_sscs * 1e6:9.1f} us  EM {t_em * 1e6:9.1f} us  torchsde {t_ref * 1e6:9.1f} us"
            f"  torchsde/EM {record['torchsde_over_em']:5.2f}  torchsde/SSCS {record['torchsde_over_sscs']:5.2f}"
            f"  SSCS/EM {record['sscs_over_em']:4.2f}",
            flush=True,
        )
    headers = ["batch", "SSCS us/step", "our EM us/step", "torchsde EM us/step", "torchsde/EM", "torchsde/SSCS", "SSCS/EM"]
    table = markdown_table(headers, rows)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    name = f"step_cost_{device.type}" + ("_quick" if args.quick else "")  # a quick run never replaces a full one
    write_results(name, {"settings": settings, "results": records}, f"Command: `python benchmarks/bench_step_cost.py {' '.join(sys.argv[1:])}`\n\n{table}", args.out)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        b = [r["batch"] for r in records]
        for key, label in [("sscs_s_per_step", "SSCS (ours)"), ("em_s_per_step", "EM (ours)"), ("torchsde_euler_s_per_step", "torchsde euler")]:
            ax.loglog(b, [r[key] for r in records], "o-", label=label)
        ax.set_xlabel("batch size (states)")
        ax.set_ylabel("seconds per step")
        ax.set_title(f"CLD reverse SDE, d={args.dimension}, {device.type}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(args.out or RESULTS) / f"{name}.png", dpi=120)
    print(table)
    return {"results": records}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dimension", type=int, default=2, help="data dimension d (states are 2 x d)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved timing rounds")
    parser.add_argument("--score", choices=["gaussian", "mixture"], default="gaussian")
    parser.add_argument("--quick", action="store_true", help="batch sizes 1e2..1e5, 3 repeats (for make bench)")
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes = [100, 1_000, 10_000, 100_000]
        args.repeats = 3
    print(f"machine: {machine()}")
    return run(args)


if __name__ == "__main__":
    main()
