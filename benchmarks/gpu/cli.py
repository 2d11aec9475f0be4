"""Command line and run of the GPU benchmark: settings, the time budget's shares, the parts in order."""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback

import torch

from _common import machine

from .common import Budget, device_name, left, write_part
from .fp16 import part_fp16
from .overhead import part_overhead
from .sampling import part_sampling
from .throughput import part_throughput

__all__ = ["PARTS", "SHARES", "FULL", "QUICK", "PART_FUNCTIONS", "parse_args", "main"]

#: The parts, in the order they run.
PARTS = ("sampling", "overhead", "fp16", "throughput")
#: Relative shares of the time budget (a part gets its share of what is left when it starts); the overhead
#: part's compiled steps take half of its share.
SHARES = {"sampling": 1.0, "overhead": 2.0, "fp16": 3.0, "throughput": 4.0}
#: The function of each part: ``part(args, deadline, cache) -> payload``.
PART_FUNCTIONS = {"sampling": part_sampling, "overhead": part_overhead, "fp16": part_fp16,
                  "throughput": part_throughput}

#: Settings of a full run and of ``--quick``; explicit command-line values override either. ``--quick`` has no
#: time budget (``math.inf``): it runs exactly its step and repeat counts, so its results do not depend on how
#: busy the machine is.
FULL = dict(train_configs=["cifar10", "cifar10_ablation"], sample_config="cifar10", batch=128, precision="bf16",
            train_steps=20, train_warmup=3, variants=["eager", "compiled"], sample_steps=10, repeats=5,
            fp16_config="cifar10_ablation", fp16_batch=128, fp16_steps=2000, fp16_log_every=50, fp16_warmup=100,
            fp16_window=200, budget=480.0)
QUICK = dict(train_configs=["tiny"], sample_config="tiny", batch=4, precision="bf16", train_steps=3, train_warmup=1,
             variants=["eager", "compiled"], sample_steps=3, repeats=2, fp16_config="tiny", fp16_batch=4,
             fp16_steps=20, fp16_log_every=5, fp16_warmup=5, fp16_window=200, budget=math.inf)


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    """Parse the command line; values left unset come from :data:`FULL` or, with ``--quick``, :data:`QUICK`.

    Parameters
    ----------
    argv:
        The arguments (default ``sys.argv[1:]``).
    description:
        The ``--help`` text (the script's docstring).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="parts to run (they always run in the order %(choices)s)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--quick", action="store_true", help="CPU smoke mode: tiny network, batch 4, 3 steps, ...")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--budget", type=float, help="total seconds for all parts (default 480; --quick: none, fixed step counts)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, help="batch of throughput/sampling/overhead (default 128)")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"],
                        help="autocast of throughput/sampling/overhead (default bf16)")
    parser.add_argument("--train-configs", nargs="+", help="throughput configs (default cifar10 cifar10_ablation)")
    parser.add_argument("--train-steps", type=int, help="timed training steps per measurement (default 20)")
    parser.add_argument("--train-warmup", type=int, help="untimed steps first, the compiling one included (default 3)")
    parser.add_argument("--variants", nargs="+", choices=["eager", "compiled"],
                        help="throughput variants; compiled also adds the overhead part's compiled step (default: both)")
    parser.add_argument("--sample-config", help="sampling/overhead config (default cifar10)")
    parser.add_argument("--sample-steps", type=int, help="sampler steps (default 10)")
    parser.add_argument("--repeats", type=int, help="timed repeats of each sampling measurement (default 5)")
    parser.add_argument("--fp16-config", help="default cifar10_ablation")
    parser.add_argument("--fp16-batch", type=int, help="default 128")
    parser.add_argument("--fp16-steps", type=int, help="default 2000")
    parser.add_argument("--fp16-log-every", type=int, help="default 50")
    parser.add_argument("--fp16-warmup", type=int, help="learning-rate warm-up steps (default 100)")
    parser.add_argument("--fp16-window", type=int, help="losses averaged at each end for the check (default 200)")
    args = parser.parse_args(argv)
    args.variants_given = args.variants is not None
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device_obj = torch.device(args.device)
    if args.device_obj.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda requested but CUDA is not available")
        if args.device_obj.index is None:  # torch.cuda.set_device needs an index
            args.device_obj = torch.device("cuda", torch.cuda.current_device())
    words = sys.argv[1:] if argv is None else argv
    args.command = "python benchmarks/bench_gpu.py " + " ".join(str(a) for a in words)
    return args


def main(argv=None, description: str | None = None) -> dict:
    """Run the chosen parts; returns ``{part: payload}`` (a failed part: ``{"error": traceback}``).

    Parameters
    ----------
    argv, description:
        As for :func:`parse_args`.
    """
    args = parse_args(argv, description)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device_obj.type == "cuda":
        torch.cuda.set_device(args.device_obj)
    parts = [p for p in PARTS if p in args.parts]
    print(f"machine: {machine()}\ndevice: {device_name(args.device_obj)}; parts {parts}; budget {args.budget:.0f} s",
          flush=True)
    budget = Budget(args.budget, parts, SHARES)
    cache: dict = {}
    results = {}
    for part in parts:
        deadline = budget.start_part(part)
        print(f"\n== {part} ({max(left(deadline), 0):.0f} s of {max(budget.remaining(), 0):.0f} s left) ==",
              flush=True)
        start = time.perf_counter()
        try:
            results[part] = PART_FUNCTIONS[part](args, deadline, cache)
        except Exception:  # noqa: BLE001 - one failing part must not lose the others
            error = traceback.format_exc()
            print(error, flush=True)
            results[part] = {"error": error}
            write_part(args, part, {"error": error}, f"**failed**\n\n```\n{error}\n```")
        print(f"== {part}: {time.perf_counter() - start:.1f} s ==", flush=True)
    cache.clear()
    return results
