#!/usr/bin/env python
"""Train an image CLD-SGM (paper App. E.2, Table 6) on one device, or on many with torchrun.

Offline default (scikit-learn's 8x8 digits, CPU, a few minutes)::

    python examples/train_images.py --config digits --steps 1500 --out outputs/digits

CIFAR-10 as in the paper (global batch 128 = 16 GPUs x 8; bf16 autocast by default on CUDA)::

    torchrun --standalone --nproc_per_node 8 examples/train_images.py --config cifar10 \\
        --data-root data/cifar10 --out outputs/cifar10
    # continue after an interruption (exact: model, EMA, optimiser, scaler, RNGs and data order):
    torchrun --standalone --nproc_per_node 8 examples/train_images.py --config cifar10 \\
        --data-root data/cifar10 --out outputs/cifar10 --resume

CelebA-HQ-256 from a folder of images: ``--config celebahq256 --dataset folder --data-root PATH``.
Throughput / stability without data: ``--dataset synthetic``.

``--batch-size`` is the GLOBAL batch size: it is split evenly over the ranks and must be divisible by the
number of processes. Only rank 0 writes (checkpoint.pt, train_log.csv, samples/*.png, tensorboard/).
A NaN/inf loss stops training with a message (exit code 3); the last checkpoint is left as it was.
"""

from __future__ import annotations

import argparse
import sys

from splitdyn_cld.image_training import PRESETS, settings_for, train
from splitdyn_cld.training import NonFiniteLossError


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="digits", choices=sorted(PRESETS),
                   help="network + training preset (Table 6 for cifar10, cifar10_ablation, celebahq256)")
    p.add_argument("--dataset", choices=["digits", "cifar10", "folder", "synthetic"],
                   help="training data (default: the preset's)")
    p.add_argument("--data-root", help="folder of the CIFAR-10 python batches, or of the images for --dataset folder")
    p.add_argument("--out", help="output folder (default outputs/<config>)")
    g = p.add_argument_group("optimisation (defaults: the preset's)")
    g.add_argument("--steps", type=int, help="total optimisation steps")
    g.add_argument("--batch-size", type=int, help="GLOBAL batch size, split over the ranks")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--warmup", type=int, help="linear learning-rate warm-up steps")
    g.add_argument("--grad-clip", type=float, help="gradient-norm clipping (0: off)")
    g.add_argument("--ema-decay", type=float, help="EMA rate (paper: 0.9999)")
    g.add_argument("--dropout", type=float, help="override the network's dropout")
    g.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast precision: auto = bf16 on CUDA, fp32 on CPU; fp16 uses a GradScaler")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    g.add_argument("--weighting", choices=["ell", "likelihood"], help="HSM weighting (paper: ell)")
    g.add_argument("--t-min", type=float, help="t-sampling cutoff (paper: 1e-5)")
    g.add_argument("--random-flip", type=_bool, help="random horizontal flips (true/false)")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("CLD (defaults: M=0.25, gamma=0.04, beta=4, critical damping)")
    g.add_argument("--mass", type=float)
    g.add_argument("--gamma", type=float)
    g.add_argument("--beta", type=float)
    g.add_argument("--eps-num", type=float, help="Cholesky stabiliser (1e-9 CIFAR-10, 1e-6 CelebA-HQ)")
    g.add_argument("--no-mixed", dest="mixed", action="store_false", default=None,
                   help="ablation: no mixed score parametrisation")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log-every", type=int)
    g.add_argument("--ckpt-every", type=int, help="overwrite checkpoint.pt every N steps (atomically)")
    g.add_argument("--snapshot-every", type=int, help="also keep checkpoint_<step>.pt every N steps")
    g.add_argument("--sample-every", type=int, help="write an EMA sample grid every N steps (0: only never)")
    g.add_argument("--sample-count", type=int)
    g.add_argument("--sample-steps", type=int, help="SSCS steps for the sample grids")
    g.add_argument("--resume", action="store_true", default=None, help="continue from <out>/checkpoint.pt")
    g.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    g.add_argument("--num-workers", type=int, help="DataLoader workers per rank")
    g.add_argument("--threads", type=int, help="torch CPU threads per process (1 avoids oversubscription)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    return p


def settings_from_args(argv: list[str] | None = None):
    args = vars(build_parser().parse_args(argv))
    config = args.pop("config")
    if args.get("out") is None:
        args["out"] = f"outputs/{config}"
    return settings_for(config, **args)


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_args(argv)
    try:
        result = train(settings)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if result.history and result.rank == 0:
        print(f"step {result.step}: loss {result.history[-1]['loss']:.5g}; checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
