r"""The ``fp16`` part: a stability run of the library's fp16 training (autocast + ``GradScaler``).

``--fp16-steps`` training steps of ``--fp16-config`` at ``--fp16-batch`` on synthetic CIFAR-shaped data through
:func:`splitdyn_cld.image_training.train_step` with ``precision="fp16"``, Adam after a short linear warm-up; the
loss is logged every ``--fp16-log-every`` steps, the checks are "every loss finite" and "the mean of the last
window is below the mean of the first". Loss curve to JSON and PNG.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from _common import markdown_table
from splitdyn_cld.image_training import build_cld, build_score_model, resolve_precision, settings_for, train_step
from splitdyn_cld.nets import get_config

from .common import device_name, image_shape_of, left, notes_text, result_name, results_dir, write_part

__all__ = ["part_fp16", "plot_losses"]


def part_fp16(args, deadline: float, cache: dict) -> dict:
    """fp16 + GradScaler stability run of the ablation UNet (see the module docstring).

    Parameters
    ----------
    args:
        The parsed command line.
    deadline:
        ``perf_counter`` time by which the part must be done.
    cache:
        The shared model cache (emptied: this part builds its own training model).
    """
    from splitdyn_cld.training import NonFiniteLossError, warmup_lr

    cache.clear()
    device = args.device_obj
    if device.type == "cuda":
        torch.cuda.empty_cache()
    s = settings_for(args.fp16_config, batch_size=args.fp16_batch, precision="fp16", device=str(device))
    precision, autocast_dtype = resolve_precision(s.precision, device)
    cld = build_cld(s)
    torch.manual_seed(args.seed)
    score_model, net = build_score_model(get_config(args.fp16_config), cld, s.mixed, autocast_dtype)
    net.to(device).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=s.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=True)
    generator = torch.Generator(device).manual_seed(args.seed * 65_537 + 1)
    data = torch.Generator(device).manual_seed(args.seed + 7)
    shape = (args.fp16_batch, *image_shape_of(args.fp16_config))
    losses, log, notes = [], [], []
    failure, skipped, interval, interval_skipped = None, 0, [], 0
    start = time.perf_counter()
    mark = None
    for step in range(args.fp16_steps):
        lr = warmup_lr(step, s.lr, args.fp16_warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x0 = torch.rand(shape, generator=data, device=device) * 2 - 1
        scale = scaler.get_scale()
        try:
            stats = train_step(score_model, optimizer, x0, cld, parameters=parameters, grad_clip=s.grad_clip,
                               scaler=scaler, weighting=s.weighting, t_min=s.t_min, generator=generator, step=step + 1)
        except NonFiniteLossError as exc:
            failure = str(exc)
            print(f"  non-finite loss: {exc}", flush=True)
            break
        skip = scaler.get_scale() < scale  # the scaler lowers its scale exactly when it skips a step
        skipped += skip
        interval_skipped += skip
        losses.append(stats["loss"])
        interval.append(stats["loss"])
        done = step + 1
        if done == 10:  # estimate the run's length from steps 10..30 (the first ones include cuDNN autotuning)
            mark = time.perf_counter()
        if done == 30:
            per_step = (time.perf_counter() - mark) / 20
            need = per_step * (args.fp16_steps - done)
            if need > left(deadline):
                fit = int(0.9 * (left(deadline) + time.perf_counter() - start) / per_step)
                notes.append(f"at {per_step * 1e3:.0f} ms/step the {args.fp16_steps} steps need about "
                             f"{need + time.perf_counter() - start:.0f} s, more than this part's budget: the run stops "
                             f"early; rerun with --fp16-steps {fit} or a smaller --fp16-batch (or a larger --budget)")
                print(f"  {notes[-1]}", flush=True)
        out_of_time = left(deadline) <= 0 and done < args.fp16_steps
        if done % args.fp16_log_every == 0 or done == args.fp16_steps or out_of_time:
            # an overflowing fp16 step has an infinite gradient norm (the scaler skips it): logged as None
            grad_norm = stats["grad_norm"] if math.isfinite(stats["grad_norm"]) else None
            row = {"step": done, "loss": sum(interval) / len(interval), "loss_at_step": stats["loss"],
                   "grad_norm": grad_norm, "skipped_in_interval": int(interval_skipped), "lr": lr,
                   "scale": scaler.get_scale(), "elapsed_s": time.perf_counter() - start}
            log.append(row)
            interval, interval_skipped = [], 0
            print(f"  step {done:5d}  loss {row['loss']:.4f}  scale {row['scale']:.0f}  "
                  f"{row['elapsed_s']:.0f} s", flush=True)
        if out_of_time:
            notes.append(f"stopped after {done} of {args.fp16_steps} steps: the part's time budget ran out")
            print(f"  {notes[-1]}", flush=True)
            break
    elapsed = time.perf_counter() - start
    window = min(args.fp16_window, len(losses) // 2)
    first = statistics.fmean(losses[:window]) if window else None
    last = statistics.fmean(losses[-window:]) if window else None
    finite = failure is None and all(math.isfinite(v) for v in losses)
    decreased = bool(window) and last < first
    if window < args.fp16_window:
        notes.append(f"windows of {window} losses instead of {args.fp16_window} ({len(losses)} steps ran)")
    if args.quick:
        notes.append("--quick: a few steps of the tiny network check that the part runs; the loss-decrease check "
                     "is meaningful only for the full run")
    summary = {"steps_completed": len(losses), "steps_requested": args.fp16_steps, "all_finite": finite,
               "failure": failure, "window": window, "mean_first_window": first, "mean_last_window": last,
               "loss_decreased": decreased, "skipped_steps": int(skipped), "final_scale": scaler.get_scale(),
               "seconds": elapsed, "seconds_per_step": elapsed / max(len(losses), 1)}
    name = result_name(args, "fp16")
    png = plot_losses(losses, log, results_dir(args) / f"{name}.png",
                      f"{args.fp16_config}, fp16 + GradScaler, batch {args.fp16_batch}, {device_name(device)}")
    verdict = "PASS" if finite and decreased else "FAIL"
    text = (f"fp16 stability, `{args.fp16_config}` UNet, batch {args.fp16_batch}, synthetic data, lr {s.lr:g} after "
            f"a {args.fp16_warmup}-step warm-up, grad clip {s.grad_clip:g}: **{verdict}** "
            f"(all finite: {finite}; mean of the last {window} losses {last if last is None else f'{last:.4f}'} vs "
            f"first {window} {first if first is None else f'{first:.4f}'}). {len(losses)} steps in {elapsed:.0f} s, "
            f"{int(skipped)} steps skipped by the scaler.\n\n"
            + markdown_table(["step", "loss (interval mean)", "loss", "grad norm", "skipped", "scale"],
                             [[r["step"], r["loss"], r["loss_at_step"],
                               "-" if r["grad_norm"] is None else r["grad_norm"], r["skipped_in_interval"], r["scale"]]
                              for r in log])
            + (f"\n\n![loss curve]({png.name})" if png else "") + "\n\n" + notes_text(notes))
    print(f"  fp16: {verdict} ({summary})", flush=True)
    payload = {"settings": {"config": args.fp16_config, "batch": args.fp16_batch, "steps": args.fp16_steps,
                            "log_every": args.fp16_log_every, "lr": s.lr, "warmup": args.fp16_warmup,
                            "grad_clip": s.grad_clip, "precision": precision},
               "summary": summary, "log": log, "losses": losses, "notes": notes}
    write_part(args, "fp16", payload, text)
    return payload


def plot_losses(losses, log, path: Path, title: str) -> Path | None:
    """Plot the loss per step and the interval means to ``path`` (PNG); ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.5, alpha=0.4, label="loss per step")
    if log:
        ax.plot([r["step"] for r in log], [r["loss"] for r in log], "o-", ms=3, label="interval mean")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("HSM loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
