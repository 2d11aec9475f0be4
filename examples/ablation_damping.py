"""Fig. 5 / App. A.1 of the CLD paper: under-, critically- and over-damped Langevin forward processes.

No training: everything comes from the exact transition kernels of the linear SDE
du = beta F u dt + G dw, F = [[0, 1/M], [-1, -Gamma/M]] (M = 0.25, beta = 4, gamma = 0.04 as in the paper; the
critical friction is Gamma = 2 sqrt(M) = 1, the under-damped one Gamma / 5, the over-damped one 5 Gamma).

1. Trajectories: particles started at the 9 modes of the "diamond" data with v0 = 0 follow each forward
   process on a fine grid, each step an exact kernel draw, with the same noise for all three regimes; the
   figure shows the data coordinate x_1 and the velocity v_1 over t (the paper's Fig. 5 pairs).
2. Convergence to the prior N(0, diag(1, M)): for the data marginal p_t (the diffused 9-mode mixture, exact)
   the KL divergence KL(p_t || prior), by Monte Carlo with the exact log densities, and the spectral norm of
   the mean map ||Phi(t)||_2 (how much of the data's position is left). The paper's point (App. A.1):
   critical damping converges fastest; under-damping oscillates, over-damping converges slowly.

Outputs: benchmarks/results/damping_regimes.{json,md,png} (or --out).

Examples
--------
python examples/ablation_damping.py               # about 30 CPU-seconds
python examples/ablation_damping.py --quick --out /tmp/damping
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch

from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD
from splitdyn_cld.cli import ScriptParser, nonnegative_int, positive_float, positive_int, user_errors

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/_experiments.py
from _experiments import RESULTS_DIR, machine, markdown_table, write_results  # noqa: E402

PROG = "ablation_damping.py"
#: Friction relative to the critical one, 2 sqrt(M), for each regime.
REGIMES = {"under-damped": 0.2, "critical": 1.0, "over-damped": 5.0}


def damped_process(regime: str, mass: float = 0.25, beta: float = 4.0, gamma: float = 0.04) -> CLD:
    """The CLD forward process with the friction of ``regime`` (see :data:`REGIMES`)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}")
    with warnings.catch_warnings():  # CLD warns for non-critical friction: here it is the point
        warnings.simplefilter("ignore")
        return CLD(mass=mass, friction=REGIMES[regime] * 2.0 * math.sqrt(mass), beta=beta, gamma=gamma)


def trajectories(cld: CLD, x0: torch.Tensor, times: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Exact forward paths from ``(x0, 0)``: ``(len(times), batch, 2, d)``; ``noise`` is ``(steps, batch, 2, d)``."""
    u = torch.stack([x0, torch.zeros_like(x0)], dim=1).double()
    path = [u]
    for i in range(len(times) - 1):
        t, s = times[i + 1], times[i]
        phi = cld.transition_matrix(t, s).double()
        L = torch.linalg.cholesky(cld.noise_covariance(t, s).double() + 1e-14 * torch.eye(2, dtype=torch.float64))
        u = torch.einsum("ij,bjd->bid", phi, u) + torch.einsum("ij,bjd->bid", L, noise[i])
        path.append(u)
    return torch.stack(path)


def convergence(cld: CLD, times, samples: int, seed: int) -> list[dict]:
    """``KL(p_t || prior)`` (Monte Carlo, exact densities) and ``||Phi(t)||_2`` at each time."""
    oracle = DiffusedGaussianMixture(diamond_mixture(), cld, [[cld.gamma * cld.mass]])
    prior_var = torch.tensor([1.0, cld.mass], dtype=torch.float64)[None, :, None]
    rows = []
    for t in times:
        u = oracle.sample(samples, t, torch.Generator().manual_seed(seed))
        log_p = oracle.log_prob(u, t)
        log_prior = (-0.5 * u.pow(2) / prior_var - 0.5 * torch.log(2 * math.pi * prior_var)).sum((1, 2))
        kl = float((log_p - log_prior).mean())
        stderr = float((log_p - log_prior).std() / math.sqrt(samples))
        rows.append({"t": float(t), "kl": kl, "kl_stderr": stderr,
                     "mean_map_norm": float(torch.linalg.matrix_norm(cld.transition_matrix(t).double(), ord=2))})
    return rows


def run(args) -> dict:
    times_kl = torch.linspace(0.05, 1.0, args.points).tolist()
    grid = torch.linspace(0.0, 1.0, args.path_steps + 1, dtype=torch.float64)
    x0 = diamond_mixture().means.double()
    noise = torch.randn(args.path_steps, x0.shape[0], 2, 2, generator=torch.Generator().manual_seed(args.seed),
                        dtype=torch.float64)
    results, paths = {}, {}
    for regime in REGIMES:
        cld = damped_process(regime)
        paths[regime] = trajectories(cld, x0, grid, noise)
        results[regime] = convergence(cld, times_kl, args.samples, args.seed)
    rows = []
    for i, t in enumerate(times_kl):
        row = {"t": t}
        for regime in REGIMES:
            row[f"kl_{regime}"] = results[regime][i]["kl"]
            row[f"phi_{regime}"] = results[regime][i]["mean_map_norm"]
        rows.append(row)
    final = {regime: results[regime][-1]["kl"] for regime in REGIMES}
    stderr = {regime: results[regime][-1]["kl_stderr"] for regime in REGIMES}
    fastest = min(final, key=final.get)
    holds = fastest == "critical" and all(final[r] - final["critical"] > 2 * math.hypot(stderr[r], stderr["critical"])
                                          for r in REGIMES if r != "critical")
    payload = {"claim": "Fig. 5 / App. A.1: critical damping converges to the prior fastest",
               "command": f"python examples/{PROG} " + " ".join(args.argv),
               "machine": machine(), "settings": {k: v for k, v in vars(args).items() if k != "argv"},
               "frictions": {r: REGIMES[r] * 2.0 * math.sqrt(0.25) for r in REGIMES},
               "convergence": results, "kl_at_T": final, "kl_at_T_stderr": stderr, "fastest_at_T": fastest,
               "conclusion_holds": bool(holds)}
    columns = [("t", "t", ".2f")] + [(f"kl_{r}", f"KL {r}", ".4f") for r in REGIMES] + \
              [(f"phi_{r}", f"‖Φ‖ {r}", ".3f") for r in REGIMES]
    table = markdown_table(rows, columns) + (
        f"\n\nKL(p_T ‖ prior) at T = 1: " + ", ".join(f"{r} {final[r]:.4f} ± {stderr[r]:.4f}" for r in REGIMES)
        + f". Fastest: **{fastest}**; the paper's conclusion {'holds' if holds else 'does not hold'} here.")
    write_results(args.out, "damping_regimes", payload, table, plot(grid, paths, times_kl, results),
                  title="Fig. 5 / App. A.1: damping regimes of the forward process (exact kernels)")
    print(table)
    return payload


def plot(grid, paths, times_kl, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for color, regime in zip(("C3", "C0", "C2"), REGIMES):
        p = paths[regime]
        axes[0].plot(grid, p[:, :3, 0, 0], color=color, lw=0.9, label=[regime, None, None])
        axes[1].plot(grid, p[:, :3, 1, 0], color=color, lw=0.9, label=[regime, None, None])
        axes[2].plot(p[:, 0, 0, 0], p[:, 0, 1, 0], color=color, lw=0.9, label=regime)
        axes[3].semilogy(times_kl, [max(r["kl"], 1e-6) for r in results[regime]], "o-", color=color, ms=3,
                         label=regime)
    for ax, title in zip(axes, ("data x_1(t)", "velocity v_1(t)", "phase (x_1, v_1) of one particle",
                                "KL(p_t || prior)")):
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_xlabel("t")
    axes[1].set_xlabel("t")
    axes[3].set_xlabel("t")
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=positive_int, default=20000, help="Monte Carlo samples per KL (default 20000)")
    parser.add_argument("--points", type=positive_int, default=20, help="times in (0, 1] for the KL (default 20)")
    parser.add_argument("--path-steps", type=positive_int, default=400, help="steps of the trajectories (default 400)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings (tests)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help=f"output folder (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.points, args.path_steps = 500, 4, 40
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors(PROG):
        return run(args)


if __name__ == "__main__":
    main()
