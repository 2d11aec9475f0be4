"""Shared pieces of the GPU benchmark: the time budget, timing, the models and the result files."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path

import torch

from _common import RESULTS, median_time, write_results
from splitdyn_cld.image_training import build_cld, build_score_model, resolve_precision, settings_for
from splitdyn_cld.nets import get_config

__all__ = ["OutOfTime", "time_limit", "Budget", "left", "synchronize", "budgeted_median", "device_name",
           "image_shape_of", "sampling_model", "models_for", "forward_flops", "result_name", "results_dir",
           "write_part", "notes_text", "wants_compiled"]


class OutOfTime(BaseException):
    """Raised by :func:`time_limit` (a ``BaseException``, so that no library ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Interrupt the block with :class:`OutOfTime` after ``seconds`` (POSIX main thread only, else no limit).

    Parameters
    ----------
    seconds:
        Wall-clock limit; ``None`` or ``math.inf`` for none.
    """
    usable = (seconds is not None and math.isfinite(seconds) and hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def handler(signum, frame):
        raise OutOfTime(f"over the time limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Budget:
    """The run's deadline and the shares of the parts still to run.

    Parameters
    ----------
    seconds:
        Total wall-clock budget of the run.
    parts:
        The parts that will run, in order.
    shares:
        Relative share of each part (a part gets its share of what is left when it starts).
    """

    def __init__(self, seconds: float, parts: list[str], shares: dict[str, float]) -> None:
        self.deadline = time.perf_counter() + float(seconds)
        self.pending = list(parts)
        self.shares = dict(shares)

    def remaining(self) -> float:
        """Seconds left in the whole run."""
        return self.deadline - time.perf_counter()

    def start_part(self, part: str) -> float:
        """Deadline (``perf_counter`` time) of ``part``: its share of what is left."""
        total = sum(self.shares[p] for p in self.pending)
        seconds = max(0.0, self.remaining()) * self.shares[part] / total
        self.pending.remove(part)
        return time.perf_counter() + seconds


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (a ``perf_counter`` time)."""
    return deadline - time.perf_counter()


def synchronize(device: torch.device) -> None:
    """Wait for the device (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def budgeted_median(fn, repeats: int, device: torch.device, seconds: float) -> tuple[float, int]:
    """Median time of ``fn`` after one timed warm-up run, with as many of ``repeats`` runs as fit in ``seconds``
    (all of them when ``seconds`` is ``math.inf``: no time budget, the count does not depend on the machine).

    Returns
    -------
    (median seconds, number of timed runs)
    """
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    first = time.perf_counter() - start
    if math.isfinite(seconds):
        n = max(1, min(int(repeats), int(max(seconds - first, 0.0) / max(first, 1e-9))))
    else:
        n = max(1, int(repeats))
    return median_time(fn, n, device, warmup=0), n


def device_name(device: torch.device) -> str:
    """``torch.cuda.get_device_name()`` on CUDA, else ``"cpu"``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def image_shape_of(config: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images of a network configuration."""
    net_config = get_config(config)
    return int(net_config.image_channels), int(net_config.image_size), int(net_config.image_size)


def sampling_model(config: str, device: torch.device, precision: str, seed: int = 0):
    """A randomly initialised velocity score model in eval mode, as ``generate_images`` receives a trained one.

    Returns
    -------
    (settings, cld, score_model, net)
        ``score_model`` is the :class:`~splitdyn_cld.score.MixedScore` (the velocity score), ``net`` its
        :class:`~splitdyn_cld.image_training.UNetVelocityNet` (autocast inside).
    """
    settings = settings_for(config, precision=precision, device=str(device))
    _, autocast_dtype = resolve_precision(settings.precision, device)
    cld = build_cld(settings)
    torch.manual_seed(seed)
    score_model, net = build_score_model(get_config(config), cld, settings.mixed, autocast_dtype)
    net.to(device).eval()
    return settings, cld, score_model.eval(), net


def models_for(args, cache: dict, config: str):
    """:func:`sampling_model` for ``config`` at the run's precision, kept in ``cache`` (one model at a time)."""
    key = (config, args.precision)
    if key not in cache:
        cache.clear()  # one big eval model at a time
        if args.device_obj.type == "cuda":
            torch.cuda.empty_cache()
        cache[key] = sampling_model(config, args.device_obj, args.precision, args.seed)
    return cache[key]


def forward_flops(config: str, batch: int, device: torch.device) -> tuple[int, str]:
    """FLOPs of one UNet forward pass on ``batch`` images (a multiply-add counts 2), and where they were counted.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (no memory, no compute);
    if the network cannot run there, with a real fp32 forward pass on ``device``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from splitdyn_cld.nets import ScoreUNet

    c, h, w = image_shape_of(config)
    for where in ("meta", device.type):
        try:
            with torch.device(where if where == "meta" else device):
                net = ScoreUNet(get_config(config))
                x = torch.zeros(batch, 2 * c, h, w)
                t = torch.full((batch,), 0.5)
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                net(x, t)
            return int(counter.get_total_flops()), where
        except Exception:  # noqa: BLE001 - fall back to counting on the real device
            if where != "meta":
                raise
    raise AssertionError("unreachable")


def result_name(args, part: str) -> str:
    """``gpu_<part>_<device type>`` (``_quick`` appended in ``--quick`` mode)."""
    return f"gpu_{part}_{args.device_obj.type}{'_quick' if args.quick else ''}"


def results_dir(args) -> Path:
    """The results folder of the run (``--out``, default ``benchmarks/results``)."""
    return Path(args.out) if args.out else RESULTS


def write_part(args, part: str, payload: dict, markdown: str) -> None:
    """Write a part's ``.json`` and ``.md`` with the device name and the command line."""
    payload = {"device_name": device_name(args.device_obj), "command": args.command, **payload}
    write_results(result_name(args, part), payload, f"Command: `{args.command}`\n\n{markdown}", results_dir(args))


def notes_text(notes: list[str]) -> str:
    """The notes as a markdown bullet list."""
    return "\n".join(f"- {x}" for x in notes)


def wants_compiled(args) -> tuple[bool, str | None]:
    """Whether the run measures ``torch.compile`` variants, and the note when ``--quick`` on the CPU skips them."""
    if "compiled" not in args.variants:
        return False, None
    if args.device_obj.type == "cpu" and args.quick and not args.variants_given:
        return False, "torch.compile skipped in --quick on the CPU (pass --variants eager compiled to force it)"
    return True, None
