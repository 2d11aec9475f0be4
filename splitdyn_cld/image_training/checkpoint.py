"""Checkpoints of image training runs: what a resumed run checks before it continues (format, checksum, the
settings that define the run), restoring the state into the model and optimiser, cleaning up after a kill
during a write, and rebuilding a trained model for sampling (:func:`load_trained_model`).

The files themselves are written and verified by :mod:`splitdyn_cld.checkpoints` (atomic, SHA-256 checked).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import (CheckpointError, check_run_settings, load_checkpoint, remove_stale_temporaries,
                           run_folder_lock)
from ..process import CLD
from ..score import MixedScore
from .model import UNetVelocityNet, build_cld, image_shape_of, resolve_precision
from .settings import RUN_DEFINING_SETTINGS, TrainSettings

__all__ = ["CHECKPOINT_NAME", "CHECKPOINT_FORMAT", "run_settings", "read_training_checkpoint", "load_state_into",
           "remove_checkpoint_temporaries", "training_folder_lock", "TrainedModel", "load_trained_model"]

#: File name of the (atomically written) training checkpoint inside the run directory.
CHECKPOINT_NAME = "checkpoint.pt"
#: The ``"format"`` entry of every checkpoint written by :func:`splitdyn_cld.image_training.train`.
CHECKPOINT_FORMAT = "splitdyn_cld.image_training/1"


def run_settings(settings: TrainSettings, net_config) -> dict[str, Any]:
    """The settings that define a run (:data:`~splitdyn_cld.image_training.settings.RUN_DEFINING_SETTINGS`)
    and the network configuration, as a dict to store in and compare with a checkpoint."""
    values = {name: getattr(settings, name) for name in RUN_DEFINING_SETTINGS}
    values["net_config"] = dataclasses.asdict(net_config)
    return values


def _saved_run_settings(state: dict) -> dict[str, Any]:
    saved = {name: state["settings"].get(name) for name in RUN_DEFINING_SETTINGS if name in state["settings"]}
    saved["net_config"] = state.get("net_config")
    return saved


def read_training_checkpoint(path: str | os.PathLike, settings: TrainSettings, net_config) -> tuple[dict, list[str]]:
    """Load the checkpoint at ``path`` to resume a run with ``settings``.

    Returns the state and the list of settings differences accepted with ``settings.override_settings``.

    Raises
    ------
    splitdyn_cld.checkpoints.CheckpointError
        If the file is corrupt (checksum), not a checkpoint of :func:`~splitdyn_cld.image_training.loop.train`.
    splitdyn_cld.checkpoints.SettingsMismatchError
        If settings that define the run differ and ``settings.override_settings`` is off; the message lists them.
    """
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu")  # RNG states must stay on the CPU
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("settings"), dict):
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of splitdyn_cld.image_training.train "
                              f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    differences = check_run_settings(path, _saved_run_settings(state), run_settings(settings, net_config),
                                     (*RUN_DEFINING_SETTINGS, "net_config"), override=settings.override_settings)
    return state, differences


def load_state_into(path: str | os.PathLike, what: str, target: Any, state_dict: Any) -> None:
    """``target.load_state_dict(state_dict)``, or a :class:`~splitdyn_cld.checkpoints.CheckpointError` naming
    the checkpoint ``path`` and ``what`` did not fit (e.g. a checkpoint of another network configuration)."""
    try:
        target.load_state_dict(state_dict)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:2] or [type(exc).__name__]
        detail = " ".join(lines)
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise CheckpointError(f"checkpoint {path}: cannot load the saved {what} into this run's model, which has "
                              f"another configuration ({detail})") from None


def remove_checkpoint_temporaries(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a kill during a checkpoint write left in the run folder ``out``
    (``.checkpoint*.pt.*.tmp``); returns them."""
    return remove_stale_temporaries(out, ("checkpoint*.pt",))


def training_folder_lock(out: str | os.PathLike):
    """The run-folder lock (:func:`splitdyn_cld.checkpoints.run_folder_lock`) of ``out`` for the process that
    writes there: rank 0 (``RANK`` unset or 0); a context manager that does nothing on the other ranks of a
    ``torchrun`` launch. A second training on the same folder gets a
    :class:`~splitdyn_cld.checkpoints.RunFolderInUseError`."""
    from contextlib import nullcontext

    from .distributed import env_int

    return run_folder_lock(out, "training run") if env_int("RANK", 0) == 0 else nullcontext()


@dataclass
class TrainedModel:
    """A model loaded from a training checkpoint (see :func:`load_trained_model`)."""

    score: MixedScore
    cld: CLD
    settings: TrainSettings
    image_shape: tuple[int, int, int]
    step: int


def load_trained_model(path: str | os.PathLike, *, use_ema: bool = True, device: torch.device | str = "cpu",
                       precision: str = "fp32") -> TrainedModel:
    """Rebuild the velocity score model of a checkpoint written by :func:`~splitdyn_cld.image_training.loop.train`
    (EMA weights by default); ``path`` is the file or the run folder holding ``checkpoint.pt``.

    Raises
    ------
    FileNotFoundError
        If there is no checkpoint at ``path``.
    splitdyn_cld.checkpoints.CheckpointError
        If the file is corrupt or not an image training checkpoint (the message names the file).
    """
    from ..nets import ScoreUNet, UNetConfig

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train one with examples/train_images.py)")
    device = torch.device(device)
    state = load_checkpoint(path, map_location="cpu")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} was not written by splitdyn_cld.image_training.train "
                              f"(format {state.get('format')!r})")
    try:
        names = {f.name for f in dataclasses.fields(TrainSettings)}
        settings = TrainSettings(**{k: v for k, v in state["settings"].items() if k in names})
        net_config = UNetConfig(**state["net_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable settings: {exc}") from None
    _, autocast_dtype = resolve_precision(precision, device)
    cld = build_cld(settings)
    net = UNetVelocityNet(ScoreUNet(net_config), autocast_dtype)
    if use_ema:
        prefix = "module.unet."
        ema_state = {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}
        load_state_into(path, "EMA weights", net.unet, ema_state)
    else:
        load_state_into(path, "weights", net.unet, state["model"])
    net.to(device).eval()
    score = MixedScore(net, cld, mixed=settings.mixed, kind=settings.objective).eval()
    return TrainedModel(score, cld, settings, image_shape_of(net_config),
                        int(state["step"]))
