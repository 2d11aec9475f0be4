"""Table 7, Fig. 17 and Figs. 18/19 on digits: the denoising step, the ODE tolerance, and generation paths.

The paper (App. E.2.4, Table 7; Fig. 17; Figs. 18/19) on its CIFAR-10 model: the final denoising step barely
matters for SSCS at 500 NFE and somewhat at 50; the probability-flow ODE needs it as t -> 0; the ODE's
tolerance trades NFE for quality; generation paths show the data channel emerging while the velocity channel
carries the noise. Here on a trained ``digits`` CLD model (``examples/train_images.py --config digits``),
quality as the Fréchet distance in a digits classifier's features (``examples/train_digits_classifier.py``)
to the training digits:

- denoising: SSCS on the uniform and the quadratic grid at each ``--nfe``, with the denoising step
  (``n - 1`` steps + 1 evaluation) and without (``n`` steps);
- ODE: dopri5 at ``rtol = atol`` in ``--tolerances`` with denoising; at the paper's 1e-5 also without it, and
  integrated to t = 1e-5 instead of 1e-3 without it (the case the paper reports as unstable);
- paths: SSCS on the quadratic grid with the states saved at ``--snapshots`` times, data and velocity.

Outputs: ``<out>/digits_ablations.{json,md,png}`` and ``<out>/digits_paths.png``.

Examples
--------
python examples/ablation_digits.py --checkpoint outputs/digits --classifier outputs/digits_classifier.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import splitdyn
from splitdyn_cld.cli import ScriptParser, positive_float, positive_int, user_errors
from splitdyn_cld.data import load_uint8, to_float, to_uint8
from splitdyn_cld.evaluation import extract_features, feature_statistics, frechet_distance, load_digits_classifier
from splitdyn_cld.image_training import load_trained_model

PROG = "ablation_digits.py"
RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/digits", help="trained digits run (folder or file)")
    parser.add_argument("--classifier", default="outputs/digits_classifier.pt")
    parser.add_argument("--samples", type=positive_int, default=1000, help="samples per setting (default 1000)")
    parser.add_argument("--nfe", type=positive_int, nargs="+", default=[20, 50, 200])
    parser.add_argument("--tolerances", type=positive_float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5])
    parser.add_argument("--snapshots", type=positive_int, default=6, help="saved times per path (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings (tests)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help=f"output folder (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.nfe, args.tolerances, args.snapshots = 8, [3], [1e-2], 3
    return args


def run(args) -> dict:
    model = load_trained_model(args.checkpoint)
    cld, score, shape = model.cld, model.score, model.image_shape
    classifier = load_digits_classifier(args.classifier)

    def features(images):
        return classifier.features(to_float(images if images.dtype == torch.uint8 else to_uint8(images)))

    reference = feature_statistics(extract_features(features, load_uint8("digits", None, train=True,
                                                                         image_size=shape[-1])))

    def evaluate(label, **kwargs) -> dict:
        tic = time.perf_counter()
        out = splitdyn.sample(cld, score, (args.samples, *shape), generator=torch.Generator().manual_seed(args.seed),
                              **kwargs)
        x = out.components()[0].clamp(-1, 1)
        row = {"setting": label, "nfe": int(out.nfe), "digits_fd": frechet_distance(reference, extract_features(features, x)),
               "finite": bool(torch.isfinite(out.state).all()), "seconds": time.perf_counter() - tic}
        print(f"{label:>44}: NFE {row['nfe']:>4}  FD {row['digits_fd']:8.3f}  ({row['seconds']:.1f} s)", flush=True)
        return row

    rows = []
    for nfe in args.nfe:
        for grid_name, grid in (("uniform", splitdyn.UniformGrid), ("quadratic", splitdyn.QuadraticGrid)):
            rows.append(evaluate(f"SSCS {grid_name}, denoising", grid=grid(max(nfe - 1, 1)), step="sscs"))
            rows.append(evaluate(f"SSCS {grid_name}, no denoising", grid=grid(nfe), step="sscs", denoise=False))
    for tol in args.tolerances:
        rows.append(evaluate(f"ODE dopri5 tol {tol:g}, denoising",
                             step=splitdyn.AdaptiveProbabilityFlow(tol, tol)))
    tol = min(args.tolerances)
    rows.append(evaluate(f"ODE dopri5 tol {tol:g}, no denoising", step=splitdyn.AdaptiveProbabilityFlow(tol, tol),
                         denoise=False))
    rows.append(evaluate(f"ODE dopri5 tol {tol:g} to t = 1e-5, no denoising",
                         step=splitdyn.AdaptiveProbabilityFlow(tol, tol, eps=1e-5), denoise=False))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = generation_paths(cld, score, shape, args, out_dir / "digits_paths.png")
    plot_tolerance(rows, out_dir / "digits_ablations.png")
    payload = {"checkpoint": str(args.checkpoint), "training_steps": model.step, "samples": args.samples,
               "rows": rows, "paths": paths}
    (out_dir / "digits_ablations.json").write_text(json.dumps(payload, indent=2))
    table = ["| setting | NFE | digits FD | seconds |", "| --- | --- | --- | --- |"]
    table += [f"| {r['setting']} | {r['nfe']} | {r['digits_fd']:.3f} | {r['seconds']:.1f} |" for r in rows]
    (out_dir / "digits_ablations.md").write_text(
        f"Command: `python examples/ablation_digits.py --checkpoint {args.checkpoint}`\n\n"
        f"Model: {model.step} training steps (EMA weights); {args.samples} samples per row.\n\n" + "\n".join(table)
        + "\n\n![generation paths](digits_paths.png)\n")
    return payload


def generation_paths(cld, score, shape, args, path: Path) -> dict:
    """SSCS on the quadratic grid with states saved along the way: rows data / velocity, columns times."""
    grid = splitdyn.QuadraticGrid(max(args.nfe) - 1)
    times = grid.reverse_times(cld.T)
    picks = torch.linspace(0, len(times) - 1, args.snapshots).round().long().tolist()
    out = splitdyn.sample(cld, score, (8, *shape), grid, step="sscs", save_at=[float(times[j]) for j in picks],
                          generator=torch.Generator().manual_seed(args.seed))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(out.trajectory), figsize=(2 * len(out.trajectory), 4.2), squeeze=False)
    for j, (tau, state) in enumerate(zip(out.saved_times, out.trajectory)):
        for row, (name, channel) in enumerate((("x", 0), ("v", 1))):
            image = state[0, channel, 0].clamp(-1, 1) if channel == 0 else state[0, channel, 0]
            axes[row][j].imshow(image.numpy(), cmap="gray")
            axes[row][j].set_xticks([]), axes[row][j].set_yticks([])
            axes[row][j].set_title(f"{name}, t = {cld.T - tau:.3g}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"saved_forward_times": [cld.T - t for t in out.saved_times],
            "velocity_std_at_end": float(out.trajectory[-1][:, 1].std()),
            "data_std_at_end": float(out.trajectory[-1][:, 0].std())}


def plot_tolerance(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ode = [r for r in rows if r["setting"].startswith("ODE") and r["setting"].endswith(", denoising")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["nfe"] for r in ode], [r["digits_fd"] for r in ode], "o-", label="dopri5 + denoising")
    for r in ode:
        ax.annotate(r["setting"].split("tol ")[1].split(",")[0], (r["nfe"], r["digits_fd"]), fontsize=7)
    sscs = [r for r in rows if r["setting"] == "SSCS quadratic, denoising"]
    ax.plot([r["nfe"] for r in sscs], [r["digits_fd"] for r in sscs], "s--", label="SSCS quadratic")
    ax.set_xlabel("NFE")
    ax.set_ylabel("digits FD")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors(PROG):
        return run(args)


if __name__ == "__main__":
    main()
