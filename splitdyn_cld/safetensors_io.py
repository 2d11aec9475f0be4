r"""Model weights as ``.safetensors`` files (optional dependency: ``pip install "splitdyn[safetensors]"``).

Tensors only, no pickle: safe to load from an untrusted source and readable by other libraries. A training
checkpoint (:func:`~splitdyn_cld.checkpoints.save_checkpoint`) keeps the whole run; :func:`export_safetensors`
takes its model (or EMA) weights out of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoints import CheckpointError, load_checkpoint

__all__ = ["save_safetensors", "load_safetensors", "export_safetensors"]



def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:  # pragma: no cover - the optional extra is missing
        raise ImportError('safetensors is not installed: pip install "splitdyn[safetensors]"') from None
    return safetensors.torch


def save_safetensors(weights: Mapping[str, torch.Tensor] | torch.nn.Module, path,
                     metadata: Mapping[str, Any] | None = None) -> Path:
    """Write model weights (a state dict or a module's) to a ``.safetensors`` file: tensors only, no pickle.

    Parameters
    ----------
    weights:
        A mapping of names to tensors, or a :class:`torch.nn.Module` (its ``state_dict()``).
    path:
        The file to write (its folder must exist).
    metadata:
        Optional string-keyed values stored in the file's header (non-strings are written as JSON).

    Returns
    -------
    Path
        ``path``.
    """
    import json

    if isinstance(weights, torch.nn.Module):
        weights = weights.state_dict()
    if not isinstance(weights, Mapping) or not weights:
        raise TypeError(f"weights must be a non-empty state dict or a torch.nn.Module, got {type(weights).__name__}")
    tensors = {}
    for name, value in weights.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"weights must map names to tensors; entry {name!r} is a {type(value).__name__}")
        tensors[name] = value.detach().to("cpu").contiguous().clone()  # clone: no shared storage
    header = None
    if metadata is not None:
        header = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    path = Path(path)
    _safetensors_torch().save_file(tensors, str(path), metadata=header)
    return path


def load_safetensors(path, map_location="cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a ``.safetensors`` file: ``(state_dict, metadata)``; nothing is unpickled.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    CheckpointError
        If the file is not a readable safetensors file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    _safetensors_torch()  # the clear ImportError if the extra is missing
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise CheckpointError(f"{path} is not a readable safetensors file: {type(exc).__name__}: {exc}"
                              .splitlines()[0]) from None
    return tensors, metadata


def export_safetensors(checkpoint, path, *, use_ema: bool = True) -> Path:
    """Export the network weights of a training checkpoint (:func:`~splitdyn_cld.checkpoints.save_checkpoint` format) to safetensors.

    ``use_ema`` takes the averaged weights (the ``"ema"`` entry, with the averaging wrapper's ``module.`` /
    ``module.unet.`` prefix removed) instead of the raw ``"model"`` weights. The checkpoint's ``step``,
    ``net_config`` and ``settings`` go into the file's metadata (JSON), so the network can be rebuilt from the
    file alone.
    """
    state = load_checkpoint(checkpoint)
    if use_ema:
        ema = state.get("ema")
        if not isinstance(ema, Mapping):
            raise CheckpointError(f"checkpoint {checkpoint} has no EMA weights (pass use_ema=False)")
        weights: dict[str, torch.Tensor] = {}
        for prefix in ("module.unet.", "module."):
            weights = {k[len(prefix):]: v for k, v in ema.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
            if weights:
                break
        if not weights:
            weights = {k: v for k, v in ema.items() if isinstance(v, torch.Tensor)}
    else:
        model = state.get("model")
        if not isinstance(model, Mapping):
            raise CheckpointError(f"checkpoint {checkpoint} has no model weights")
        weights = dict(model)
    metadata = {key: state[key] for key in ("step", "net_config", "settings", "format") if key in state}
    return save_safetensors(weights, path, metadata)
