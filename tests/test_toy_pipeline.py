"""Training utilities behave; the toy datasets are where the paper puts them (the end-to-end runs of the toy
scripts are in ``test_toy_examples.py``)."""

import math

import pytest
import torch

from splitdyn_cld.training import NonFiniteLossError, check_finite_loss, load_checkpoint, make_ema, save_checkpoint
from splitdyn_cld.toy_data import get_toy_dataset, sample_multimodal_swiss_roll


def test_ema_follows_the_warmup_rate():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = make_ema(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # first call copies
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)  # n = 1: rate min(0.999, 2/11)
    rate = 2 / 11
    assert math.isclose(ema.module.weight.item(), rate * 1.0 + (1 - rate) * 2.0, rel_tol=1e-6)


def test_checkpoints_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_non_finite_loss_stops_with_a_clear_message():
    with pytest.raises(NonFiniteLossError, match="step 7"):
        check_finite_loss(torch.tensor(float("nan")), 7)


def test_swiss_rolls_sit_at_five_places():
    x = sample_multimodal_swiss_roll(5000, torch.Generator().manual_seed(0))
    centres = torch.tensor([[0.0, 0.0], [0.8, 0.8], [0.8, -0.8], [-0.8, 0.8], [-0.8, -0.8]])
    nearest = torch.cdist(x, centres).min(1).values
    assert nearest.max() < 0.25
    with pytest.raises(ValueError, match="unknown toy dataset"):
        get_toy_dataset("moons")