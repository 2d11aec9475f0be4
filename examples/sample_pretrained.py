#!/usr/bin/env python
"""Sample a pretrained diffusers model (a local folder) with any splitdyn sampler and grid; write an image grid.

    # a pipeline folder (model_index.json, unet/, scheduler/), e.g. google/ddpm-cifar10-32 downloaded elsewhere:
    python examples/sample_pretrained.py path/to/ddpm-cifar10-32 --sampler dpmpp-2m --steps 20
    # DDIM on diffusers' discrete timesteps ("trailing" spacing), 10 model evaluations:
    python examples/sample_pretrained.py path/to/pipeline --sampler dpmpp-1 --steps 10
    # a continuous grid (uniform in log-SNR) with a third-order multistep sampler:
    python examples/sample_pretrained.py path/to/pipeline --sampler dpmpp-3m --grid logsnr --steps 15
    # a bare model folder (config.json + weights) with the scheduler config from elsewhere:
    python examples/sample_pretrained.py path/to/unet --scheduler path/to/scheduler_config.json

The model is read with diffusers' from_pretrained from the folder only (nothing is downloaded); install the
extra first: pip install "splitdyn[pretrained]". The discrete timestep n is continuous time
t_n = log(alpha_bar_n) / log(alpha_bar_{N-1}) (see splitdyn.pretrained); --grid timesteps uses diffusers'
timesteps (--spacing trailing/leading/linspace), the other grids are continuous (the model is then called at
fractional timesteps). Every run ends with the model's data prediction at the last time (diffusers' final step).
Output in --out: grid.png (the first --grid-count images), samples.npz (uint8 images (N, H, W, C)) and
summary.json (also printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


from splitdyn import SAMPLERS, LogSNRGrid, PowerGrid, QuadraticGrid, UniformGrid
from splitdyn_cld.cli import (
    device_name,
    ScriptParser,
    nonnegative_int,
    positive_float,
    positive_int,
    user_errors,
)
from splitdyn_cld.data import to_uint8
from splitdyn_cld.image_training import save_image_grid

PROG = "sample_pretrained.py"
GRIDS = ("timesteps", "uniform", "quadratic", "power", "logsnr")
# reference solvers that pick their own steps or need a Brownian path are not for this script
SAMPLER_NAMES = sorted(name for name in SAMPLERS if not name.startswith(("torchsde", "adaptive")) and name != "ode")


def build_parser() -> argparse.ArgumentParser:
    p = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a local diffusers pipeline folder or model folder")
    p.add_argument("--scheduler", help="scheduler folder or scheduler_config.json (default: found beside the model)")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default="dpmpp-2m",
                   help="a splitdyn sampler (dpmpp-1 is DDIM; default dpmpp-2m)")
    p.add_argument("--steps", type=positive_int, default=20, help="number of steps (timesteps or grid intervals)")
    p.add_argument("--grid", choices=GRIDS, default="timesteps",
                   help="discrete diffusers timesteps, or a continuous grid in t (default timesteps)")
    p.add_argument("--spacing", choices=("trailing", "leading", "linspace"), default="trailing",
                   help="diffusers' timestep spacing for --grid timesteps (default trailing: starts at N-1)")
    p.add_argument("--rho", type=positive_float, default=7.0, help="exponent of --grid power")
    p.add_argument("--num-samples", type=positive_int, default=16)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:i")
    p.add_argument("--grid-count", type=nonnegative_int, default=64, help="images in grid.png")
    p.add_argument("--out", default="outputs/pretrained", help="output folder (default outputs/pretrained)")
    p.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (torch.set_num_threads; default: torch's choice)")
    return p


def discrete_timesteps(n_train: int, steps: int, spacing: str) -> torch.Tensor:
    """diffusers' timestep spacings (DDIMScheduler.set_timesteps): decreasing integers."""
    if steps > n_train:
        raise ValueError(f"--steps must be at most the model's {n_train} training timesteps, got {steps}")
    if spacing == "trailing":
        values = np.round(np.arange(n_train, 0, -n_train / steps)).astype(np.int64) - 1
    elif spacing == "leading":
        values = (np.arange(0, steps) * (n_train // steps)).round()[::-1].astype(np.int64)
    else:
        values = np.linspace(0, n_train - 1, steps).round()[::-1].astype(np.int64)
    return torch.from_numpy(np.unique(values)[::-1].copy())


def continuous_grid(kind: str, steps: int, process, eps: float, rho: float):
    if kind == "uniform":
        return UniformGrid(steps, eps)
    if kind == "quadratic":
        return QuadraticGrid(steps, eps)
    if kind == "power":
        return PowerGrid(steps, rho, eps)
    return LogSNRGrid(steps, process, eps)


def event_shape(model) -> tuple[int, ...]:
    config = model.config
    size = config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return (int(config.in_channels), *size)


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
    from splitdyn.pretrained import load_diffusers

    adapter = load_diffusers(args.path, scheduler=args.scheduler, device=args.device)
    shape = event_shape(adapter.model)
    eps = float(adapter.times[0])  # timestep 0: the smallest noise level the model was trained on
    if args.grid == "timesteps":
        timesteps = discrete_timesteps(adapter.num_train_timesteps, args.steps, args.spacing)
        where = {"timesteps": timesteps}
    else:
        where = {"grid": continuous_grid(args.grid, args.steps, adapter.process, eps, args.rho)}
    calls = [0]
    network = adapter.model

    def counted(x, timestep):  # count the model evaluations by wrapping the model once
        calls[0] += 1
        return network(x, timestep)

    adapter.model = counted
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    tic = time.perf_counter()
    remaining = args.num_samples
    with torch.no_grad():
        while remaining > 0:
            size = min(args.batch_size, remaining)
            noise = torch.randn((size, *shape), generator=generator).to(args.device)
            batches.append(adapter.sample(noise, step=args.sampler, **where).cpu())
            remaining -= size
    seconds = time.perf_counter() - tic
    images = torch.cat(batches).clamp(-1, 1)
    np.savez(out / "samples.npz", images=to_uint8(images).permute(0, 2, 3, 1).numpy())
    if args.grid_count:
        save_image_grid(images[: args.grid_count], out / "grid.png")
    summary = {"path": str(args.path), "sampler": args.sampler, "grid": args.grid, "steps": args.steps,
               "spacing": args.spacing if args.grid == "timesteps" else None,
               "prediction_type": adapter.prediction_type, "num_samples": len(images),
               "model_calls_per_batch": calls[0] // len(batches), "seconds": round(seconds, 2), "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
