"""Accuracy against NFE with analytic Gaussian-mixture scores: our samplers vs the torchsde/torchdiffeq references.

Problems: the paper's 2-D 9-mode mixture, and a d = 64, 16-mode mixture. Samplers, all on the same CLD
reverse SDE with the same exact score (M = 0.25, Gamma = 1, beta = 4, gamma = 0.04, eps = 1e-3 with the
denoising step): SSCS (ours), Euler-Maruyama (ours) and ``torchsde.sdeint(method="euler")``, each on the
uniform and the quadratic grid, ``torchsde`` ``srk`` (additive noise, uniform grid), the probability-flow ODE
through torchdiffeq ``dopri5`` at several tolerances, and the VPSDE with EM on both grids. NFE counts score
evaluations (the denoising step included). Each problem also records the metrics' sampling floor: their
value for a fresh exact data sample of the same size.

Metrics: the paper's mean -log p_data(x) of samples, the sliced Wasserstein-2 distance to fresh data
samples (a proper distance), and the mode-weight error. Output: table, JSON, markdown and a frontier plot
(SW2 vs NFE) in ``benchmarks/results/accuracy_<problem>.*``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, markdown_table, write_results  # noqa: E402

from splitdyn import ProbabilityFlowODE, ReverseSDE  # noqa: E402
from splitdyn.grids import make_grid  # noqa: E402
from splitdyn.metrics import mode_weight_error, wasserstein_sliced  # noqa: E402
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture, random_mixture  # noqa: E402
from splitdyn.samplers import sample_euler_maruyama, sample_probability_flow, sample_split, sample_torchsde  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402
from splitdyn_cld.vpsde import vpsde  # noqa: E402

EPS = 1e-3


def problem(name: str):
    if name == "mixture2d":
        return diamond_mixture()
    return random_mixture(64, 16, torch.Generator().manual_seed(0), std=0.1, scale=1.0)


def run_problem(name: str, args) -> list[dict]:
    mixture = problem(name)
    d = mixture.dimension
    cld = CLD()
    reverse = ReverseSDE(cld, DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]]).score_fn([1]), [1])
    vp = vpsde()
    vp_reverse = ReverseSDE(vp, DiffusedGaussianMixture(mixture, vp).score_fn())
    reference = mixture.sample(args.samples, torch.Generator().manual_seed(123), dtype=torch.float64)
    rows = []

    def metrics(x):
        return {"nll": (-mixture.log_prob(x)).mean().item(),
                "sw2": wasserstein_sliced(x, reference, generator=torch.Generator().manual_seed(0)),
                "mode_weight_error": mode_weight_error(x, mixture)}

    # the metrics' sampling floor: a fresh exact data sample of the same size scores this, not 0
    floor = metrics(mixture.sample(args.samples, torch.Generator().manual_seed(999), dtype=torch.float64))
    print(f"{name:>10} {'fresh data sample':<22} (floor)     -log p {floor['nll']:9.3f}  SW2 {floor['sw2']:.4f}  "
          f"mode err {floor['mode_weight_error']:.3f}", flush=True)

    def record(method, x, nfe, seconds):
        x = x.to(torch.float64)
        rows.append({"problem": name, "method": method, "nfe": int(nfe), **metrics(x), "seconds": seconds})
        print(f"{name:>10} {method:<22} NFE {nfe:>5}  -log p {rows[-1]['nll']:9.3f}  SW2 {rows[-1]['sw2']:.4f}  "
              f"mode err {rows[-1]['mode_weight_error']:.3f}  ({seconds:.1f} s)", flush=True)

    def prior(seed):
        return cld.prior_sample((args.samples, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    for nfe in args.nfe:
        steps = nfe - 1  # one evaluation goes to the denoising step
        for grid in ("uniform", "quadratic"):
            start = time.perf_counter()
            sol = sample_split(reverse, prior(1), make_grid(grid, steps, cld.T, EPS), denoise_eps=EPS,
                               generator=torch.Generator().manual_seed(2))
            record(f"CLD SSCS ({grid})", sol.state[:, 0], sol.nfe, time.perf_counter() - start)
        for grid in ("uniform", "quadratic"):  # the Euler baselines on both grids, for same-grid comparisons
            start = time.perf_counter()
            sol = sample_euler_maruyama(reverse, prior(1), make_grid(grid, steps, cld.T, EPS), denoise_eps=EPS,
                                        generator=torch.Generator().manual_seed(2))
            record(f"CLD EM ({grid})", sol.state[:, 0], sol.nfe, time.perf_counter() - start)
            start = time.perf_counter()
            sol = sample_torchsde(reverse, prior(1), make_grid(grid, steps, cld.T, EPS), method="euler",
                                  denoise_eps=EPS, generator=torch.Generator().manual_seed(2))
            record(f"CLD torchsde euler ({grid})", sol.state[:, 0], sol.nfe, time.perf_counter() - start)
        srk_steps = max(1, (nfe - 1) // 3)  # srk evaluates the drift 3 times per step (additive noise)
        start = time.perf_counter()
        sol = sample_torchsde(reverse, prior(1), make_grid("uniform", srk_steps, cld.T, EPS), method="srk",
                              noise_type="additive", denoise_eps=EPS)
        record("CLD torchsde srk (uniform)", sol.state[:, 0], sol.nfe, time.perf_counter() - start)
        for grid in ("uniform", "quadratic"):
            start = time.perf_counter()
            u = torch.randn(args.samples, 1, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            sol = sample_euler_maruyama(vp_reverse, u, make_grid(grid, steps, vp.T, EPS), denoise_eps=EPS,
                                        generator=torch.Generator().manual_seed(2))
            record(f"VPSDE EM ({grid})", sol.state[:, 0], sol.nfe, time.perf_counter() - start)
    for tol in args.tolerances:
        start = time.perf_counter()
        ode = ProbabilityFlowODE(cld, reverse.score, [1])
        sol = sample_probability_flow(ode, prior(1), eps=EPS, rtol=tol, atol=tol)
        record(f"CLD ODE dopri5 tol={tol:g}", sol.state[:, 0], sol.nfe, time.perf_counter() - start)
    return rows, floor


def plot(rows, floor, name, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    methods = sorted({r["method"].split(" tol=")[0] for r in rows})
    for m in methods:
        pts = sorted((r["nfe"], r["sw2"]) for r in rows if r["method"].split(" tol=")[0] == m)
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
    ax.axhline(floor["sw2"], color="gray", ls="--", lw=1, label="fresh data sample (floor)")
    ax.set_xlabel("NFE (score evaluations)")
    ax.set_ylabel("sliced W2 to data")
    ax.set_title(f"accuracy vs NFE: {name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["mixture2d", "mixture64d"], choices=["mixture2d", "mixture64d"])
    parser.add_argument("--nfe", type=int, nargs="+", default=[20, 50, 100, 200])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1e-2, 1e-3, 1e-5])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2-D problem, NFE 20/50/100, 5k samples (make bench)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.nfe, args.samples, args.tolerances = ["mixture2d"], [20, 50, 100], 5000, [1e-2, 1e-4]
    print(f"machine: {machine()}")
    out = Path(args.out or RESULTS)
    for name in args.problems:
        rows, floor = run_problem(name, args)
        headers = ["method", "NFE", "-log p_data", "SW2", "mode err", "seconds"]
        table = markdown_table(headers, [[r["method"], r["nfe"], r["nll"], r["sw2"], r["mode_weight_error"], r["seconds"]] for r in rows])
        table += (f"\nSampling floor, a fresh data sample of the same size ({args.samples}): -log p_data "
                  f"{floor['nll']:.4g}, SW2 {floor['sw2']:.4g}, mode err {floor['mode_weight_error']:.4g}\n")
        print(table)
        cmd = f"Command: `python benchmarks/bench_accuracy.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
        stem = f"accuracy_{name}" + ("_quick" if args.quick else "")  # a quick run never replaces a full one
        write_results(stem, {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "floor": floor, "results": rows},
                      f"{cmd}\n\n{table}", out)
        plot(rows, floor, name, out / f"{stem}.png")


if __name__ == "__main__":
    main()
