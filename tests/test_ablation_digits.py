"""The digits ablation script (Table 7, Fig. 17, Figs. 18/19 on digits) runs small and writes well-formed outputs."""

import json
import math

import pytest
import torch

from _scripts import load_example
from splitdyn_cld.evaluation import DigitsClassifier, save_digits_classifier


# slow (8 s): trains the digits score model for a few steps, then samples and measures every ablation
@pytest.mark.slow
def test_digits_ablation_quick_run_writes_finite_results_and_both_figures(tmp_path, monkeypatch):
    from splitdyn_cld.image_training import settings_for, train

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    train(settings_for("tiny", out=str(tmp_path / "run"), steps=1, progress=False, tensorboard=False, device="cpu"))
    torch.manual_seed(0)
    save_digits_classifier(tmp_path / "clf.pt", DigitsClassifier(width=8))
    script = load_example("ablation_digits")
    payload = script.main(["--checkpoint", str(tmp_path / "run"), "--classifier", str(tmp_path / "clf.pt"),
                           "--quick", "--out", str(tmp_path / "out")])
    rows = payload["rows"]
    settings = [r["setting"] for r in rows]
    assert settings[:4] == ["SSCS uniform, denoising", "SSCS uniform, no denoising", "SSCS quadratic, denoising",
                            "SSCS quadratic, no denoising"]
    # with denoising: n - 1 steps + 1 evaluation; without: n steps -- the same NFE either way
    assert all(r["nfe"] == 3 for r in rows[:4])
    assert all(math.isfinite(r["digits_fd"]) and r["digits_fd"] >= 0 and r["finite"] for r in rows)
    assert any("to t = 1e-5" in s for s in settings)
    saved = json.loads((tmp_path / "out" / "digits_ablations.json").read_text())
    assert len(saved["paths"]["saved_forward_times"]) == 3
    for name in ("digits_ablations.png", "digits_paths.png", "digits_ablations.md"):
        assert (tmp_path / "out" / name).stat().st_size > 100
