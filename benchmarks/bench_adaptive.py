"""Adaptive steps against the best fixed grid at equal NFE, on one Brownian path (issue 11 part B).

Problem: the paper's CLD (M = 0.25, Gamma = 1, beta = 4, gamma = 0.04, eps = 1e-3) with the exact score of
the 2-D 9-mode diamond mixture. Every sampler runs on the same ``torchsde.BrownianInterval`` (space-time Lévy
area), so its pathwise (strong) error against a fine reference on that path is measured without Monte Carlo
noise between samplers:

- ``AdaptiveSampler`` with ``"em"`` and ``"sscs"`` at several tolerances (``rtol = atol``), with its default
  error-per-unit-step criterion, and ``"em"`` with the plain per-step criterion (``per_unit_step=False``), NFE
  including the rejected attempts;
- Euler-Maruyama and SSCS on the uniform and the quadratic grid with the same NFE (one score per step).

Metrics: the strong error E|u - u_ref| at reverse time T - eps (reference: Euler-Maruyama on a quadratic
grid of ``--ref-steps`` steps on the same path), and the sliced Wasserstein-2 distance of the denoised samples
to fresh data samples (a sampling floor is recorded). Output: ``benchmarks/results/adaptive_cld_mixture2d.*``.

Command: ``python benchmarks/bench_adaptive.py`` (about ten minutes on a shared two-core CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchsde

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_results  # noqa: E402

from splitdyn import AdaptiveSampler, BrownianNoise, EulerMaruyama, ReverseSDE, integrate, split_step  # noqa: E402
from splitdyn.grids import quadratic_grid, uniform_grid  # noqa: E402
from splitdyn.metrics import wasserstein_sliced  # noqa: E402
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402

EPS = 1e-3
F64 = torch.float64


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--ref-steps", type=int, default=8192)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1.0, 0.3, 0.1],
                        help="tolerances of the per-unit-step criterion (the per-step one uses 0.3x these)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    mixture = diamond_mixture()
    cld = CLD()
    reverse = ReverseSDE(cld, DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]]).score_fn([1]), [1])
    B, d = args.samples, mixture.dimension
    end = cld.T - EPS
    u0 = cld.prior_sample((B, d), generator=torch.Generator().manual_seed(0), dtype=F64)
    bm = torchsde.BrownianInterval(0.0, end * (1 + 1e-12), size=(B, 2 * d), dtype=F64, entropy=7,
                                   levy_area_approximation="space-time")
    data = mixture.sample(B, torch.Generator().manual_seed(123), dtype=F64)
    floor = wasserstein_sliced(mixture.sample(B, torch.Generator().manual_seed(5), dtype=F64), data,
                               generator=torch.Generator().manual_seed(0))

    def on_path(step, grid):
        return integrate(step, u0, grid.tolist(), noise=BrownianNoise(bm, torch.Generator().manual_seed(1)),
                         divergence_factor=None)

    start = time.perf_counter()
    ref = on_path(EulerMaruyama(reverse), quadratic_grid(args.ref_steps, cld.T, EPS)).state
    ref_seconds = time.perf_counter() - start

    def record(label, kind, state, nfe, seconds, extra=None):
        x = reverse.denoise(state, EPS)[:, 0]
        row = {"sampler": label, "kind": kind, "nfe": int(nfe),
               "strong_error": (state - ref).flatten(1).norm(dim=1).mean().item(),
               "sw2": wasserstein_sliced(x, data, generator=torch.Generator().manual_seed(0)),
               "seconds": round(seconds, 3)}
        row.update(extra or {})
        rows.append(row)
        print(row, flush=True)

    rows: list[dict] = []
    configs = [("em", True, args.tolerances), ("sscs", True, args.tolerances),
               ("em", False, [0.3 * t for t in args.tolerances])]
    for method, per_unit_step, tolerances in configs:
        for tol in tolerances:
            solver = AdaptiveSampler(method, rtol=tol, atol=tol, eps=EPS, bm=bm, per_unit_step=per_unit_step)
            start = time.perf_counter()
            out = solver.solve(reverse, u0, None, EPS, generator=torch.Generator().manual_seed(1))
            label = f"adaptive-{method}{'' if per_unit_step else ' per-step'} tol={tol:.3g}"
            record(label, "adaptive", out.state, out.nfe, time.perf_counter() - start,
                   {"tolerance": tol, "accepted": solver.accepted, "rejected": solver.rejected, "method": method,
                    "per_unit_step": per_unit_step})
    budgets = sorted({r["nfe"] for r in rows})
    for nfe in budgets:
        for method, factory in (("em", EulerMaruyama), ("sscs", split_step)):
            for grid_name, grid_fn in (("uniform", uniform_grid), ("quadratic", quadratic_grid)):
                start = time.perf_counter()
                out = on_path(factory(reverse), grid_fn(nfe, cld.T, EPS))
                record(f"{method} {grid_name}", "fixed", out.state, out.nfe, time.perf_counter() - start,
                       {"grid": grid_name, "method": method})

    # equal-NFE comparison: each adaptive run against the best fixed grid (either method) at its NFE
    comparison = []
    for r in [r for r in rows if r["kind"] == "adaptive"]:
        fixed = [f for f in rows if f["kind"] == "fixed" and f["nfe"] == r["nfe"]]
        best = min(fixed, key=lambda f: f["strong_error"])
        comparison.append([r["sampler"], r["nfe"], f"{r['rejected']}/{r['accepted']}", f"{r['strong_error']:.4f}",
                           f"{best['sampler']}: {best['strong_error']:.4f}", f"{r['sw2']:.4f}",
                           f"{min(f['sw2'] for f in fixed):.4f}"])
    table = markdown_table(["adaptive", "NFE", "rejected/accepted", "strong error", "best fixed grid (strong)",
                            "SW2", "best fixed SW2"], comparison)
    markdown = (f"Command: `python benchmarks/bench_adaptive.py --samples {B} --ref-steps {args.ref_steps}`\n\n"
                f"CLD (gamma = 0.04), 2-D diamond mixture, exact score, one Brownian path (space-time Lévy area). "
                f"Strong error: E|u - u_ref| at T - eps against EM on a {args.ref_steps}-step quadratic grid "
                f"({ref_seconds:.0f} s). SW2 of denoised samples to data; a fresh data sample scores {floor:.4f}. "
                f"NFE excludes the denoising step.\n\n{table}")
    write_results("adaptive_cld_mixture2d", {"rows": rows, "sw2_floor": floor, "ref_steps": args.ref_steps,
                                             "samples": B}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
