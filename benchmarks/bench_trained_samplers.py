"""Few-step samplers on trained toy models (issue 21): do the exact-score rankings survive a learned score?

Models: a CLD and a VP model trained by ``examples/toy_train.py`` on the diamond mixture and on the
multi-scale swiss roll (``--models`` folders holding ``cld.pt`` and ``vpsde.pt``; EMA weights, run in float64).
Every sampler runs at NFE 5, 10, 20 and 50 (score evaluations, as in ``bench_accuracy.py``: CLD takes NFE steps
then the score-free update of eq. 109; VP takes NFE - 1 steps then one Tweedie evaluation at eps = 1e-3), on
fixed grids and, at NFE 10, on a grid optimised for the trained model (``splitdyn.grid_search``, calibrated on prior draws
of a separate seed against 256 steps of the same sampler; no data is used). Reference lines: SSCS at NFE 50
(quadratic grid) for CLD, Euler-Maruyama at NFE 50 (quadratic grid) for VP.

Metrics per seed against a fresh data draw of the same size: SW2 (ratio to the floor: SW2 between two fresh
data draws, >= 5 pairs), and on the diamond the -log p_data gap and the mode-weight error. Mean +- s.e. over
seeds. Target: our best sampler at NFE 10 no worse than the reference line at NFE 50 (paired per-seed SW2
differences: met when better or tied within 2 s.e.). The digits model (FD) is not part of this run.

Output: ``benchmarks/results/trained_samplers.{json,md,png}`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SlicedW2, machine, markdown_table, mean_se, verdict_not_worse, write_results  # noqa: E402

from splitdyn import PowerGrid, QuadraticGrid, sample  # noqa: E402
from splitdyn.grid_search import search_grid  # noqa: E402
from splitdyn.grids import GivenGrid, InformationLogSNR, LogSNRGrid  # noqa: E402
from splitdyn.metrics import mode_weight_error, wasserstein_sliced  # noqa: E402
from splitdyn.oracles import diamond_mixture  # noqa: E402
from splitdyn.sample import SAMPLERS  # noqa: E402
from splitdyn.steps.exponential_weights import DiffusionGeometry  # noqa: E402
from splitdyn_cld.toy_data import get_toy_dataset  # noqa: E402
from splitdyn_cld.toy_models import load_toy_model  # noqa: E402

EPS = 1e-3
F64 = torch.float64
CALIBRATION_SEED = 1000
#: (sampler, grids): trimmed to what a 2-core run affords ("optimised" runs at NFE 10 only: a search with the
#: network costs minutes on a shared CPU)
CLD_SAMPLERS = [("ei-ode-3", ("power-4", "optimised")), ("unipc-3", ("power-4",)), ("unipc-2", ("power-4",)),
                ("ei-sde-2", ("power-4",))]
VP_SAMPLERS = [("ei-ode-3", ("power-3", "optimised")), ("unipc-3-bh1", ("power-3",)),
               ("dpmpp-2m-midpoint", ("log-snr",))]


class Model:
    """A trained toy model with its final step and grids."""

    def __init__(self, path: Path, quick: bool):
        toy = load_toy_model(path)
        self.kind = "CLD" if toy.kind == "cld" else "VP"
        self.process = toy.process
        self.score_model = toy.score.double()
        self.steps_trained = toy.step
        self.quick = quick
        if self.kind == "CLD":
            self.rate = EPS * self.process.beta(EPS).item() / self.process.mass
            self.snr = InformationLogSNR(self.process)
        else:
            D, E = DiffusionGeometry(self.process).tweedie(torch.tensor(EPS, dtype=F64))
            self.tweedie = (D.item(), E.item())
            self.snr = self.process
        self.grids: dict[str, list[float]] = {}

    def score(self, u, t):
        with torch.no_grad():
            return self.score_model(u, t)

    def finish(self, u):
        if self.kind == "CLD":  # eq. 109, no score
            return u[:, 0] - self.rate * u[:, 1]
        D, E = self.tweedie
        return D * u[:, 0] + E * self.score(u, EPS)[:, 0]

    def steps(self, nfe: int) -> int:
        return nfe if self.kind == "CLD" else nfe - 1

    def grid(self, kind: str, steps: int, sampler: str):
        if kind.startswith("power-"):
            return PowerGrid(steps, float(kind.split("-")[1]), EPS)
        if kind == "quadratic":
            return QuadraticGrid(steps, EPS)
        if kind == "log-snr":
            return LogSNRGrid(steps, self.snr, EPS)
        key = f"{sampler} {steps}"
        if key not in self.grids:
            settings = ({"batch": 128, "sweeps": 1, "evaluations_per_point": 4, "reference_steps": 64} if self.quick
                        else {"batch": 256, "sweeps": 2, "evaluations_per_point": 6})
            start = time.perf_counter()
            result = search_grid(self.process, self.score, sampler, steps, event_shape=(2,), eps=EPS,
                                 finish=self.finish, seed=CALIBRATION_SEED, **settings)
            print(f"  optimised grid {self.kind} {sampler} {steps} steps: D {result.history[0]:.3g} ({result.start})"
                  f" -> {result.discrepancy:.3g}, {time.perf_counter() - start:.0f} s", flush=True)
            self.grids[key] = result.grid.times.tolist()
        return GivenGrid(self.grids[key])

    def run(self, sampler: str, grid: str, nfe: int, n: int, seed: int):
        steps = self.steps(nfe)
        g = self.grid(grid, steps, sampler)
        initial = self.process.prior_sample((n, 2), torch.Generator().manual_seed(seed), dtype=F64)
        sol = sample(self.process, self.score, initial, g, step=sampler, denoise=False,
                     generator=torch.Generator().manual_seed(seed + 1000))
        return self.finish(sol.state), sol.nfe + (0 if self.kind == "CLD" else 1)


def configurations(kind: str, nfes, quick: bool):
    out = []
    for sampler, grids in CLD_SAMPLERS if kind == "CLD" else VP_SAMPLERS:
        if sampler not in SAMPLERS or (quick and sampler != "ei-ode-3"):
            continue
        out += [(sampler, grid, [10] if grid == "optimised" else nfes) for grid in grids]
    reference = ("sscs", "quadratic") if kind == "CLD" else ("em", "quadratic")
    out.append((*reference, [50] if not quick else [max(nfes)]))
    return out


def run_dataset(name: str, folder: Path, args):
    data = get_toy_dataset(name)
    n = args.samples
    projections = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    draw = lambda seed: data(n, generator=torch.Generator().manual_seed(seed), dtype=F64)  # noqa: E731
    density = diamond_mixture() if name == "diamond" else None
    pairs = [(draw(7000 + i), draw(8000 + i)) for i in range(args.floor_draws)]
    floor = mean_se([wasserstein_sliced(a, b, generator=projections()) for a, b in pairs])
    references = {seed: draw(5000 + seed) for seed in args.seeds}
    distance = {seed: SlicedW2(r) for seed, r in references.items()}
    rows = []
    for file in ("cld.pt", "vpsde.pt"):
        model = Model(folder / file, args.quick)
        print(f"{name} {model.kind} ({model.steps_trained} training steps): floor SW2 {floor[0]:.4g} +- {floor[1]:.2g}",
              flush=True)
        for sampler, grid, nfes in configurations(model.kind, args.nfe, args.quick):
            for nfe in nfes:
                per_seed, start = [], time.perf_counter()
                for seed in args.seeds:
                    x, used = model.run(sampler, grid, nfe, n, seed)
                    if not bool(torch.isfinite(x).all()):
                        break
                    cell = {"seed": seed, "nfe": used, "sw2": distance[seed](x)}
                    if density is not None:
                        cell["nll_gap"] = ((-density.log_prob(x)).mean() - (-density.log_prob(references[seed])).mean()).item()
                        cell["mode_weight_error"] = mode_weight_error(x, density)
                    per_seed.append(cell)
                if len(per_seed) < len(args.seeds):
                    print(f"  {model.kind} {sampler} ({grid}) NFE {nfe}: non-finite samples", flush=True)
                    continue
                ratio, se = mean_se([c["sw2"] / floor[0] for c in per_seed])
                row = {"dataset": name, "process": model.kind, "sampler": sampler, "grid": grid,
                       "method": f"{model.kind} {sampler} ({grid})", "nfe": per_seed[0]["nfe"], "ratio": ratio,
                       "ratio_se": math.hypot(se, ratio * floor[1] / floor[0]),
                       "seconds": (time.perf_counter() - start) / len(per_seed), "per_seed": per_seed}
                if density is not None:
                    row["nll_gap"], row["nll_gap_se"] = mean_se([c["nll_gap"] for c in per_seed])
                    row["mode_weight_error"] = mean_se([c["mode_weight_error"] for c in per_seed])[0]
                rows.append(row)
                gap = f"  -log p gap {row['nll_gap']:+.3f} +- {row['nll_gap_se']:.3f}" if density is not None else ""
                print(f"  {row['method']:<36} NFE {row['nfe']:>3}  SW2/floor {ratio:5.2f} +- {row['ratio_se']:.2f}{gap}",
                      flush=True)
        rows[-1]["grids"] = model.grids
    return rows, floor


def targets(rows, floor, name, quick) -> list[str]:
    out = []
    for kind, reference in (("CLD", "CLD sscs (quadratic)"), ("VP", "VP em (quadratic)")):
        ref_nfe = 50 if not quick else max(r["nfe"] for r in rows if r["method"] == reference and r["dataset"] == name)
        ref = next((r for r in rows if r["dataset"] == name and r["method"] == reference and r["nfe"] == ref_nfe), None)
        cells = [r for r in rows if r["dataset"] == name and r["process"] == kind and r["nfe"] == 10
                 and r["method"] != reference]
        if ref is None or not cells:
            continue
        best = min(cells, key=lambda r: r["ratio"])
        by_seed = {c["seed"]: c["sw2"] for c in ref["per_seed"]}
        d, se = mean_se([(c["sw2"] - by_seed[c["seed"]]) / floor[0] for c in best["per_seed"]])
        verdict = verdict_not_worse(d, se)
        out.append(f"{name} {kind}: our best at NFE 10 no worse than {reference} at NFE {ref_nfe}: **{verdict}** "
                   f"(best {best['method']} {best['ratio']:.2f} +- {best['ratio_se']:.2f}x floor vs "
                   f"{ref['ratio']:.2f} +- {ref['ratio_se']:.2f}x; paired difference {d:+.3f} +- {se:.3f}x floor)")
    return out


def guidance(rows) -> list[dict]:
    out = []
    for kind in ("CLD", "VP"):
        for nfe in sorted({r["nfe"] for r in rows if r["process"] == kind}):
            cells = [r for r in rows if r["process"] == kind and r["nfe"] == nfe]
            datasets = sorted({r["dataset"] for r in cells})
            methods = {r["method"] for r in cells}
            # rank by the mean ratio over the datasets (a method must run on all of them)
            scores = {m: sum(r["ratio"] for r in cells if r["method"] == m) / len(datasets) for m in methods
                      if sum(1 for r in cells if r["method"] == m) == len(datasets)}
            if scores:
                top = min(scores, key=scores.get)
                row = next(r for r in cells if r["method"] == top)
                out.append({"process": kind, "nfe": nfe, "sampler": row["sampler"], "grid": row["grid"],
                            "ratio": scores[top], "datasets": datasets})
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["process"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for ax, (dataset, kind) in zip(axes[0], panels):
        for method in dict.fromkeys(r["method"] for r in rows if (r["dataset"], r["process"]) == (dataset, kind)):
            pts = sorted((r["nfe"], r["ratio"], r["ratio_se"]) for r in rows
                         if r["method"] == method and r["dataset"] == dataset)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[2 * p[2] for p in pts], fmt="o-", ms=3,
                        capsize=2, label=method)
        ax.axhline(1.0, color="gray", ls=":", label="floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"trained {kind}, {dataset}")
        ax.set_xlabel("NFE")
        ax.legend(fontsize=5)
    axes[0][0].set_ylabel("SW2 / floor")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["diamond=outputs/trained_diamond",
                                                        "swissroll=outputs/trained_swissroll"],
                        help="DATASET=FOLDER pairs; each folder holds cld.pt and vpsde.pt from examples/toy_train.py")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--floor-draws", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="NFE 5/10, 1,000 samples, 2 seeds, EI-ODE-3 only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.nfe, args.samples, args.seeds, args.floor_draws = [5, 10], 1000, [1, 2], 3
    print(f"machine: {machine()}")
    rows, floors, checks = [], {}, []
    for item in args.models:
        name, _, folder = item.partition("=")
        if not (Path(folder) / "cld.pt").exists() or not (Path(folder) / "vpsde.pt").exists():
            parser.error(f"{folder} must hold cld.pt and vpsde.pt (train them with examples/toy_train.py --data {name})")
        part, floor = run_dataset(name, Path(folder), args)
        rows += part
        floors[name] = floor
        checks += targets(rows, floor, name, args.quick)
    labels = list(dict.fromkeys((r["dataset"], r["method"]) for r in rows))
    nfes = sorted({r["nfe"] for r in rows})
    table = markdown_table(["dataset", "SW2 / floor (mean ± s.e.)"] + [f"NFE {n}" for n in nfes],
                           [[d, m] + [next((f"{r['ratio']:.2f} ± {r['ratio_se']:.2f}" for r in rows
                                            if (r["dataset"], r["method"], r["nfe"]) == (d, m, n)), "")
                                      for n in nfes] for d, m in labels])
    gaps = [r for r in rows if "nll_gap" in r]
    gap_table = markdown_table(["diamond", "NFE", "-log p gap (nats)", "± s.e.", "mode err"],
                               [[r["method"], r["nfe"], r["nll_gap"], r["nll_gap_se"], r["mode_weight_error"]]
                                for r in gaps])
    cmd = f"Command: `python benchmarks/bench_trained_samplers.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
    floor_text = "; ".join(f"{k}: {v[0]:.4g} ± {v[1]:.2g}" for k, v in floors.items())
    text = "\n".join([cmd, "", table, "", f"Floors (SW2 between fresh data draws of {args.samples}, "
                      f"{args.floor_draws} pairs): {floor_text}. Seeds {', '.join(map(str, args.seeds))}; optimised "
                      f"grids calibrated on seed {CALIBRATION_SEED}. The digits model (FD) was not run.", "",
                      "Targets (issue 21):", "", *[f"- {c}" for c in checks], "", gap_table])
    print(text)
    out = Path(args.out or RESULTS)
    stem = "trained_samplers" + ("_quick" if args.quick else "")
    write_results(stem, {"issue": 21, "settings": {k: v for k, v in vars(args).items() if k != "out"},
                         "floors": floors, "targets": checks, "guidance": guidance(rows), "results": rows}, text, out)
    plot(rows, out / f"{stem}.png")


if __name__ == "__main__":
    main()
