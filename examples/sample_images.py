#!/usr/bin/env python
"""Sample images from a trained CLD-SGM checkpoint with any named sampler and grid of ``splitdyn.sample``.

    python examples/sample_images.py --checkpoint outputs/digits --sampler sscs --steps 50 --grid quadratic
    python examples/sample_images.py --checkpoint outputs/digits --sampler em --steps 200 --grid uniform
    python examples/sample_images.py --checkpoint outputs/digits --sampler ode --rtol 1e-5 --atol 1e-5
    # few-step samplers (exponential integrators, UniPC, ...): NFE = steps with the score-free final update
    python examples/sample_images.py --checkpoint outputs/digits --sampler ei-ode-3 --steps 10 --grid power-4
    python examples/sample_images.py --checkpoint outputs/digits --sampler ei-ode-3 --steps 10 --grid-file grid.json
    # 50k CIFAR-10 samples over 8 GPUs (each rank draws its share):
    torchrun --standalone --nproc_per_node 8 examples/sample_images.py --checkpoint outputs/cifar10 \\
        --sampler sscs --steps 150 --num-samples 50000 --batch-size 500 --out outputs/cifar10/samples

--sampler takes every fixed-grid name of ``splitdyn.sample.SAMPLERS`` and ``ode``; --grid ``uniform``,
``quadratic``, ``power-<rho>`` (e.g. ``power-4``) or ``log-snr`` (CLD's information log-SNR,
``splitdyn.grids.InformationLogSNR``); --grid-file a saved grid (JSON of ``GivenGrid.to_dict()``, e.g. from
``splitdyn.grid_search.search_grid``), whose step count replaces --steps. The final step (--final):
``denoise`` is the Euler denoising step of eq. 107 (one NFE), ``score-free`` the data update of eq. 109,
x_0 = x_eps - eps beta M^-1 v_eps (no NFE); the default is ``denoise`` for SSCS and EM (NFE = steps + 1) and
``score-free`` for the others (NFE = steps). The ODE's NFE is adaptive (summary.json: ``nfe`` rounded to an
int, ``nfe_mean`` the mean over the batches).
Output in --out: samples_rank<r>.npz per rank, merged by rank 0 into samples.npz (``images``: uint8
(N, H, W, C), ``nfe``); grid.png with the first --grid-count images. Ranks must share the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


from splitdyn import sample
from splitdyn.grids import GivenGrid, InformationLogSNR, LogSNRGrid, PowerGrid, QuadraticGrid, UniformGrid
from splitdyn.interop import ReferenceSolver
from splitdyn.reverse import ReverseSDE
from splitdyn.sample import SAMPLERS, sampler_step
from splitdyn_cld.data import to_uint8
from splitdyn_cld.cli import ScriptParser, device_name, nonnegative_int, positive_float, positive_int, user_errors
from splitdyn_cld.image_training import (cleanup_distributed, generate_images, load_trained_model, save_image_grid,
                                         setup_distributed, shard_sizes)

PROG = "sample_images.py"
#: The fixed-grid samplers of ``splitdyn.sample`` (reference solvers that pick their own steps are left out).
GRID_SAMPLERS = sorted(name for name in SAMPLERS if not name.startswith(("torchsde-", "adaptive-")) and name != "ode")


def grid_kind(text: str) -> str:
    """A --grid value: uniform, quadratic, log-snr or power-<rho> with rho > 0."""
    if text in ("uniform", "quadratic", "log-snr"):
        return text
    if text.startswith("power-"):
        try:
            if float(text[6:]) > 0:
                return text
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"must be uniform, quadratic, log-snr or power-<rho> (rho > 0), got {text!r}")


def build_grid(kind: str, steps: int, cld, eps: float):
    """The grid object of --grid."""
    if kind == "uniform":
        return UniformGrid(steps, eps)
    if kind == "quadratic":
        return QuadraticGrid(steps, eps)
    if kind == "log-snr":
        return LogSNRGrid(steps, InformationLogSNR(cld), eps)
    return PowerGrid(steps, float(kind[6:]), eps)


def build_parser() -> argparse.ArgumentParser:
    p = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt, or the training output folder holding it")
    p.add_argument("--sampler", choices=GRID_SAMPLERS + ["ode"], default="sscs",
                   help="a named sampler of splitdyn.sample (default sscs)")
    p.add_argument("--steps", type=positive_int, default=100, help="grid steps (NFE: see --final)")
    p.add_argument("--grid", type=grid_kind, default="quadratic", metavar="{uniform,quadratic,log-snr,power-RHO}",
                   help="time grid (default: quadratic striding, App. E.2.3)")
    p.add_argument("--grid-file", help="a saved grid: JSON of splitdyn.grids.GivenGrid.to_dict() (replaces --grid "
                   "and --steps)")
    p.add_argument("--final", choices=["denoise", "score-free"],
                   help="final step: Euler denoising (eq. 107, 1 NFE) or the score-free update (eq. 109); default "
                   "denoise for sscs/em, score-free otherwise")
    p.add_argument("--rtol", type=positive_float, default=1e-5, help="ODE relative tolerance (RK45 / dopri5)")
    p.add_argument("--atol", type=positive_float, default=1e-5, help="ODE absolute tolerance")
    p.add_argument("--eps", type=positive_float, default=1e-3, help="sampling cutoff (forward time)")
    p.add_argument("--no-denoise", dest="denoise", action="store_false", help="skip the final denoising step")
    p.add_argument("--num-samples", type=positive_int, default=64, help="GLOBAL number of samples, split over the ranks")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per sampler call on each rank")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="rank r uses the stream (seed, r)")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="use the raw weights instead of the EMA")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:i (default: cuda if available)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="fp32",
                   help="autocast for the network (fp32 default for sampling)")
    p.add_argument("--grid-count", type=nonnegative_int, default=64, help="images in grid.png")
    p.add_argument("--out", help="output folder (default <checkpoint folder>/samples_<sampler>)")
    p.add_argument("--threads", type=positive_int,
                   help="torch CPU threads per process (torch.set_num_threads; default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (it counts images)")
    return p


def _sample_named(model, count: int, args, final: str, generator, device) -> tuple[torch.Tensor, float, int]:
    """``count`` images with a named fixed-grid sampler of ``splitdyn.sample`` on the chosen grid (and the
    mean NFE and the step count)."""
    cld = model.cld
    if args.grid_file is not None:
        try:
            grid = GivenGrid.from_dict(json.loads(Path(args.grid_file).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--grid-file {args.grid_file}: cannot read a saved grid ({exc})") from None
        if abs(grid.T - float(cld.T)) > 1e-12:
            raise ValueError(f"--grid-file {args.grid_file}: its horizon T = {grid.T} is not the model's {float(cld.T)}")
    else:
        grid = build_grid(args.grid, args.steps, cld, args.eps)
    step = sampler_step(args.sampler, ReverseSDE(cld, model.score, cld.score_components))
    if isinstance(step, ReferenceSolver):
        raise ValueError(f"--sampler {args.sampler} picks its own steps: use a fixed-grid sampler")
    outputs, nfes = [], []
    for start in range(0, count, args.batch_size):
        n = min(args.batch_size, count - start)
        denoise = (final if final == "score-free" else True) if args.denoise else False  # eq. 109 / eq. 107
        result = sample(cld, model.score, (n, *model.image_shape), grid, step=step, denoise=denoise,
                        generator=generator, device=device, dtype=torch.float32)
        x = result.state[:, 0]
        outputs.append(x.clamp(-1, 1).float().cpu())
        nfes.append(result.nfe)
    images = torch.cat(outputs) if outputs else torch.empty(0, *model.image_shape)
    return images, (sum(nfes) / len(nfes) if nfes else 0.0), grid.n


def _read_npz(path: Path) -> dict:
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        with user_errors(PROG):
            return _sample(args)
    finally:
        torch.set_num_threads(threads)


def _sample(args) -> int:
    ctx = setup_distributed(args.device)
    try:
        model = load_trained_model(args.checkpoint, use_ema=args.ema, device=ctx.device, precision=args.precision)
        ckpt_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
        out = Path(args.out) if args.out else ckpt_dir / f"samples_{args.sampler}"
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        share = shard_sizes(args.num_samples, ctx.world_size)[ctx.rank]
        generator = torch.Generator(ctx.device).manual_seed(args.seed * 65_537 + ctx.rank)
        tic = time.perf_counter()
        final = args.final or ("denoise" if args.sampler in ("sscs", "em") else "score-free")
        steps = args.steps
        if (args.sampler == "ode" or (args.sampler in ("sscs", "em") and args.grid in ("uniform", "quadratic")
                                      and args.grid_file is None and final == "denoise")):
            images, nfe = generate_images(model.score, model.cld, share, model.image_shape, sampler=args.sampler,
                                          n_steps=args.steps, grid=args.grid, eps=args.eps,
                                          batch_size=args.batch_size, rtol=args.rtol, atol=args.atol,
                                          denoise=args.denoise, generator=generator, device=ctx.device,
                                          progress=args.progress and ctx.is_main)
        else:
            images, nfe, steps = _sample_named(model, share, args, final, generator, ctx.device)
        seconds = time.perf_counter() - tic
        uint8 = to_uint8(images).permute(0, 2, 3, 1).numpy()
        np.savez(out / f"samples_rank{ctx.rank}.npz", images=uint8, nfe=nfe, seconds=seconds)
        ctx.barrier()
        if ctx.is_main:
            shards = [_read_npz(out / f"samples_rank{r}.npz") for r in range(ctx.world_size)]
            merged = np.concatenate([s["images"] for s in shards])
            nfes = [float(s["nfe"]) for s in shards if len(s["images"])]
            mean_nfe = float(np.mean(nfes)) if nfes else 0.0
            np.savez(out / "samples.npz", images=merged, nfe=mean_nfe)
            grid = torch.from_numpy(merged[: args.grid_count]).permute(0, 3, 1, 2)
            if len(grid):
                save_image_grid(grid, out / "grid.png")
            summary = {"checkpoint_step": model.step, "sampler": args.sampler, "steps": steps,
                       "grid": args.grid_file or args.grid, "final": final, "nfe": int(round(mean_nfe)), "num_samples": len(merged),
                       "world_size": ctx.world_size, "seconds_rank0": round(seconds, 2), "out": str(out)}
            if args.sampler == "ode":  # adaptive: the NFE differs between batches
                summary["nfe_mean"] = mean_nfe
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(json.dumps(summary))
    finally:
        cleanup_distributed(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
