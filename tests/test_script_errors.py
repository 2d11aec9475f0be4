"""The scripts in ``examples/`` answer bad arguments and missing or corrupt files with one line on stderr and
exit status 2, never a traceback; ``train_images.py --help`` shows the preset defaults."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _scripts import load_example

ROOT = Path(__file__).resolve().parents[1]


def exit_status(script: str, argv: list[str]) -> int:
    try:
        return load_example(script).main(argv)
    except SystemExit as exc:
        return exc.code


BAD_ARGUMENTS = [
    ("train_images", ["--log-every", "0"], "--log-every"),
    ("train_images", ["--grad-clip", "-1"], "--grad-clip"),
    ("train_images", ["--steps", "0"], "--steps"),
    ("train_images", ["--batch-size", "0"], "--batch-size"),
    ("train_images", ["--lr", "nan"], "--lr"),
    ("train_images", ["--ema-decay", "1"], "--ema-decay"),
    ("train_images", ["--dropout", "1.5"], "--dropout"),
    ("sample_images", ["--checkpoint", "x", "--batch-size", "0"], "--batch-size"),
    ("sample_images", ["--checkpoint", "x", "--steps", "0"], "--steps"),
    ("sample_images", ["--checkpoint", "x", "--threads", "0"], "--threads"),
    ("evaluate_images", ["--checkpoint", "x", "--nfe", "1"], "--nfe"),
    ("evaluate_images", ["--checkpoint", "x", "--num-samples", "0"], "--num-samples"),
    ("toy_train", ["--steps", "0"], "--steps"),
    ("toy_train", ["--batch-size", "0"], "--batch-size"),
    ("toy_train", ["--checkpoint-every", "-1"], "--checkpoint-every"),
    ("toy_train", ["--sample-steps", "1"], "--sample-steps"),
    ("toy_score_complexity", ["--samples", "0"], "--samples"),
    ("toy_analytic_sampling", ["--samples", "0"], "--samples"),
    ("toy_analytic_sampling", ["--steps", "abc"], "--steps"),
    ("train_digits_classifier", ["--batch-size", "0"], "--batch-size"),
    ("train_digits_classifier", ["--epochs", "0"], "--epochs"),
]


@pytest.mark.parametrize("script, argv, flag", BAD_ARGUMENTS, ids=[f"{s} {' '.join(a)}" for s, a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_exits_2_with_one_line_naming_it(script, argv, flag, capsys):
    assert exit_status(script, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "error" in err[0], err


MISSING_FILES = [
    ("sample_images", ["--checkpoint", "{tmp}/nowhere", "--device", "cpu"], "nowhere"),
    ("evaluate_images", ["--checkpoint", "{tmp}/nowhere", "--device", "cpu"], "nowhere"),
    ("evaluate_images", ["--checkpoint", "{tmp}/nowhere", "--samples", "{tmp}/none.npz"], "none.npz"),
    ("toy_score_complexity", ["--network", "{tmp}/cld.pt"], "cld.pt"),
    ("train_images", ["--config", "cifar10", "--data-root", "{tmp}/nodata", "--device", "cpu", "--no-progress",
                      "--out", "{tmp}/out"], "nodata"),
]


@pytest.mark.parametrize("script, argv, name", MISSING_FILES, ids=[f"{s} {n}" for s, _, n in MISSING_FILES])
def test_a_missing_file_exits_2_with_one_line_naming_it(script, argv, name, tmp_path, capsys, monkeypatch):
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    assert exit_status(script, [a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0], err


def test_a_corrupt_checkpoint_given_to_the_scripts_exits_2_naming_it(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage" * 50)
    assert exit_status("sample_images", ["--checkpoint", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt" in err[0] and "not a checkpoint" in err[0]


def test_a_script_run_as_a_process_prints_no_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "sample_images.py"), "--checkpoint",
                           str(tmp_path / "nowhere"), "--device", "cpu"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert "checkpoint not found" in proc.stderr


def test_train_images_help_shows_the_preset_defaults_and_the_output_folder_the_settings_use(capsys):
    cli = load_example("train_images")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cifar10 800000" in text and "digits 1500" in text  # --steps per preset
    assert "celebahq256 64" in text and "cifar10 128" in text  # --batch-size per preset
    assert "default outputs/<config>" in text
    settings = cli.settings_from_args(["--config", "tiny"])
    assert settings.out == "outputs/tiny" and settings.steps == 10


def test_sample_images_summary_has_an_int_nfe_and_threads_are_restored(tmp_path, monkeypatch):
    import torch

    from splitdyn_cld.image_training import settings_for, train

    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    train(settings_for("tiny", out=str(tmp_path / "run"), steps=1, progress=False, tensorboard=False, device="cpu",
                       sample_every=0))
    threads = torch.get_num_threads()
    assert exit_status("sample_images", ["--checkpoint", str(tmp_path / "run"), "--sampler", "sscs", "--steps", "2",
                                         "--num-samples", "3", "--batch-size", "2", "--threads", "1",
                                         "--out", str(tmp_path / "s"), "--device", "cpu", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["nfe"] == 3 and isinstance(summary["nfe"], int)
    assert torch.get_num_threads() == threads
