"""Logging of image training runs: messages from rank 0 (:func:`main_print`, through :mod:`logging`: logger
``splitdyn_cld.image_training``, level INFO; ``examples/train_images.py`` shows them on stderr) and optional
TensorBoard scalars
(:class:`TensorBoardLogger`, which warns once when TensorBoard is not installed; the CSV log in
``train_log.csv`` is written by :class:`splitdyn_cld.training.CSVLogger` either way)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from .distributed import DistributedContext

__all__ = ["TensorBoardLogger", "main_print"]

_LOGGER = logging.getLogger("splitdyn_cld.image_training")


def main_print(ctx: DistributedContext, *args) -> None:
    """Log a message (INFO, logger ``splitdyn_cld.image_training``) on rank 0 only; the arguments are joined
    with spaces, as ``print`` would."""
    if ctx.is_main:
        _LOGGER.info(" ".join(str(a) for a in args))


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
