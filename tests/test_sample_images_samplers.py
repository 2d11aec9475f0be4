"""examples/sample_images.py with the named few-step samplers, grids and a saved grid file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitdyn.grids import GivenGrid, PowerGrid
from splitdyn_cld.image_training import settings_for, train

from _scripts import load_example


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_named_sampler_grid_and_grid_file(tmp_path):
    train(settings_for("tiny", out=str(tmp_path / "run"), progress=False, tensorboard=False, device="cpu",
                       sample_every=0, steps=1, ckpt_every=1))
    cli = load_example("sample_images")
    assert "ei-ode-3" in cli.GRID_SAMPLERS and "sscs" in cli.GRID_SAMPLERS and "torchsde-euler" not in cli.GRID_SAMPLERS
    common = ["--checkpoint", str(tmp_path / "run"), "--num-samples", "3", "--batch-size", "4", "--device", "cpu",
              "--no-progress"]
    out = tmp_path / "ei"
    assert cli.main(common + ["--sampler", "ei-ode-3", "--steps", "3", "--grid", "power-4", "--out", str(out)]) == 0
    with np.load(out / "samples.npz") as f:
        assert len(f["images"]) == 3 and float(f["nfe"]) == 3  # score-free final update: NFE = steps
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps(GivenGrid(PowerGrid(4, 3.0, 1e-3).reverse_times(1.0)).to_dict()))
    out = tmp_path / "file"
    assert cli.main(common + ["--sampler", "sscs", "--grid-file", str(grid_file), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nfe"] == 5 and summary["final"] == "denoise" and summary["steps"] == 4  # 4 steps + denoising
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(common + ["--grid", "power-x"])
