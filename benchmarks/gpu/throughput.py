r"""The ``throughput`` part: training images/s and achieved TFLOP/s, eager and with ``torch.compile``.

Through the library's training step (:func:`splitdyn_cld.image_training.train_step`: HSM loss, finite check,
backward, gradient clipping, Adam) plus the EMA update of the training loop, on synthetic batches already on
the device. FLOPs: the UNet forward counted once on the meta device (:func:`gpu.common.forward_flops`), times 3
for forward + backward, over the median step time.
"""

from __future__ import annotations

import json
import math
import time
import traceback

import torch

from _common import markdown_table, median_time
from splitdyn_cld.image_training import (SyntheticImages, build_cld, build_score_model, resolve_precision,
                                         settings_for, train_step)
from splitdyn_cld.nets import get_config

from .common import (OutOfTime, device_name, forward_flops, image_shape_of, left, notes_text, result_name,
                     results_dir, synchronize, time_limit, wants_compiled, write_part)

__all__ = ["earlier_throughput", "measure_training", "part_throughput"]


def earlier_throughput(args, keys: set) -> list[dict]:
    """Throughput records of an earlier run in the same results folder that this run does not remeasure.

    Only records from the same GPU model, batch and precision are kept (marked ``"earlier_run": True``), so
    that e.g. ``--parts throughput --variants compiled`` completes an earlier default run instead of
    replacing its eager figures.
    """
    path = results_dir(args) / f"{result_name(args, 'throughput')}.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    settings = old.get("settings", {})
    if (old.get("device_name") != device_name(args.device_obj) or settings.get("batch") != args.batch
            or settings.get("precision") != args.precision):
        return []
    return [dict(r, earlier_run=True) for r in old.get("results", []) if (r["config"], r["variant"]) not in keys]




def measure_training(args, config: str, compiled: bool, flops: int, seconds: float) -> dict:
    """Images/s and TFLOP/s of ``train_step`` (+ EMA update) for one configuration, eager or compiled.

    Parameters
    ----------
    args:
        The parsed command line.
    config:
        Network / preset name.
    compiled:
        ``torch.compile`` the ``UNetVelocityNet`` (as :func:`splitdyn_cld.image_training.train` does).
    flops:
        Forward FLOPs of one batch (:func:`forward_flops`).
    seconds:
        Time limit of the whole measurement (model build and compilation included).
    """
    from splitdyn_cld.score import MixedScore
    from splitdyn_cld.training import make_ema

    begin = time.perf_counter()
    device = args.device_obj
    s = settings_for(config, batch_size=args.batch, precision=args.precision, device=str(device))
    precision, autocast_dtype = resolve_precision(s.precision, device)
    cld = build_cld(s)
    torch.manual_seed(args.seed)
    _, net = build_score_model(get_config(config), cld, s.mixed, autocast_dtype)
    net.to(device).train()
    ema = make_ema(net, s.ema_decay, warmup=True)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=s.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model = MixedScore(torch.compile(net) if compiled else net, cld, mixed=s.mixed)
    images = SyntheticImages(image_shape_of(config), length=4 * args.batch, seed=args.seed)
    pool = torch.stack([images[i] for i in range(len(images))]).to(device).split(args.batch)
    generator = torch.Generator(device).manual_seed(args.seed * 65_537 + 1)
    counter = {"step": 0}

    def step():
        x0 = pool[counter["step"] % len(pool)]
        counter["step"] += 1
        train_step(model, optimizer, x0, cld, parameters=parameters, grad_clip=s.grad_clip,
                   scaler=scaler if precision == "fp16" else None, weighting=s.weighting, t_min=s.t_min,
                   generator=generator, step=counter["step"])
        ema.update_parameters(net)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    step()  # compilation (fwd and bwd) happens here
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(max(args.train_warmup - 1, 0)):
        step()
    synchronize(device)
    warm = (time.perf_counter() - start - first) / max(args.train_warmup - 1, 1)
    remaining = 0.9 * seconds - (time.perf_counter() - begin)  # a margin, so the time limit does not strike
    if math.isfinite(remaining):
        repeats = max(1, min(args.train_steps, int(remaining / max(warm, 1e-9)) - 1))
    else:  # no time budget (--quick): exactly the steps asked for
        repeats = args.train_steps
    t = median_time(step, repeats, device, warmup=0)
    record = {"config": config, "variant": "compiled" if compiled else "eager", "batch": args.batch,
              "precision": precision, "seconds_per_step": t, "images_per_s": args.batch / t,
              "forward_flops_per_batch": flops, "tflops_per_s": 3 * flops / t / 1e12,
              "first_step_s": first, "timed_steps": repeats,
              "parameters_millions": sum(p.numel() for p in parameters) / 1e6}
    if device.type == "cuda":
        record["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return record


def part_throughput(args, deadline: float, cache: dict) -> dict:
    """Training throughput, eager and compiled (see the module docstring).

    Parameters
    ----------
    args:
        The parsed command line.
    deadline:
        ``perf_counter`` time by which the part must be done.
    cache:
        The shared model cache (emptied: this part builds its own training models).
    """
    cache.clear()
    device = args.device_obj
    variants = list(args.variants)
    notes: list[str] = []
    compiled, skip_note = wants_compiled(args)
    if "compiled" in variants and not compiled:
        variants.remove("compiled")
        notes.append(skip_note)
        print(f"  {notes[-1]}", flush=True)
    flops = {}
    for config in args.train_configs:
        count, where = forward_flops(config, args.batch, device)
        flops[config] = count
        print(f"  {config}: {count / 1e12:.4g} TFLOP per forward of {args.batch} images (counted on {where})",
              flush=True)
    # eager runs first (predictable), then compiled ones, cheapest configuration first
    plan = [(c, v) for v in variants for c in sorted(args.train_configs, key=flops.get)]
    records = earlier_throughput(args, set(plan))
    if records:
        notes.append(f"{len(records)} row(s) marked * come from an earlier run in the same folder (same GPU model, "
                     "batch and precision)")
    headers = ["config", "variant", "ms / step", "images / s", "TFLOP/s", "first step s", "steps", "memory GiB"]

    def row(record):
        return [record["config"], record["variant"] + ("*" if record.get("earlier_run") else ""),
                record["seconds_per_step"] * 1e3, record["images_per_s"], record["tflops_per_s"],
                record["first_step_s"], record["timed_steps"], record.get("max_memory_gib", "-")]

    rows = [row(r) for r in records]

    def write():
        table = markdown_table(headers, rows)
        text = (f"Training throughput through `train_step` + EMA update, global batch {args.batch}, {args.precision} "
                "autocast, synthetic CIFAR-shaped batches on the device. TFLOP/s = 3 x forward FLOPs "
                "(FlopCounterMode, multiply-add = 2) / median step time; 'first step' includes torch.compile."
                f"\n\n{table}\n\n" + notes_text(notes))
        write_part(args, "throughput", {"settings": {"configs": args.train_configs, "batch": args.batch,
                                                 "precision": args.precision, "timed_steps": args.train_steps,
                                                 "variants": variants},
                                    "forward_flops_per_batch": flops, "results": records, "notes": notes}, text)
        return table

    for i, (config, variant) in enumerate(plan):
        seconds = left(deadline) if variant == "compiled" else left(deadline) / (len(plan) - i)
        if seconds < (20 if variant == "compiled" and device.type == "cuda" else 1):
            notes.append(f"{config} {variant}: skipped, {max(seconds, 0):.0f} s of the budget left")
            print(f"  {notes[-1]}", flush=True)
            continue
        try:
            with time_limit(seconds):
                record = measure_training(args, config, variant == "compiled", flops[config], seconds)
        except OutOfTime:
            notes.append(f"{config} {variant}: not finished within its {seconds:.0f} s"
                         + (" (torch.compile still compiling?)" if variant == "compiled" else ""))
            print(f"  {notes[-1]}", flush=True)
            record = None
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory or a compile error: report, go on
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            notes.append(f"{config} {variant}: failed: {type(exc).__name__}: {first_line}")
            print(traceback.format_exc(), flush=True)
            record = None
        finally:
            if variant == "compiled":
                torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if record is None:
            continue
        records.append(record)
        rows.append(row(record))
        print(f"  {config} {variant}: {record['images_per_s']:.1f} images/s, {record['tflops_per_s']:.2f} TFLOP/s",
              flush=True)
        write()
    table = write()
    print(table, flush=True)
    return {"results": records, "notes": notes}
