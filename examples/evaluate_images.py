#!/usr/bin/env python
"""Evaluate an image CLD-SGM checkpoint: sample quality at several NFE, and the NLL bound (eq. 60).

Digits (offline, no download): Fréchet distance in the features of a small digits classifier
(train it once with examples/train_digits_classifier.py), for SSCS and EM at several NFE::

    python examples/train_digits_classifier.py --out outputs/digits_classifier.pt
    python examples/evaluate_images.py --checkpoint outputs/digits --nfe 20 50 100 200 --json outputs/digits/eval.json

CIFAR-10 FID (50k samples in the paper; needs torchmetrics+torch-fidelity or clean-fid AND the Inception
weights file, nothing is downloaded) and the NLL bound in bits/dim on the test split::

    torchrun --standalone --nproc_per_node 8 examples/evaluate_images.py --checkpoint outputs/cifar10 \\
        --metric fid nll --inception-weights ~/.cache/splitdyn/weights-inception-2015-12-05-6726825d.pth \\
        --data-root data/cifar10 --samplers sscs --nfe 150 --num-samples 50000 --nll-count 10000

FID can also be computed on samples written by sample_images.py: ``--samples path/samples.npz``.
Reference statistics of the real training images are cached in --ref-stats (an .npz with mu and sigma).
Under torchrun each rank draws its share of the samples / NLL images; rank 0 prints and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import torch.distributed as dist

from splitdyn_cld.evaluation import (FeatureStatistics, check_inception_weights, extract_features, feature_statistics,
                                     frechet_distance, inception_feature_extractor, load_digits_classifier)
from splitdyn_cld.data import bits_per_dim_offset, load_uint8, to_float, to_uint8
from splitdyn_cld.cli import (ScriptParser, device_name, nonnegative_int, one_line, positive_float, positive_int,
                              user_errors)
from splitdyn_cld.image_training import (cleanup_distributed, generate_images, load_trained_model,
                                         setup_distributed, shard_sizes)

PROG = "evaluate_images.py"


def _nfe(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 (one step plus the denoising step), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt, or the training output folder holding it")
    p.add_argument("--metric", nargs="+", choices=["digits-fd", "fid", "nll"],
                   help="default: digits-fd for digits models, fid otherwise")
    p.add_argument("--samplers", nargs="+", choices=["sscs", "em"], default=["sscs", "em"])
    p.add_argument("--nfe", nargs="+", type=_nfe, default=[20, 50, 100, 200],
                   help="NFE per sample (steps = NFE - 1: the denoising step counts one)")
    p.add_argument("--grid", choices=["uniform", "quadratic"], default="quadratic")
    p.add_argument("--ode", action="store_true", help="also evaluate the probability-flow ODE (RK45)")
    p.add_argument("--rtol", type=positive_float, default=1e-5)
    p.add_argument("--atol", type=positive_float, default=1e-5)
    p.add_argument("--num-samples", type=positive_int, default=1000, help="GLOBAL samples per sampler setting")
    p.add_argument("--batch-size", type=positive_int, default=500, help="images per sampler call on each rank")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--no-ema", dest="ema", action="store_false")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:i (default: cuda if available)")
    p.add_argument("--dataset", help="data for references / NLL (default: the checkpoint's)")
    p.add_argument("--data-root", help="data folder (default: the checkpoint's)")
    g = p.add_argument_group("digits Fréchet distance")
    g.add_argument("--classifier", default="outputs/digits_classifier.pt",
                   help="digits classifier from examples/train_digits_classifier.py")
    g = p.add_argument_group("FID")
    g.add_argument("--inception-weights", help="Inception-v3 weights file (required for --metric fid)")
    g.add_argument("--fid-backend", choices=["auto", "torchmetrics", "clean-fid"], default="auto")
    g.add_argument("--ref-stats", help="cache of the reference statistics (.npz; computed and saved if missing)")
    g.add_argument("--samples", help="evaluate these samples (.npz from sample_images.py) instead of sampling")
    g = p.add_argument_group("NLL bound (eq. 60)")
    g.add_argument("--nll-count", type=nonnegative_int, default=256, help="test images (GLOBAL)")
    g.add_argument("--nll-batch", type=positive_int, default=64)
    g.add_argument("--nll-rtol", type=positive_float, default=1e-5)
    g.add_argument("--nll-atol", type=positive_float, default=1e-5)
    p.add_argument("--json", help="write the results here (default <checkpoint folder>/eval.json)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def _gather(ctx, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a CPU tensor over the ranks (rank order)."""
    if not ctx.distributed:
        return tensor
    parts = [None] * ctx.world_size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def _share(ctx, total: int) -> int:
    return shard_sizes(total, ctx.world_size)[ctx.rank]


def _real_uint8(dataset_name: str, root, image_shape, train: bool) -> torch.Tensor:
    """Real images as uint8 ``(N, C, H, W)`` (the split the model was trained on, or the test split)."""
    if dataset_name == "synthetic":
        raise ValueError("the synthetic dataset has no real images to compare with; pass --dataset")
    images = load_uint8(dataset_name, root, train=train, image_size=image_shape[-1])
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"dataset {dataset_name!r} has images of shape {tuple(images.shape[1:])}, the model "
                         f"generates {tuple(image_shape)}")
    return images


def _classifier_features(classifier):
    """Features of uint8 images, or of float images in [-1, 1] quantised to 8 bits first (as real images are)."""

    def features(images: torch.Tensor) -> torch.Tensor:
        x = images if images.dtype == torch.uint8 else to_uint8(images)
        return classifier.features(to_float(x))

    return features


def _print_table(rows: list[dict], metrics: list[str]) -> None:
    columns = ["sampler", "grid", "nfe"] + [m for m in ("digits_fd", "fid") if m in metrics] + ["seconds"]
    print(" | ".join(f"{c:>10}" for c in columns))
    print("-" * (13 * len(columns)))
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            cells.append(f"{value:>10.4g}" if isinstance(value, float) else f"{str(value):>10}")
        print(" | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Fail early, before loading or sampling anything, on missing FID inputs.
    if args.metric and "fid" in args.metric:
        try:
            check_inception_weights(args.inception_weights)
        except FileNotFoundError as exc:
            print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
            return 2
    if args.samples is not None and not Path(args.samples).is_file():
        print(f"{PROG}: error: --samples {args.samples}: no such file", file=sys.stderr)
        return 2

    with user_errors(PROG):
        ctx = setup_distributed(args.device)
        try:
            return _evaluate(args, ctx)
        finally:
            cleanup_distributed(ctx)


def _evaluate(args, ctx) -> int:
    model = load_trained_model(args.checkpoint, use_ema=args.ema, device=ctx.device)
    settings = model.settings
    dataset = args.dataset or settings.dataset
    root = args.data_root or settings.data_root
    metrics = args.metric or (["digits-fd"] if dataset == "digits" else ["fid"])
    ckpt_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    results: dict = {"checkpoint": str(args.checkpoint), "step": model.step, "dataset": dataset,
                     "num_samples": args.num_samples, "world_size": ctx.world_size, "rows": []}

    extractors: dict[str, callable] = {}
    references: dict[str, FeatureStatistics] = {}
    if "digits-fd" in metrics:
        classifier = load_digits_classifier(args.classifier, map_location=ctx.device)
        extract = extractors["digits_fd"] = _classifier_features(classifier)
        train_images = _real_uint8(dataset, root, model.image_shape, True)
        references["digits_fd"] = feature_statistics(extract_features(extract, train_images, device=ctx.device))
        test_images = _real_uint8(dataset, root, model.image_shape, False)
        floor = frechet_distance(references["digits_fd"], extract_features(extract, test_images, device=ctx.device))
        results["digits_fd_real_test_vs_train"] = {"value": floor, "n_test": len(test_images),
                                                   "n_train": len(train_images)}
        results["classifier"] = {"path": args.classifier, **getattr(classifier, "metadata", {})}
    if "fid" in metrics:
        try:
            extractor = inception_feature_extractor(args.inception_weights, args.fid_backend, device=ctx.device)
        except (FileNotFoundError, ImportError) as exc:
            if ctx.is_main:
                print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
            return 2
        extractors["fid"] = extractor
        ref_path = Path(args.ref_stats) if args.ref_stats else ckpt_dir / f"fid_ref_{dataset}.npz"
        if ref_path.is_file():
            references["fid"] = FeatureStatistics.load(ref_path)
        else:
            real = _real_uint8(dataset, root, model.image_shape, True)
            mine = real[ctx.rank::ctx.world_size]
            features = _gather(ctx, extract_features(extractor, mine, batch_size=args.batch_size, device=ctx.device))
            references["fid"] = feature_statistics(features)
            if ctx.is_main:
                references["fid"].save(ref_path)
        results["fid_reference"] = {"path": str(ref_path), "n": references["fid"].n}

    settings_list: list[tuple[str, int | None]] = []
    if args.samples:
        settings_list.append(("file", None))
    else:
        settings_list += [(s, n) for s in args.samplers for n in args.nfe]
        if args.ode:
            settings_list.append(("ode", None))
    if extractors:
        for sampler, nfe in settings_list:
            tic = time.perf_counter()
            if sampler == "file":
                with np.load(args.samples) as f:
                    all_images = torch.from_numpy(f["images"]).permute(0, 3, 1, 2).contiguous()
                images, mean_nfe = all_images[ctx.rank::ctx.world_size], float("nan")
            else:
                generator = torch.Generator(ctx.device).manual_seed(args.seed * 65_537 + 1000 + ctx.rank)
                images, mean_nfe = generate_images(
                    model.score, model.cld, _share(ctx, args.num_samples), model.image_shape, sampler=sampler,
                    n_steps=(nfe - 1) if nfe else 0, grid=args.grid, batch_size=args.batch_size, rtol=args.rtol,
                    atol=args.atol, generator=generator, device=ctx.device, progress=args.progress and ctx.is_main)
            row = {"sampler": sampler, "grid": args.grid if sampler in ("sscs", "em") else "-",
                   "nfe": nfe if nfe else mean_nfe}
            for name, extract in extractors.items():
                features = _gather(ctx, extract_features(extract, images, batch_size=args.batch_size,
                                                         device=ctx.device))
                row[name] = frechet_distance(references[name], features)
            row["seconds"] = round(time.perf_counter() - tic, 2)
            results["rows"].append(row)
            if ctx.is_main:
                print(json.dumps(row), file=sys.stderr, flush=True)

    if "nll" in metrics:
        results["nll"] = _nll(args, ctx, model, dataset, root)

    if ctx.is_main:
        print(f"checkpoint step {model.step}" + (f", {args.num_samples} samples per setting" if results["rows"] else ""))
        if "digits_fd_real_test_vs_train" in results:
            floor = results["digits_fd_real_test_vs_train"]
            print(f"digits FD, real test images vs train images (n={floor['n_test']}): {floor['value']:.4g}")
        if results["rows"]:
            _print_table(results["rows"], [m.replace("-", "_") for m in metrics])
        if "nll" in results:
            r = results["nll"]
            print(f"NLL bound (eq. 60): {r['bits_per_dim']:.4f} +- {r['stderr']:.4f} bits/dim "
                  f"on {r['count']} test images (ODE NFE {r['nfe']:.0f})")
        out = Path(args.json) if args.json else ckpt_dir / "eval.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"wrote {out}")
    return 0


def _nll(args, ctx, model, dataset: str, root) -> dict:
    """NLL bound (eq. 60) in bits/dim on the first --nll-count test images (dequantised, 8-bit convention)."""
    from splitdyn_cld.data import dequantize, load_test_uint8
    from splitdyn_cld.likelihood import nll_bound

    c, h, w = model.image_shape
    test = load_test_uint8(dataset, root, image_size=h)[: args.nll_count]
    mine = test[ctx.rank::ctx.world_size]
    generator = torch.Generator(ctx.device).manual_seed(args.seed * 65_537 + 2000 + ctx.rank)
    bits, nfes = [], []
    batches = range(0, len(mine), args.nll_batch)
    if args.progress and ctx.is_main:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="nll", leave=False)
    for start in batches:
        x0 = dequantize(mine[start:start + args.nll_batch].to(ctx.device), generator=generator)
        result = nll_bound(model.cld, model.score, x0, rtol=args.nll_rtol, atol=args.nll_atol,
                           bits_offset=bits_per_dim_offset(256), generator=generator)
        bits.append(result.bits_per_dim.double().cpu())
        nfes.append(float(result.nfe))
    local = torch.cat(bits) if bits else torch.empty(0, dtype=torch.float64)
    values = _gather(ctx, local)
    nfe = _gather(ctx, torch.tensor(nfes, dtype=torch.float64))
    n = len(values)
    return {"bits_per_dim": float(values.mean()), "stderr": float(values.std() / math.sqrt(n)) if n > 1 else 0.0,
            "count": n, "nfe": float(nfe.mean()) if len(nfe) else 0.0, "rtol": args.nll_rtol, "atol": args.nll_atol,
            "convention": "uniform dequantisation of 8-bit values, bits/dim = nats/(D ln 2) + 7, D data dims"}


if __name__ == "__main__":
    sys.exit(main())
