"""Accuracy against NFE with exact Gaussian-mixture scores: our samplers against torchsde, torchdiffeq and a
published DPM-Solver++ (diffusers), on CLD and on the VP SDE.

Problems: the paper's 2-D 9-mode mixture (``diamond_mixture``) and a 64-D 16-mode mixture
(``random_mixture``). Every sampler gets the exact score of the diffused mixture (float64) and a budget of NFE
score evaluations; results are averaged over seeds (prior draw and noise).

- CLD (M = 0.25, Gamma = 1, beta = 4, gamma = 0.04, eps = 1e-3): every fixed-grid sampler takes NFE
  score-evaluating steps to eps and finishes with the score-free data update of eq. 109,
  x_0 = x_eps - eps beta M^-1 v_eps (GG^T vanishes on x). Ours: exponential integrators ``ei-ode-q``,
  ``ei-sde-q``, ``gddim-3``, Heun / RK4 on the probability flow (all on the power-4 grid in t), SSCS and EM
  (quadratic grid); peers: ``torchsde`` euler (quadratic grid) and srk (3 evaluations a step, quadratic grid),
  ``torchdiffeq`` dopri5 at several tolerances.
- VP (beta 0.1 -> 20, eps = 1e-3): NFE - 1 steps, then one Tweedie denoising evaluation x_0 = E[x_0 | x_eps].
  Ours: ``ei-ode-3`` (power-3 grid in t), DPM-Solver++ ``dpmpp-2m``, ``dpmpp-3m`` (log-SNR grid), EM
  (quadratic grid). Peer: diffusers' ``DPMSolverMultistepScheduler`` (2M midpoint, the default, and 3M) fed
  the log-SNR grid or the power-3 grid as its sigmas (sigma / alpha) and ending at sigma = 0 (its own final x0
  prediction): the same NFE and nodes as ours.

Metrics: sliced W2 to a fixed data sample (and its sampling floor: the same statistic for fresh data samples of
the same size, averaged over the seeds), mean -log p_data of the samples, and the mode-weight error.
Output: ``benchmarks/results/accuracy_<problem>.{json,md,png}`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, markdown_table, write_results  # noqa: E402

from splitdyn import AdaptiveProbabilityFlow, LogSNRGrid, PowerGrid, QuadraticGrid, VPSDE, sample  # noqa: E402
from splitdyn.metrics import mode_weight_error, wasserstein_sliced  # noqa: E402
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture, random_mixture  # noqa: E402
from splitdyn.steps.exponential_weights import DiffusionGeometry  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402

EPS = 1e-3
F64 = torch.float64


def problem(name: str):
    if name == "mixture2d":
        return diamond_mixture()
    return random_mixture(64, 16, torch.Generator().manual_seed(0), std=0.1, scale=1.0)


class Setup:
    """Processes, exact scores and the shared final steps of one problem."""

    def __init__(self, mixture):
        self.mixture = mixture
        self.d = mixture.dimension
        self.cld = CLD()
        self.cld_score = DiffusedGaussianMixture(mixture, self.cld, self.cld.initial_covariance()).score_fn([1])
        self.vp = VPSDE()
        self.vp_score = DiffusedGaussianMixture(mixture, self.vp).score_fn()
        D, E = DiffusionGeometry(self.vp).tweedie(torch.tensor(EPS, dtype=F64))
        self.vp_tweedie = (D.item(), E.item())
        self.cld_x_rate = EPS * self.cld.beta(EPS).item() / self.cld.mass

    def cld_prior(self, n, seed):
        return self.cld.prior_sample((n, self.d), torch.Generator().manual_seed(seed), dtype=F64)

    def cld_x0(self, u):  # eq. 109: x_0 = x_eps - eps beta M^-1 v_eps, no score (the library's score-free map)
        from splitdyn import score_free_denoise

        return score_free_denoise(self.cld, u, EPS)[:, 0]

    def vp_x0(self, x):  # Tweedie at eps: one evaluation
        D, E = self.vp_tweedie
        return D * x[:, 0] + E * self.vp_score(x, EPS)[:, 0]


RHO = 4.0  # the power grid of our CLD samplers: rho = 4 beat 2, 3 and 5 for EI-ODE-3 at NFE 10 and 20
RHO_VP = 3.0  # and of the VP samplers: rho = 3 beat 2, 4 and the log-SNR grid for EI-ODE-3 at NFE 10


def cld_fixed(step, grid_kind, evaluations_per_step=1):
    def run(setup, n, nfe, seed):
        steps = max(1, nfe // evaluations_per_step)
        grid = PowerGrid(steps, RHO, EPS) if grid_kind == "power" else QuadraticGrid(steps, EPS)
        sol = sample(setup.cld, setup.cld_score, setup.cld_prior(n, seed), grid, step=step, denoise=False,
                     generator=torch.Generator().manual_seed(seed + 1000))
        return setup.cld_x0(sol.state), sol.nfe
    return run


def cld_dopri(tol):
    def run(setup, n, nfe, seed):
        sol = sample(setup.cld, setup.cld_score, setup.cld_prior(n, seed), None,
                     step=AdaptiveProbabilityFlow(tol, tol, "dopri5", EPS), denoise=False)
        return setup.cld_x0(sol.state), sol.nfe
    return run


def vp_grid(kind, steps, vp):
    if kind == "log_snr":
        return LogSNRGrid(steps, vp, EPS)
    return PowerGrid(steps, RHO_VP, EPS) if kind == "power" else QuadraticGrid(steps, EPS)


def vp_fixed(step, grid_kind):
    def run(setup, n, nfe, seed):
        grid = vp_grid(grid_kind, nfe - 1, setup.vp)
        x = torch.randn(n, 1, setup.d, generator=torch.Generator().manual_seed(seed), dtype=F64)
        sol = sample(setup.vp, setup.vp_score, x, grid, step=step, denoise=False,
                     generator=torch.Generator().manual_seed(seed + 1000))
        return setup.vp_x0(sol.state), sol.nfe + 1
    return run


def vp_diffusers(order, grid_kind):
    """diffusers' DPMSolverMultistepScheduler (published DPM-Solver++) fed our grid as its sigmas."""
    def run(setup, n, nfe, seed):
        from diffusers import DPMSolverMultistepScheduler

        vp = setup.vp
        t = 1.0 - vp_grid(grid_kind, nfe - 1, vp).reverse_times(vp.T)  # nfe nodes from T down to eps
        alpha, sigma = vp.alpha(t), vp.sigma(t)
        scheduler = DPMSolverMultistepScheduler(solver_order=order, algorithm_type="dpmsolver++")
        scheduler.set_timesteps(nfe)
        scheduler.sigmas = torch.cat([sigma / alpha, torch.zeros(1, dtype=F64)])  # final sigma 0: x0 at eps
        x = torch.randn(n, setup.d, generator=torch.Generator().manual_seed(seed), dtype=F64)
        for i, timestep in enumerate(scheduler.timesteps):
            noise = -sigma[i] * setup.vp_score(x.to(F64)[:, None], float(t[i]))[:, 0]  # epsilon prediction
            x = scheduler.step(noise, timestep, x).prev_sample
        return x.to(F64), nfe
    return run


def methods(args):
    """(label, family, process, runner, NFE list) of every sampler in the run: the main samplers at every NFE,
    the variants at NFE <= 30 (the range they are for), the costly peers at a few budgets."""
    nfe = args.nfe
    low = [n for n in nfe if n <= 30]
    out = [
        ("CLD EI-ODE-3 (power-4)", "ours", "CLD", cld_fixed("ei-ode-3", "power"), nfe),
        ("CLD EI-ODE-2 (power-4)", "ours", "CLD", cld_fixed("ei-ode-2", "power"), low),
        ("CLD EI-SDE-2 (power-4)", "ours", "CLD", cld_fixed("ei-sde-2", "power"), nfe),
        ("CLD EI-SDE-1 (power-4)", "ours", "CLD", cld_fixed("ei-sde-1", "power"), low),
        ("CLD gDDIM-3 (power-4)", "ours", "CLD", cld_fixed("gddim-3", "power"), low),
        ("CLD Heun (power-4)", "ours", "CLD", cld_fixed("heun", "power", 2), [n for n in nfe if 20 <= n <= 50]),
        ("CLD RK4 (power-4)", "ours", "CLD", cld_fixed("rk4", "power", 4), [n for n in nfe if n in (20, 50)]),
        ("CLD SSCS (quadratic)", "ours", "CLD", cld_fixed("sscs", "quadratic"), nfe),
        ("CLD EM (quadratic)", "ours", "CLD", cld_fixed("em", "quadratic"), nfe),
        ("VP EI-ODE-3 (ours, power-3)", "ours", "VP", vp_fixed("ei-ode-3", "power"), nfe),
        ("VP DPM-Solver++ 2M (ours, log-SNR)", "ours", "VP", vp_fixed("dpmpp-2m", "log_snr"), nfe),
        ("VP DPM-Solver++ 3M (ours, log-SNR)", "ours", "VP", vp_fixed("dpmpp-3m", "log_snr"), low),
        ("VP EM (quadratic)", "ours", "VP", vp_fixed("em", "quadratic"), low),
    ]
    if args.no_peers:
        return out
    out += [
        ("CLD torchsde euler (quadratic)", "peer", "CLD", cld_fixed("torchsde-euler", "quadratic"), nfe),
        ("CLD torchsde srk (quadratic)", "peer", "CLD", cld_fixed("torchsde-srk", "quadratic", 3),
         [n for n in nfe if n in (30, 100)]),
    ]
    if importlib.util.find_spec("diffusers") is None:
        print("diffusers is not installed (pip install splitdyn[bench]): its DPM-Solver++ is left out", flush=True)
    else:
        out += [
            ("VP diffusers DPM-Solver++ 2M (log-SNR)", "peer", "VP", vp_diffusers(2, "log_snr"), nfe),
            ("VP diffusers DPM-Solver++ 3M (log-SNR)", "peer", "VP", vp_diffusers(3, "log_snr"), nfe),
            ("VP diffusers DPM-Solver++ 2M (power-3)", "peer", "VP", vp_diffusers(2, "power"), low),
            ("VP diffusers DPM-Solver++ 3M (power-3)", "peer", "VP", vp_diffusers(3, "power"), nfe),
        ]
    out += [(f"CLD torchdiffeq dopri5 tol={tol:g}", "peer", "CLD", cld_dopri(tol), [0]) for tol in args.tolerances]
    return out


def run_problem(name: str, args):
    setup = Setup(problem(name))
    mixture = setup.mixture
    n = args.samples if name == "mixture2d" else args.samples_64d
    reference = mixture.sample(n, torch.Generator().manual_seed(123), dtype=F64)

    def metrics(x):
        return {"nll": (-mixture.log_prob(x)).mean().item(),
                "sw2": wasserstein_sliced(x, reference, generator=torch.Generator().manual_seed(0)),
                "mode_weight_error": mode_weight_error(x, mixture)}

    fresh = [metrics(mixture.sample(n, torch.Generator().manual_seed(999 + s), dtype=F64)) for s in args.seeds]
    floor = {key: statistics.mean(f[key] for f in fresh) for key in fresh[0]}
    print(f"{name}: floor (fresh data samples) SW2 {floor['sw2']:.4f}  -log p {floor['nll']:.3f}", flush=True)
    rows = []
    for label, family, process, runner, budgets in methods(args):
        for budget in budgets:
            runs, start = [], time.perf_counter()
            for seed in args.seeds:
                x, used = runner(setup, n, budget, seed)
                runs.append({**metrics(x), "nfe": used})
            seconds = (time.perf_counter() - start) / len(runs)
            sw2 = [r["sw2"] for r in runs]
            row = {"problem": name, "method": label, "family": family, "process": process, "budget": budget,
                   "nfe": round(statistics.mean(r["nfe"] for r in runs)),
                   "sw2": statistics.mean(sw2), "sw2_std": statistics.stdev(sw2) if len(sw2) > 1 else 0.0,
                   "nll": statistics.mean(r["nll"] for r in runs),
                   "mode_weight_error": statistics.mean(r["mode_weight_error"] for r in runs),
                   "seconds": seconds}
            rows.append(row)
            print(f"{name:>10} {label:<36} NFE {row['nfe']:>4}  SW2 {row['sw2']:.4f} ± {row['sw2_std']:.4f}  "
                  f"-log p {row['nll']:9.3f}  mode err {row['mode_weight_error']:.3f}  ({seconds:.1f} s/run)", flush=True)
    return rows, floor


def targets(rows, floor, nfes, seeds: int) -> list[str]:
    """Issue 11's targets: CLD within 1.1x of the floor at NFE 20 and 1.5x at NFE 10; VP ours <= diffusers."""
    out = []
    cld = [r for r in rows if r["process"] == "CLD" and r["family"] == "ours"]
    for budget, factor in ((20, 1.1), (10, 1.5)):
        at = [r for r in cld if r["nfe"] == budget]
        if at:
            best = min(at, key=lambda r: r["sw2"])
            ratio = best["sw2"] / floor["sw2"]
            verdict = "met" if ratio <= factor else f"missed by {ratio / factor:.2f}x"
            ei = [f"{r['method']} {r['sw2'] / floor['sw2']:.2f}x" for r in at if "EI-" in r["method"]]
            out.append(f"CLD at NFE {budget} within {factor}x of the floor: **{verdict}** (best {best['method']}: "
                       f"SW2 {best['sw2']:.4g} = {ratio:.2f}x the floor {floor['sw2']:.4g}; exponential "
                       f"integrators: {', '.join(ei)})")
    lost, won = [], []
    for budget in nfes:
        ours = [r for r in rows if r["process"] == "VP" and r["family"] == "ours" and "EM" not in r["method"]
                and r["nfe"] == budget]
        peers = [r for r in rows if r["process"] == "VP" and r["family"] == "peer" and r["nfe"] == budget]
        if ours and peers:
            a, b = min(ours, key=lambda r: r["sw2"]), min(peers, key=lambda r: r["sw2"])
            # "matching": not worse by more than the standard error of the difference of the seed means
            error = math.sqrt((a["sw2_std"] ** 2 + b["sw2_std"] ** 2) / seeds)
            (won if a["sw2"] <= b["sw2"] + error else lost).append(
                f"NFE {budget}: {a['sw2']:.4g} vs {b['sw2']:.4g} (+- {error:.2g})")
    if won or lost:
        verdict = "met" if not lost else f"missed at {'; '.join(lost)}"
        out.append(f"VP: our best sampler at least matching diffusers' DPM-Solver++ (best of its variants and "
                   f"grids) at every NFE, within the standard error of the seed means: **{verdict}** "
                   f"({'; '.join(won + lost)})")
    return out


def plot(rows, floor, name, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, process in zip(axes, ("CLD", "VP")):
        for method in dict.fromkeys(r["method"].split(" tol=")[0] for r in rows if r["process"] == process):
            pts = sorted((r["nfe"], r["sw2"]) for r in rows if r["method"].split(" tol=")[0] == method)
            style = "o-" if any(r["family"] == "ours" for r in rows if r["method"].startswith(method)) else "s--"
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], style, label=method, ms=4)
        ax.axhline(floor["sw2"], color="gray", ls=":", lw=1.5, label="fresh data sample (floor)")
        ax.set_xlabel("NFE (score evaluations)")
        ax.set_title(f"{name}: {process}")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("sliced W2 to data (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["mixture2d", "mixture64d"], choices=["mixture2d", "mixture64d"])
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 15, 20, 30, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1e-2, 1e-3])
    parser.add_argument("--samples", type=int, default=10_000, help="samples of the 2-D problem")
    parser.add_argument("--samples-64d", type=int, default=3_000, help="samples of the 64-D problem (its score "
                        "costs ~4x more per sample)")
    parser.add_argument("--no-peers", action="store_true", help="skip torchsde, torchdiffeq and diffusers")
    parser.add_argument("--jobs", type=int, default=2, help="problems run in parallel, one thread each")
    parser.add_argument("--quick", action="store_true", help="2-D problem, NFE 10/20/50, 5k samples, one seed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.nfe, args.samples, args.seeds, args.tolerances = ["mixture2d"], [10, 20, 50], 5000, [1], [1e-3]
    print(f"machine: {machine()}")
    jobs = min(args.jobs, len(args.problems))
    if jobs > 1:  # one process (one thread) per problem
        with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
            list(pool.map(report_problem, args.problems, [args] * len(args.problems), [argv] * len(args.problems)))
    else:
        for name in args.problems:
            report_problem(name, args, argv)


def report_problem(name: str, args, argv) -> None:
    """Run one problem and write its table, JSON and plot."""
    torch.set_num_threads(1 if args.jobs > 1 else torch.get_num_threads())
    out = Path(args.out or RESULTS)
    rows, floor = run_problem(name, args)
    labels = list(dict.fromkeys(r["method"] for r in rows))
    pivot = []
    for label in labels:
        cells = {r["budget"]: r for r in rows if r["method"] == label}
        if "dopri5" in label:
            r = next(iter(cells.values()))
            pivot.append([f"{label} (NFE {r['nfe']})"] + [f"{r['sw2']:.4f}"] + [""] * (len(args.nfe) - 1))
        else:
            pivot.append([label] + [f"{cells[b]['sw2']:.4f}" + ("" if cells[b]["nfe"] == b else f" ({cells[b]['nfe']})")
                                    if b in cells else "" for b in args.nfe])
    table = markdown_table(["SW2 (mean of seeds)"] + [f"NFE {b}" for b in args.nfe], pivot)
    checks = targets(rows, floor, args.nfe, len(args.seeds))
    detail = markdown_table(["method", "NFE", "SW2", "SW2 std", "-log p_data", "mode err", "s/run"],
                            [[r["method"], r["nfe"], r["sw2"], r["sw2_std"], r["nll"], r["mode_weight_error"],
                              r["seconds"]] for r in rows])
    size = args.samples if name == "mixture2d" else args.samples_64d
    floor_text = (f"Sampling floor (fresh data samples of the same size, {size}, mean of {len(args.seeds)}): "
                  f"SW2 {floor['sw2']:.4g}, -log p_data {floor['nll']:.4g}, mode err {floor['mode_weight_error']:.4g}")
    cmd = f"Command: `python benchmarks/bench_accuracy.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
    text = "\n".join([cmd, "", table, "", floor_text, "", "Targets (issue 11):", "",
                      *[f"- {c}" for c in checks], "", "All metrics:", "", detail])
    print(text)
    stem = f"accuracy_{name}" + ("_quick" if args.quick else "")  # a quick run never replaces a full one
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    write_results(stem, {"settings": settings, "floor": floor, "targets": checks, "results": rows}, text, out)
    plot(rows, floor, name, out / f"{stem}.png")


if __name__ == "__main__":
    main()
