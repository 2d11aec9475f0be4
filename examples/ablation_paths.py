"""Figs. 18/19 of the CLD paper at toy scale: generation paths in the data and velocity channels, and latent
traversals through the probability flow (the project page's interpolations).

The paper shows CelebA-HQ generation paths of the probability-flow ODE (Fig. 18, RK45) and of SSCS-QS with 150
steps (Fig. 19): the data channel x_t sharpens from noise into an image while the velocity channel v_t carries
the noise, "the data is never directly perturbed" and the velocity ends as noise around zero.

Here: one CLD model (HSM, mixed score, M = 0.25, beta = 4, gamma = 0.04) on the 9-mode "diamond" mixture.
Every sampler returns its trajectory (``save_at``): SSCS-QS (150 steps), Euler-Maruyama (150 steps) and the
probability-flow ODE (dopri5, 1e-5), snapshots at the same reverse times. Reported per snapshot: the spread
(standard deviation) of x_t and of v_t. Then the flow maps of ``splitdyn.flow_maps``: encode held-out data
(with v_0 ~ N(0, gamma M)) into latents at T, decode them back (the round-trip error), and decode the
spherical interpolations between pairs of latents.

Outputs: benchmarks/results/generation_paths.{json,md,png} (or --out).

Examples
--------
python examples/ablation_paths.py                   # about 1 CPU-minute
python examples/ablation_paths.py --quick --out /tmp/paths
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from splitdyn.flow_maps import decode, encode, interpolate
from splitdyn.grids import make_grid
from splitdyn_cld import CLD
from splitdyn_cld.cli import ScriptParser, positive_int, user_errors
from splitdyn_cld.samplers import sample
from splitdyn_cld.toy_data import get_toy_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/_experiments.py
from _experiments import add_output_arguments, add_toy_training_arguments  # noqa: E402
from _experiments import (ToyTraining, cld_loss, cld_model, machine, markdown_table,  # noqa: E402
                          train_toy, write_results)

PROG = "ablation_paths.py"


def snapshot_times(cld: CLD, grid: str, n: int, count: int) -> list[float]:
    """``count`` reverse times on the ``grid`` of ``n`` steps, from the prior (0) to the last (T - eps)."""
    times = make_grid(grid, n, cld.T, 1e-3)
    index = torch.linspace(0, n, count).round().long()
    return [float(times[i]) for i in index]


@torch.no_grad()  # the adaptive ODE solver keeps the autograd graph otherwise
def paths(cld, score, args) -> dict:
    """Trajectories of each sampler at the same snapshot times (same prior draw)."""
    saved = snapshot_times(cld, "quadratic", args.path_steps, args.snapshots)
    out = {}
    for label, sampler, grid in (("SSCS-QS", "sscs", "quadratic"), ("EM-QS", "em", "quadratic"), ("ODE", "ode", None)):
        g = torch.Generator().manual_seed(args.seed)
        u_T = cld.prior_sample((args.samples, 2), generator=g)
        if sampler == "ode":
            solution = sample(cld, score, u_T, None, "ode", generator=g, save_at=saved)
        else:
            solution = sample(cld, score, u_T, args.path_steps, sampler, grid=grid, generator=g, save_at=saved)
        states = list(solution.trajectory) + [solution.state]
        times = list(solution.saved_times) + ["denoised"]
        out[label] = {"times": times, "states": states, "nfe": solution.nfe}
    return out


def latents(cld, score, data, args) -> dict:
    g = torch.Generator().manual_seed(args.seed + 5)
    x0 = data(args.latent_samples, g).double()
    u0 = torch.stack([x0, (cld.gamma * cld.mass) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=x0.dtype)], 1)
    score64 = lambda u, t: score(u.float(), t).double()  # noqa: E731 - the network runs in float32
    z = encode(cld, score64, u0, rtol=1e-6, atol=1e-6)
    back = decode(cld, score64, z, rtol=1e-6, atol=1e-6)
    error = (back - u0).norm(dim=(1, 2)) / u0.norm(dim=(1, 2))
    pairs = min(4, args.latent_samples // 2)
    lines = interpolate(cld, score64, z[:pairs], z[pairs:2 * pairs], args.interpolation_points, rtol=1e-5, atol=1e-5)
    return {"x0": x0, "z": z, "roundtrip_relative_error_max": float(error.max()),
            "roundtrip_relative_error_median": float(error.median()), "latent_std": float(z.std()),
            "interpolations": lines[:, :, 0]}


def run(args) -> dict:
    data = get_toy_dataset("diamond")
    cld = CLD(mass=0.25, beta=4.0, gamma=0.04, eps_num=1e-6)
    torch.manual_seed(args.seed)
    ema, log = train_toy(cld_model(cld, width=args.width), cld_loss(cld), data,
                         ToyTraining(steps=args.steps, batch_size=args.batch_size, seed=args.seed, width=args.width))
    trajectories = paths(cld, ema, args)
    rows = []
    for label, item in trajectories.items():
        for tau, u in zip(item["times"], item["states"]):
            rows.append({"sampler": label, "tau": tau if isinstance(tau, str) else f"{tau:.4f}",
                         "x_std": float(u[:, 0].std()), "v_std": float(u[:, 1].std()), "nfe": item["nfe"]})
    flow = latents(cld, ema, data, args)
    verdict = verdict_of(trajectories, flow, cld)
    payload = {"claim": "Figs. 18/19: generation paths in data and velocity; latent traversals (project page)",
               "command": f"python examples/{PROG} " + " ".join(args.argv), "machine": machine(),
               "settings": {k: v for k, v in vars(args).items() if k != "argv"}, "training": log.summary(),
               "paths": rows, "prior_std": {"x": 1.0, "v": cld.mass ** 0.5},
               "velocity_std_at_t0": (cld.gamma * cld.mass) ** 0.5,
               "flow_maps": {k: v for k, v in flow.items() if isinstance(v, float)}, "verdict": verdict}
    table = (markdown_table(rows, [("sampler", "sampler", ""), ("tau", "reverse time τ", ""), ("x_std", "std x", ".3f"),
                                   ("v_std", "std v", ".3f"), ("nfe", "NFE", "d")])
             + f"\n\nEncode/decode round trip through the probability flow (dopri5, 1e-6, float64 states): relative "
             f"error median {flow['roundtrip_relative_error_median']:.2e}, max {flow['roundtrip_relative_error_max']:.2e}; "
             f"latent std {flow['latent_std']:.3f} (prior: x 1, v {cld.mass ** 0.5:.2f}). Verdict: {verdict['text']}")
    write_results(args.out, "generation_paths", payload, table, plot(trajectories, flow),
                  title="Figs. 18/19: generation paths and latent traversals (toy scale)")
    print(table)
    return payload


def verdict_of(trajectories, flow, cld) -> dict:
    """The paper's qualitative claim: the velocity channel ends as small noise (std near sqrt(gamma M), far
    below its prior std sqrt(M)) in every sampler; the flow maps are inverse (round-trip error < 1e-3)."""
    end_v = {label: float(item["states"][-1][:, 1].std()) for label, item in trajectories.items()}
    settles = all(v < 0.5 * cld.mass ** 0.5 for v in end_v.values())
    inverse = flow["roundtrip_relative_error_max"] < 1e-3
    holds = bool(settles and inverse)
    text = (f"final velocity std {', '.join(f'{k} {v:.3f}' for k, v in end_v.items())} (prior {cld.mass ** 0.5:.2f}, "
            f"t = 0: {(cld.gamma * cld.mass) ** 0.5:.2f}); round trip {'exact to < 1e-3' if inverse else 'not inverse'}: "
            f"the paper's picture {'holds' if holds else 'does not hold'} here.")
    return {"final_velocity_std": end_v, "holds": holds, "text": text}


def plot(trajectories, flow):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(next(iter(trajectories.values()))["states"])
    fig, axes = plt.subplots(2 * len(trajectories) + 1, count, figsize=(2.1 * count, 2.1 * (2 * len(trajectories) + 1)),
                             squeeze=False)
    for r, (label, item) in enumerate(trajectories.items()):
        for c, (tau, u) in enumerate(zip(item["times"], item["states"])):
            for k, channel in enumerate(("x", "v")):
                ax = axes[2 * r + k, c]
                ax.scatter(u[:1500, k, 0], u[:1500, k, 1], s=0.3, color="C0" if k == 0 else "C1")
                lim = 3.0 if c == 0 else 1.5
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_xticks([])
                ax.set_yticks([])
                name = tau if isinstance(tau, str) else f"τ={tau:.3f}"
                ax.set_title(f"{label} {channel}, {name}", fontsize=6)
    lines = flow["interpolations"]
    ax = axes[-1, 0]
    ax.scatter(flow["x0"][:, 0], flow["x0"][:, 1], s=2, color="k")
    for j in range(lines.shape[1]):
        ax.plot(lines[:, j, 0], lines[:, j, 1], ".-", ms=3, lw=0.6)
    ax.set_title("decoded slerp paths", fontsize=6)
    ax.set_aspect("equal")
    for ax in axes[-1, 1:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_training_arguments(parser, steps=2000)
    parser.add_argument("--samples", type=positive_int, default=3000, help="paths per sampler (default 3000)")
    parser.add_argument("--path-steps", type=positive_int, default=150, help="SSCS-QS / EM steps (default 150)")
    parser.add_argument("--snapshots", type=positive_int, default=6, help="saved times per path (default 6)")
    parser.add_argument("--latent-samples", type=positive_int, default=64, help="points encoded (default 64)")
    parser.add_argument("--interpolation-points", type=positive_int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.width, args.samples = 5, 32, 16, 50
        args.path_steps, args.snapshots, args.latent_samples, args.interpolation_points = 10, 3, 4, 3
    if args.snapshots < 2 or args.latent_samples < 2 or args.interpolation_points < 2:
        parser.error("--snapshots, --latent-samples and --interpolation-points must be >= 2")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors(PROG):
        return run(args)


if __name__ == "__main__":
    main()
