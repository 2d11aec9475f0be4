"""The toy training pipeline (make demo) runs end to end at tiny settings; training utilities behave."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from splitdyn_cld.training import NonFiniteLossError, check_finite_loss, load_checkpoint, make_ema, save_checkpoint
from splitdyn_cld.toy_data import get_toy_dataset, sample_multimodal_swiss_roll

ROOT = Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_toy_train_runs_and_writes_finite_metrics(tmp_path):
    toy = load_example("toy_train")
    result = toy.main(["--steps", "30", "--eval-samples", "300", "--nll-samples", "5", "--sample-steps", "10",
                       "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["parameters"] < 100_000
    assert all(math.isfinite(r["sw2"]) for r in result["results"])
    assert all(math.isfinite(v) for v in result["likelihoods"].values())
    assert (tmp_path / "samples.png").exists() and (tmp_path / "loss.png").exists()


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


def test_score_complexity_cld_is_simpler_near_zero_and_hsm_is_less_noisy(tmp_path):
    module = load_example("toy_score_complexity")
    result = module.main(["--samples", "4000", "--times", "0.001", "0.01", "0.1", "--out", str(tmp_path)])
    for row in result["score_complexity"]:
        assert row["xi_cld"] < row["xi_vpsde"]
    for row in result["gradient_noise"]:
        assert row["hsm"] < row["dsm"]
    assert (tmp_path / "score_complexity.png").exists()
