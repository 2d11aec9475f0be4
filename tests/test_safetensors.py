"""Model weights to and from safetensors (:mod:`splitdyn_cld.safetensors_io`): round trips, no pickle, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("safetensors")

from splitdyn_cld.checkpoints import CheckpointError, save_checkpoint
from splitdyn_cld.safetensors_io import export_safetensors, load_safetensors, save_safetensors


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def test_round_trip_of_a_module_with_metadata(tmp_path):
    net = small_net()
    path = save_safetensors(net, tmp_path / "net.safetensors", metadata={"step": 7, "name": "toy"})
    weights, metadata = load_safetensors(path)
    assert set(weights) == set(net.state_dict())
    for name, value in net.state_dict().items():
        assert torch.equal(weights[name], value)
    assert metadata == {"step": "7", "name": "toy"} and json.loads(metadata["step"]) == 7
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    fresh.load_state_dict(weights)
    x = torch.randn(5, 3)
    assert torch.equal(fresh(x), net(x))
    # the file holds no pickle: it is a JSON header and raw bytes
    raw = path.read_bytes()
    header = json.loads(raw[8: 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["name"] == "toy"


def test_export_from_a_training_checkpoint_takes_the_ema_weights(tmp_path):
    net = small_net()
    ema = {f"module.unet.{k}": v + 1.0 for k, v in net.state_dict().items()}
    ema["n_averaged"] = torch.tensor(3)
    save_checkpoint(tmp_path / "checkpoint.pt", {"step": 5, "model": net.state_dict(), "ema": ema,
                                                 "net_config": {"width": 4}})
    weights, metadata = load_safetensors(export_safetensors(tmp_path / "checkpoint.pt", tmp_path / "ema.safetensors"))
    assert set(weights) == set(net.state_dict())
    assert torch.equal(weights["0.weight"], net.state_dict()["0.weight"] + 1.0)
    assert json.loads(metadata["net_config"]) == {"width": 4} and metadata["step"] == "5"
    raw, _ = load_safetensors(export_safetensors(tmp_path / "checkpoint.pt", tmp_path / "raw.safetensors",
                                                 use_ema=False))
    assert torch.equal(raw["2.bias"], net.state_dict()["2.bias"])


def test_bad_input_is_named(tmp_path):
    with pytest.raises(TypeError, match="weights"):
        save_safetensors({"a": [1.0]}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="weights"):
        save_safetensors({}, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_safetensors(tmp_path / "junk.safetensors")
    save_checkpoint(tmp_path / "noema.pt", {"step": 1, "model": small_net().state_dict()})
    with pytest.raises(CheckpointError, match="EMA"):
        export_safetensors(tmp_path / "noema.pt", tmp_path / "y.safetensors")
