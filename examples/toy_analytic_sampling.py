"""Reproduce Table 8 and Fig. 11 of the CLD paper (App. F.1.1): samplers with analytic scores.

Data: the 9-mode "diamond" mixture of App. E.1 (std 0.04). Scores are exact (splitdyn's Gaussian-mixture
oracle), so the table isolates the samplers. CLD: M = 0.25, Gamma = 1, beta = 4, gamma = 0.04; VPSDE:
beta(t) = 0.1 + 19.9 t. All samplers stop at the cutoff eps = 1e-3 and take the denoising step. ``n``
counts score evaluations *including* the denoising step (which needs one), so a column ``n`` runs
``n - 1`` sampler steps plus denoising. SSCS evaluates the score at the step's start, as Algorithm 1.

Metrics: the paper's mean -log p_data(x) over generated samples, and the sliced Wasserstein-2 distance to
fresh data samples (a proper distance). The first is a cross-entropy: it is minimised by samples piled on the
modes' centres, not by the data law, whose own value (the data entropy, about -1.40 nats) is printed as a
reference row; values below it mean over-concentrated samples, which the distance penalises. The reference
row's distance is that between two independent data samples of the same size (the finite-sample floor).

Output: the table (ours with the paper's value in brackets), ``--json`` with
``{"results": [{"diffusion", "sampler", "grid", "nfe", "nll", "distance"}, ...], "reference": {...}}`` and
``--figure`` with Fig. 11 (rows: samplers, columns: n).

Examples
--------
python examples/toy_analytic_sampling.py --samples 100000 --json outputs/table8.json
python examples/toy_analytic_sampling.py --grid quadratic
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from splitdyn.metrics import wasserstein_sliced
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
import splitdyn
from splitdyn_cld import CLD, sample
from splitdyn_cld.cli import ScriptParser, nonnegative_int, open_unit_float, positive_int, user_errors

PAPER_TABLE8 = {
    ("cld", "em"): [60.6, 9.71, 0.72, -1.04],
    ("cld", "sscs"): [10.5, 1.55, -1.25, -1.54],
    ("vpsde", "em"): [14.2, 4.68, -0.35, -1.11],
}
PAPER_STEPS = [20, 50, 100, 200]
ROWS = [("cld", "em"), ("cld", "sscs"), ("vpsde", "em")]


def run(samples: int = 100_000, seed: int = 0, grid: str = "uniform", steps=(20, 50, 100, 200), eps: float = 1e-3,
        progress: bool = True, figure: str | None = None) -> dict:
    """Compute the table; returns ``{"results": [...], "samples": {(diffusion, sampler, n): x}}``."""
    mixture = diamond_mixture()
    cld = CLD(mass=0.25, friction=1.0, beta=4.0, gamma=0.04)
    cld_score = DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]]).score_fn([1])
    vp = splitdyn.VPSDE(0.1, 20.0)
    vp_score = DiffusedGaussianMixture(mixture, vp).score_fn()
    reference = mixture.sample(samples, torch.Generator().manual_seed(seed + 10_000), dtype=torch.float64)
    fresh = mixture.sample(samples, torch.Generator().manual_seed(seed + 20_000), dtype=torch.float64)
    data_row = {"nll": (-mixture.log_prob(fresh)).mean().item(),
                "distance": float(wasserstein_sliced(fresh, reference, generator=torch.Generator().manual_seed(seed + 1)))}
    results, kept = [], {}
    jobs = [(row, n) for row in ROWS for n in steps]
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc=f"Table 8 ({grid})")
    for (diffusion, sampler), n in iterator:
        g = torch.Generator().manual_seed(seed)
        kw = dict(grid=grid, eps=eps, generator=g, dtype=torch.float64)
        if diffusion == "cld":
            out = sample(cld, cld_score, (samples, 2), n - 1, sampler, **kw)
        else:
            grid_times = splitdyn.make_grid(grid, n - 1, vp.T, eps)
            out = splitdyn.sample(vp, vp_score, (samples, 2), grid_times, step="em", generator=g, dtype=torch.float64)
        x, nfe = out.state[:, 0], out.nfe
        nll = (-mixture.log_prob(x)).mean().item()
        distance = wasserstein_sliced(x, reference, generator=torch.Generator().manual_seed(seed + 1))
        results.append({"diffusion": diffusion, "sampler": sampler, "grid": grid, "nfe": int(nfe), "nll": nll,
                        "distance": float(distance)})
        kept[(diffusion, sampler, n)] = x[:5000]
    if figure:
        draw_figure(kept, steps, figure, mixture)
    return {"results": results, "reference": data_row, "samples": kept}


def draw_figure(kept: dict, steps, path: str, mixture) -> None:
    """Fig. 11: rows = samplers, columns = n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ROWS), len(steps), figsize=(3 * len(steps), 3 * len(ROWS)), squeeze=False)
    for i, (diffusion, sampler) in enumerate(ROWS):
        for j, n in enumerate(steps):
            ax = axes[i, j]
            x = kept[(diffusion, sampler, n)]
            ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.4)
            ax.scatter(mixture.means[:, 0], mixture.means[:, 1], s=8, c="red", marker="x")
            ax.set_xlim(-1.1, 1.1)
            ax.set_ylim(-1.1, 1.1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"n = {n}")
            if j == 0:
                ax.set_ylabel(f"{diffusion.upper()} {sampler.upper()}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(results: list[dict], steps, reference: dict | None = None) -> str:
    """The table as text: one row per sampler, cells ``ours (paper) | SW2``."""
    lines = [f"{'model':<7}{'sampler':<8}" + "".join(f"{'n=' + str(n):>22}" for n in steps),
             " " * 15 + "".join(f"{'-log p (paper) | SW2':>22}" for _ in steps)]
    for diffusion, sampler in ROWS:
        cells = []
        for n in steps:
            r = next(r for r in results if (r["diffusion"], r["sampler"], r["nfe"]) == (diffusion, sampler, n))
            paper = PAPER_TABLE8[(diffusion, sampler)][PAPER_STEPS.index(n)] if n in PAPER_STEPS else float("nan")
            cells.append(f"{r['nll']:7.2f} ({paper:6.2f}) |{r['distance']:6.3f}")
        lines.append(f"{diffusion.upper():<7}{sampler.upper():<8}" + "".join(f"{c:>22}" for c in cells))
    if reference is not None:
        cell = f"{reference['nll']:7.2f} {'':8} |{reference['distance']:6.3f}"
        lines.append(f"{'data':<15}" + "".join(f"{cell:>22}" for _ in steps))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = ScriptParser(prog="toy_analytic_sampling.py", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=positive_int, default=100_000)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--grid", choices=["uniform", "quadratic"], default="uniform")
    parser.add_argument("--steps", type=positive_int, nargs="+", default=[20, 50, 100, 200], help="NFE per column (incl. denoising)")
    parser.add_argument("--eps", type=open_unit_float, default=1e-3)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--figure", default=None, help="write Fig. 11 (PNG) here")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    for n in args.steps:
        if n < 2:
            parser.error("--steps must be >= 2 (one sampler step plus denoising)")
    with user_errors(parser.prog):
        return _main(args)


def _main(args) -> dict:
    start = time.perf_counter()
    out = run(args.samples, args.seed, args.grid, args.steps, args.eps, args.progress, args.figure)
    print(f"Table 8 ({args.grid} grid, {args.samples} samples, {time.perf_counter() - start:.1f} s); "
          "cells: ours (paper) | sliced W2 to data")
    print(format_table(out["results"], args.steps, out["reference"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"results": out["results"], "reference": out["reference"],
                   "settings": {"samples": args.samples, "seed": args.seed, "eps": args.eps, "grid": args.grid}}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return out


if __name__ == "__main__":
    main()
