"""Training utilities shared by the toy and image scripts: EMA, atomic checkpoints, RNG state, NaN checks."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

__all__ = ["NonFiniteLossError", "make_ema", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "check_finite_loss", "warmup_lr"]


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""


def make_ema(model: torch.nn.Module, decay: float = 0.9999, warmup: bool = True) -> AveragedModel:
    r"""Exponential moving average of ``model``'s parameters and buffers (``torch.optim.swa_utils.AveragedModel``).

    With ``warmup``, the rate after ``n`` updates is :math:`\min(\text{decay}, (1 + n) / (10 + n))`, so early
    averages are not dominated by the random initialisation.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must lie in (0, 1), got {decay}")

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        rate = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        return rate * averaged + (1.0 - rate) * current

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically: a temporary file in the same folder, fsync, then
    ``os.replace``. A crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (clear error if it is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def rng_state() -> dict:
    """Python, NumPy, torch CPU (and CUDA) RNG states, for bit-exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is NaN/inf, with what to try next."""
    if not bool(torch.isfinite(loss).all()):
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at step {step}; the last good checkpoint is kept. "
            "Try a lower learning rate, a longer warm-up, bf16 instead of fp16, or gradient clipping."
        )


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up: ``base_lr * min(1, (step + 1) / warmup_steps)``."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)
