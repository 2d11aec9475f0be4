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

The paper's ablations (Sec. 5.3) are switches: ``--objective hsm|dsm`` (DSM draws v0 ~ N(0, gamma M) and uses
the DSM ell_t), ``--no-mixed``, ``--weighting ell|likelihood`` (lambda = ell_t^-2 or Gamma beta), ``--mass``,
``--gamma``, ``--beta`` (a number or ``8sqrtM``: beta = 8 sqrt(M), Table 4) and ``--eps-num``; all of them are
saved in the checkpoint and define the run for --resume.

``--batch-size`` is the GLOBAL batch size: it is split evenly over the ranks and must be divisible by the
number of processes. Only rank 0 writes (checkpoint.pt, train_log.csv, samples/*.png, tensorboard/).
A NaN/inf loss or batch stops training with a message (exit code 3); the last checkpoint is left as it was.
--resume refuses a checkpoint that is corrupt (checksum) or whose run-defining settings (CLD parameters,
network, batch size, seed, ...) differ from the given ones, listing the differences; --override-settings
continues anyway (it needs --resume). Two trainings cannot share an output folder: the second stops at once
(a lock file, released when the first exits, even by a crash). A checkpoint that cannot be written (a full
disk) stops training with one line that says which checkpoint is intact. Bad arguments and missing or corrupt
files end with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from splitdyn_cld.cli import (
    ScriptParser,
    beta_value,
    device_name,
    nonnegative_float,
    nonnegative_int,
    one_line,
    open_unit_float,
    positive_float,
    positive_int,
    resolve_beta,
    user_errors,
)
from splitdyn_cld.image_training import PRESETS, TrainSettings, settings_for, train
from splitdyn_cld.image_training.checkpoint import training_folder_lock
from splitdyn_cld.image_training.settings import default_out
from splitdyn_cld.training import NonFiniteLossError

PROG = "train_images.py"


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _dropout(text: str) -> float:
    value = nonnegative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _presets(name: str) -> str:
    """``"(default: the preset's: cifar10 800000, digits 1500, ...)"`` for the setting ``name``."""
    defaults = TrainSettings()
    values = [f"{config} {PRESETS[config].get(name, getattr(defaults, name))}" for config in sorted(PRESETS)]
    return f"(preset defaults: {', '.join(values)})"


def build_parser() -> argparse.ArgumentParser:
    p = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="digits", choices=sorted(PRESETS),
                   help="network + training preset (Table 6 for cifar10, cifar10_ablation, celebahq256; default "
                        "digits)")
    p.add_argument("--dataset", choices=["digits", "cifar10", "folder", "synthetic"],
                   help=f"training data {_presets('dataset')}")
    p.add_argument("--data-root", help="folder of the CIFAR-10 python batches, or of the images for --dataset folder")
    p.add_argument("--out", help=f"output folder (default {default_out('<config>')}, e.g. {default_out('digits')})")
    g = p.add_argument_group("optimisation (defaults: the preset's)")
    g.add_argument("--steps", type=positive_int, help=f"total optimisation steps {_presets('steps')}")
    g.add_argument("--batch-size", type=positive_int,
                   help=f"GLOBAL batch size, split over the ranks {_presets('batch_size')}")
    g.add_argument("--lr", type=positive_float, help=f"Adam learning rate {_presets('lr')}")
    g.add_argument("--warmup", type=nonnegative_int, help=f"linear learning-rate warm-up steps {_presets('warmup')}")
    g.add_argument("--grad-clip", type=nonnegative_float, help=f"gradient-norm clipping, 0: off {_presets('grad_clip')}")
    g.add_argument("--ema-decay", type=open_unit_float, help=f"EMA rate {_presets('ema_decay')}")
    g.add_argument("--dropout", type=_dropout, help="override the network's dropout, in [0, 1)")
    g.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast precision: auto = bf16 on CUDA, fp32 on CPU; fp16 uses a GradScaler (default auto)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    g.add_argument("--objective", choices=["hsm", "dsm"],
                   help="hybrid (eq. 9) or denoising (eq. 54: v0 ~ N(0, gamma M)) score matching (default and paper: hsm)")
    g.add_argument("--weighting", choices=["ell", "likelihood"],
                   help="loss weighting: ell = ell_t^-2 (default and paper), likelihood = Gamma beta (App. B.3)")
    g.add_argument("--t-min", type=open_unit_float, help="t-sampling cutoff (default and paper: 1e-5)")
    g.add_argument("--random-flip", type=_bool, help=f"random horizontal flips, true/false {_presets('random_flip')}")
    g.add_argument("--seed", type=nonnegative_int, help="random seed (default 0)")
    g = p.add_argument_group("CLD (defaults: M=0.25, gamma=0.04, beta=4, critical damping)")
    g.add_argument("--mass", type=positive_float)
    g.add_argument("--gamma", type=positive_float)
    g.add_argument("--beta", type=beta_value,
                   help="constant rate beta, or 8sqrtM for the paper's tie beta = 8 sqrt(M) (Sec. 5.3)")
    g.add_argument("--eps-num", type=nonnegative_float, help=f"Cholesky stabiliser {_presets('eps_num')}")
    g.add_argument("--no-mixed", dest="mixed", action="store_false", default=None,
                   help="ablation: no mixed score parametrisation")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log-every", type=positive_int, help=f"log every N steps {_presets('log_every')}")
    g.add_argument("--ckpt-every", type=nonnegative_int,
                   help=f"overwrite checkpoint.pt every N steps, atomically {_presets('ckpt_every')}")
    g.add_argument("--snapshot-every", type=nonnegative_int, help="also keep checkpoint_<step>.pt every N steps")
    g.add_argument("--sample-every", type=nonnegative_int,
                   help=f"write an EMA sample grid every N steps, 0: never {_presets('sample_every')}")
    g.add_argument("--sample-count", type=nonnegative_int, help=f"images per grid {_presets('sample_count')}")
    g.add_argument("--sample-steps", type=positive_int, help=f"SSCS steps for the sample grids {_presets('sample_steps')}")
    g.add_argument("--resume", action="store_true", default=None, help="continue from <out>/checkpoint.pt")
    g.add_argument("--override-settings", action="store_true", default=None,
                   help="with --resume: continue even if settings that define the run (CLD parameters, network, "
                        "batch size, seed, ...) differ from the checkpoint's")
    g.add_argument("--device", type=device_name, help="cpu, cuda or cuda:i (default: cuda if available)")
    g.add_argument("--num-workers", type=nonnegative_int, help="DataLoader workers per rank (default 0)")
    g.add_argument("--threads", type=nonnegative_int, default=1,
                   help="torch CPU threads per process (default 1: with several processes or a busy machine, "
                        "torch's default of one thread per core oversubscribes the cores and was measured about "
                        "40x slower on a loaded 2-core machine; 0 keeps torch's choice, e.g. alone on a big CPU)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    return p


def settings_from_args(argv: list[str] | None = None):
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    if args["override_settings"] and not args["resume"]:
        parser.error("--override-settings only applies with --resume (it lets a resumed run continue with changed "
                     "settings); add --resume or drop it")
    config = args.pop("config")
    mass = args["mass"] if args["mass"] is not None else PRESETS[config].get("mass", TrainSettings.mass)
    args["beta"] = resolve_beta(args["beta"], mass)
    if args["threads"] == 0:  # torch's own choice
        args["threads"] = None
    return settings_for(config, **args)


def main(argv: list[str] | None = None) -> int:
    # the library logs its notes (resuming, stale temporaries) through logging: show them on stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    library_log = logging.getLogger("splitdyn_cld")
    level = library_log.level
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    try:
        return _main(argv)
    finally:
        library_log.removeHandler(handler)
        library_log.setLevel(level)


def _main(argv: list[str] | None) -> int:
    with user_errors(PROG):
        settings = settings_from_args(argv)
        with training_folder_lock(settings.out):  # one run per output folder (rank 0 holds it)
            try:
                result = train(settings)
            except NonFiniteLossError as exc:
                print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
                return 3
    if result.history and result.rank == 0:
        print(f"step {result.step}: loss {result.history[-1]['loss']:.5g}; checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
