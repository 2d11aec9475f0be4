"""Shared helpers for the benchmark scripts: machine description, timing, and result writing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import math

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """A one-line description of the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def median_time(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (after ``warmup`` runs), synchronising CUDA."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_results(name: str, payload: dict, markdown: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``name.json`` and ``name.md`` (with the machine line) into the results folder."""
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2))
    md_path.write_text(f"Machine: {payload['machine']}\n\n{markdown}\n")
    return json_path, md_path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)) of at least two values."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"a standard error needs at least 2 values, got {len(values)}")
    return statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5


def verdict_at_most(mean: float, se: float, limit: float) -> str:
    """The protocol's verdict on "value <= limit": met only when mean + 2 s.e. <= limit, missed when
    mean - 2 s.e. > limit, otherwise not resolved at this sample size."""
    if mean + 2 * se <= limit:
        return "met"
    if mean - 2 * se > limit:
        return "missed"
    return "not resolved at this sample size"


def verdict_not_worse(difference: float, se: float) -> str:
    """Verdict on "ours at least as good as the peer" from the paired difference ours - peer (lower is better):
    met when better by 2 s.e. or tied within 2 s.e., missed when worse by more than 2 s.e."""
    if difference + 2 * se <= 0:
        return "met (better)"
    if abs(difference) <= 2 * se:
        return "met (tie within 2 s.e.)"
    return "missed"


class SlicedW2:
    """``wasserstein_sliced(x, reference, generator=seed)`` for samples of the reference's size, with the
    reference's sorted projections computed once (the same directions and the same value; tested)."""

    def __init__(self, reference: torch.Tensor, projections: int = 256, seed: int = 0):
        theta = torch.randn(reference.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.theta = theta / theta.norm(dim=0, keepdim=True)
        self.sorted = torch.sort((reference.to(torch.float64) @ self.theta).T.contiguous(), dim=1).values  # rows: fast

    def __call__(self, x: torch.Tensor) -> float:
        if x.shape[0] != self.sorted.shape[1]:
            raise ValueError("SlicedW2 needs samples of the reference's size")
        px = torch.sort((x.to(torch.float64) @ self.theta).T.contiguous(), dim=1).values
        return math.sqrt(((px - self.sorted).square().sum() / x.shape[0] / self.theta.shape[1]).item())
