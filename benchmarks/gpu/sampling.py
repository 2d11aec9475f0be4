"""The ``sampling`` part: wall time per NFE of the library's CLD samplers with the UNet as velocity score."""

from __future__ import annotations

import torch

from _common import markdown_table
from splitdyn_cld.samplers import sample

from .common import budgeted_median, image_shape_of, left, models_for, notes_text, write_part

__all__ = ["SAMPLER_NAMES", "part_sampling"]

#: The samplers the sampling and overhead parts measure (names of :func:`splitdyn_cld.samplers.sample`).
SAMPLER_NAMES = ("sscs", "em")


@torch.no_grad()
def part_sampling(args, deadline: float, cache: dict) -> dict:
    """Wall time per NFE of SSCS and EM through :func:`splitdyn_cld.samplers.sample` (quadratic grid, denoised).

    Parameters
    ----------
    args:
        The parsed command line.
    deadline:
        ``perf_counter`` time by which the part must be done.
    cache:
        Model cache shared with the overhead part (:func:`~gpu.common.models_for`).
    """
    device = args.device_obj
    settings, cld, score_model, net = models_for(args, cache, args.sample_config)
    shape = (args.batch, *image_shape_of(args.sample_config))
    records, rows, notes = [], [], []
    for name in SAMPLER_NAMES:
        seconds = left(deadline) / (len(SAMPLER_NAMES) - len(records))
        if seconds <= 0:
            notes.append(f"{name}: skipped, the part's time budget ran out")
            print(f"  {notes[-1]}", flush=True)
            continue
        generator = torch.Generator(device).manual_seed(args.seed)
        nfe = {}

        def run():
            nfe["n"] = sample(cld, score_model, shape, args.sample_steps, sampler=name, grid="quadratic", eps=1e-3,
                              denoise=True, generator=generator, device=device).nfe

        total, repeats = budgeted_median(run, args.repeats, device, seconds)
        record = {"sampler": name, "steps": args.sample_steps, "nfe": nfe["n"], "batch": args.batch,
                  "seconds_per_call": total, "seconds_per_nfe": total / nfe["n"],
                  "images_per_s": args.batch / total, "repeats": repeats}
        records.append(record)
        rows.append([name, args.sample_steps, nfe["n"], total * 1e3, total / nfe["n"] * 1e3, args.batch / total,
                     repeats])
        print(f"  {name}: {total / nfe['n'] * 1e3:.2f} ms/NFE ({nfe['n']} NFE, {repeats} repeats)", flush=True)
    if len(records) == 2:
        ratio = records[0]["seconds_per_nfe"] / records[1]["seconds_per_nfe"]
        notes.append(f"SSCS / EM time per NFE: {ratio:.3f}")
    table = markdown_table(["sampler", "steps", "NFE", "ms / call", "ms / NFE", "images / s", "repeats"], rows)
    text = (f"Sampling cost, `{args.sample_config}` UNet (random weights), batch {args.batch}, {args.precision} "
            "autocast for the network, `splitdyn_cld.samplers.sample` on the quadratic grid, denoising step "
            f"included.\n\n{table}\n\n" + notes_text(notes))
    print(table, flush=True)
    payload = {"settings": {"config": args.sample_config, "batch": args.batch, "precision": args.precision,
                            "steps": args.sample_steps, "grid": "quadratic",
                            "cudnn_benchmark": torch.backends.cudnn.benchmark},
               "results": records, "notes": notes}
    write_part(args, "sampling", payload, text)
    return payload
