"""Logging of image training runs: messages from rank 0 (:func:`main_print`) and optional TensorBoard scalars
(:class:`TensorBoardLogger`, which warns once when TensorBoard is not installed; the CSV log in
``train_log.csv`` is written by :class:`splitdyn_cld.training.CSVLogger` either way)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .distributed import DistributedContext

__all__ = ["main_print", "TensorBoardLogger"]

def main_print(ctx: DistributedContext, *args) -> None:
    """``print`` to stderr on rank 0 only (flushed)."""
    if ctx.is_main:
        print(*args, file=sys.stderr, flush=True)


class TensorBoardLogger:
    """Scalars ``train/<name>`` of each logged row to a TensorBoard event folder, if TensorBoard is installed.

    Without TensorBoard a :class:`RuntimeWarning` says so once per process (the CSV log is complete) and
    :meth:`log` does nothing; pass ``enabled=False`` (``--no-tensorboard``) to skip it silently.
    """

    #: Whether the missing-TensorBoard warning has been given in this process.
    warned_missing: bool = False

    def __init__(self, path: str | Path, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not TensorBoardLogger.warned_missing:
                TensorBoardLogger.warned_missing = True
                warnings.warn("TensorBoard is not installed: logging to train_log.csv only (pip install tensorboard "
                              "for TensorBoard logs, or pass --no-tensorboard to silence this)", RuntimeWarning,
                              stacklevel=2)
            return
        self.writer = SummaryWriter(str(path))

    def log(self, row: dict[str, float], step: int) -> None:
        """Write every value of ``row`` but ``"step"`` at ``step``."""
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
