r"""Training utilities shared by the toy and the image training scripts.

* :func:`make_ema` -- an exponential moving average of the weights with the warm-up rate
  :math:`\min(\text{decay}, (1 + n) / (10 + n))` (App. E.2: EMA 0.9999 for the image models, 0.999 for toys);
* atomic, checksummed checkpoints are in :mod:`splitdyn_cld.checkpoints` (``save_checkpoint`` and
  ``load_checkpoint`` are also importable from here);
* :func:`rng_state` / :func:`set_rng_state` -- every random number generator a training step touches, so that a
  resumed run is bit-for-bit the uninterrupted one;
* :func:`check_finite_loss` -- stop with a clear :class:`NonFiniteLossError` on NaN/inf losses;
* :func:`warmup_lr` -- linear learning-rate warm-up;
* :class:`CSVLogger` -- a line-buffered CSV log of training metrics that survives resumption.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoints import load_checkpoint, save_checkpoint  # noqa: F401 - re-exported for compatibility

__all__ = [
    "NonFiniteLossError",
    "NonFiniteDataError",
    "check_finite_batch",
    "make_ema",
    "ema_rate",
    "ExponentialMovingAverage",
    "rng_state",
    "set_rng_state",
    "check_finite_loss",
    "warmup_lr",
    "CSVLogger",
]


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite (see :func:`check_finite_loss`)."""


class NonFiniteDataError(NonFiniteLossError):
    """Raised when a training batch holds NaN or infinite values (see :func:`check_finite_batch`); a
    :class:`NonFiniteLossError`, so the training loops stop on it the same way."""


def _check_decay(decay: float) -> float:
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise TypeError(f"decay must be a float, got {type(decay).__name__}")
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must lie in (0, 1), got {decay}")
    return float(decay)


def ema_rate(num_averaged: int, decay: float, warmup: bool = True) -> float:
    r"""The EMA rate used for the update after ``num_averaged`` earlier updates:
    :math:`\min(\text{decay}, (1 + n) / (10 + n))` with warm-up, else ``decay``.

    The new average is ``rate * average + (1 - rate) * current``; see :func:`make_ema`.
    """
    decay = _check_decay(decay)
    if not warmup:
        return decay
    n = float(num_averaged)
    return min(decay, (1.0 + n) / (10.0 + n))


class ExponentialMovingAverage(AveragedModel):
    r"""An :class:`~torch.optim.swa_utils.AveragedModel` (``use_buffers=True``) whose update is one multi-tensor
    lerp per device and dtype at the rate :func:`ema_rate`, without walking the modules at every step.

    The pairs (averaged tensor, model tensor) are collected on the first update with a given model and kept:
    each later update is :func:`torch.optim.swa_utils.get_ema_multi_avg_fn` of the rate (the public
    multi-tensor EMA of torch) on the kept lists, and the update count is also kept on the host, so an update
    reads nothing back from the device. Its ``state_dict`` is the ``AveragedModel``'s (``n_averaged`` and
    ``module.*``): checkpoints of either load into the other.

    The model's parameters must stay the same objects between updates (what optimisers and
    ``load_state_dict`` do; ``model.to(...)`` keeps the parameter objects but replaces the buffers): after
    replacing or moving the model's tensors call :meth:`refresh`. Moving the average itself (``ema.to``) and
    ``ema.load_state_dict`` refresh it automatically. Build it with :func:`make_ema`.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        super().__init__(model, use_buffers=True)
        self.decay = _check_decay(decay)
        self.warmup = bool(warmup)
        self._pairs = None
        self._count: int | None = None

    def refresh(self) -> None:
        """Forget the kept tensor lists and the host update count (they are collected again at the next update)."""
        self._pairs = None
        self._count = None

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_pairs"] = None  # tensor lists (and the model) are not part of the average's state
        return state

    def _apply(self, fn, *args, **kwargs):
        self.refresh()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``AveragedModel.load_state_dict``, then :meth:`refresh` (the update count is read again)."""
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.refresh()
        return out

    def _collect(self, model: torch.nn.Module):
        if self._pairs is not None and self._pairs[0] == id(model):
            return self._pairs[1], self._pairs[2]
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        if len(averaged) != len(current) or any(a.shape != c.shape for a, c in zip(averaged, current)):
            raise ValueError("model must have the parameters and buffers of the averaged module (same order and "
                             "shapes)")
        groups: dict = {}
        others = []
        for a, c in zip(averaged, current):
            if a.is_floating_point() and a.device == c.device and a.dtype == c.dtype:
                lists = groups.setdefault((a.device, a.dtype), ([], []))
                lists[0].append(a)
                lists[1].append(c)
            else:  # integer buffers (BatchNorm's num_batches_tracked) or tensors on another device/dtype
                others.append((a, c))
        self._pairs = (id(model), list(groups.values()), others)
        return self._pairs[1], self._pairs[2]

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        r"""Average ``model``'s parameters and buffers in: copy them on the first update, then
        :math:`\bar\theta \leftarrow r_n\bar\theta + (1 - r_n)\theta` with :math:`r_n` = :func:`ema_rate`."""
        groups, others = self._collect(model)
        if self._count is None:
            self._count = int(self.n_averaged)  # once after construction or loading
        if self._count == 0:
            for averaged, current in groups:
                for a, c in zip(averaged, current):
                    a.copy_(c)
            for a, c in others:
                a.copy_(c.to(device=a.device, dtype=a.dtype))
        else:
            rate = ema_rate(self._count, self.decay, self.warmup)
            lerp = get_ema_multi_avg_fn(rate)
            for averaged, current in groups:
                lerp(averaged, current, self.n_averaged)
            for a, c in others:
                c = c.to(device=a.device, dtype=a.dtype)
                if a.is_floating_point():
                    a.lerp_(c, 1.0 - rate)
                else:  # integer buffers follow the model
                    a.copy_(c)
        self.n_averaged += 1
        self._count += 1


def make_ema(model: torch.nn.Module, decay: float = 0.9999, warmup: bool = True) -> AveragedModel:
    r"""Exponential moving average of ``model``'s parameters and buffers.

    Returns an :class:`ExponentialMovingAverage`, a :class:`torch.optim.swa_utils.AveragedModel`
    (``use_buffers=True``); call
    ``ema.update_parameters(model)`` after each optimiser step and evaluate ``ema.module``. Its
    ``state_dict()`` holds the averaged weights and the update count ``n_averaged`` (checkpoint it).

    The first update copies the model's weights; the update after :math:`n \ge 1` earlier ones is

    .. math::

        \bar\theta \leftarrow r_n\,\bar\theta + (1 - r_n)\,\theta,\qquad
        r_n = \min\Big(\text{decay}, \frac{1 + n}{10 + n}\Big)

    with ``warmup`` (so the average forgets the random initialisation quickly), else :math:`r_n = \text{decay}`.

    Parameters
    ----------
    model:
        The trained module.
    decay:
        The EMA rate in :math:`(0, 1)` (the paper: 0.9999 for images, 0.999 for toy data).
    warmup:
        Use the warm-up rate :math:`\min(\text{decay}, (1 + n)/(10 + n))`.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return ExponentialMovingAverage(model, _check_decay(decay), warmup)


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict:
    """Capture the random number generators a training step can touch, for a bit-exact resume.

    Parameters
    ----------
    generators:
        Named explicit generators (e.g. ``{"data": g}``) to capture as well.

    Returns
    -------
    dict
        Python's ``random``, NumPy's global RNG, torch's CPU RNG, every CUDA device's RNG (if CUDA is
        available) and the given generators; restore with :func:`set_rng_state`.
    """
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generators:
        state["generators"] = {name: g.get_state() for name, g in generators.items()}
    return state


def set_rng_state(state: dict, generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured (including the named ``generators``, in place)."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= state.keys():
        raise ValueError("state must be a dict returned by rng_state()")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, g in (generators or {}).items():
        if name not in state.get("generators", {}):
            raise KeyError(f"the saved RNG state has no generator {name!r}")
        g.set_state(state["generators"][name].cpu())


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` has a NaN or infinite entry.

    Call it before ``backward()``/``optimizer.step()`` so the parameters are never touched by a bad step.
    (On a GPU this synchronises with the host; check every few steps if that matters.)
    """
    loss = torch.as_tensor(loss)
    if not bool(torch.isfinite(loss).all()):
        value = loss.detach().float().cpu()
        shown = value.item() if value.numel() == 1 else value.tolist()
        raise NonFiniteLossError(
            f"the training loss is {shown} at step {step}: training stopped before the parameters were updated. "
            "Try a lower learning rate or a longer learning-rate warm-up, bf16 instead of fp16 autocast (or fp32), "
            "and gradient clipping; then resume from the last checkpoint."
        )


def check_finite_batch(batch: torch.Tensor, step: int, what: str = "the training batch") -> None:
    """Raise :class:`NonFiniteDataError` if ``batch`` holds a NaN or infinite value, naming the step and the
    number of bad values (one host synchronisation on a GPU)."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch must be a torch.Tensor, got {type(batch).__name__}")
    if batch.is_floating_point():
        bad = int((~torch.isfinite(batch)).sum())
        if bad:
            raise NonFiniteDataError(
                f"{what} at step {step} holds {bad} non-finite value(s) (NaN or inf): training stopped before the "
                "parameters were updated. Check the data files (a corrupt or wrongly scaled image?).")


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up: ``base_lr * min(1, (step + 1) / warmup_steps)`` (``base_lr`` if ``warmup_steps <= 0``)."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


class CSVLogger:
    """Append rows of metrics to a CSV file, one line per call, flushed immediately.

    The columns are fixed by ``fieldnames`` or by the first row's keys. With ``resume_step``, an existing
    file is kept up to (and including) the rows whose ``step`` is at most ``resume_step`` -- rows written after
    the checkpoint a run resumes from are dropped, so the log matches the uninterrupted run. Without it, an
    existing file is overwritten.

    Parameters
    ----------
    path:
        The CSV file (its folder is created if needed).
    fieldnames:
        Column names; default the keys of the first logged row.
    resume_step:
        Resume an existing log at this step (see above).

    Examples
    --------
    >>> import tempfile, os
    >>> from splitdyn_cld.training import CSVLogger
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> with CSVLogger(path) as log:
    ...     log.log(step=0, loss=1.5)
    ...     log.log(step=1, loss=0.5)
    >>> open(path).read().splitlines()
    ['step,loss', '0,1.5', '1,0.5']
    """

    def __init__(self, path, fieldnames=None, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fieldnames = list(fieldnames) if fieldnames is not None else None
        kept: list[dict] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                if self.fieldnames is None and reader.fieldnames:
                    self.fieldnames = list(reader.fieldnames)
                for row in reader:
                    try:
                        step = float(row.get("step", "nan"))
                    except ValueError:
                        step = math.nan
                    if not step > resume_step:  # keep rows at or before the checkpoint (and rows without a step)
                        kept.append(row)
        self._file = open(self.path, "w", newline="")
        self._writer = None
        if self.fieldnames is not None:
            self._start(self.fieldnames)
            for row in kept:
                self._writer.writerow(row)
            self._file.flush()

    def _start(self, fieldnames) -> None:
        self.fieldnames = list(fieldnames)
        self._writer = csv.DictWriter(self._file, fieldnames=self.fieldnames)
        self._writer.writeheader()

    def log(self, row: Mapping | None = None, **values) -> None:
        """Write one row (a mapping and/or keyword values); tensors are converted with ``.item()``."""
        merged = dict(row or {}, **values)
        if self._file.closed:
            raise ValueError(f"the CSV log {self.path} is closed")
        if self._writer is None:
            self._start(merged)
        unknown = set(merged) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)} for the CSV log {self.path} with columns {self.fieldnames}")
        self._writer.writerow({k: v.item() if isinstance(v, torch.Tensor) else v for k, v in merged.items()})
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> CSVLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
