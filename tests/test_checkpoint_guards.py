"""Fault injection on checkpoints: a corrupt file is refused with a message naming it and is left untouched, a
resumed run refuses another run's settings (unless overridden), temporaries of a killed write are cleaned up,
and a NaN batch stops training with the same clear message as a NaN loss.

Tiny settings: a few seconds per test.
"""

import warnings

import pytest
import torch

from splitdyn_cld.checkpoints import (CheckpointError, SettingsMismatchError, check_run_settings, load_checkpoint,
                                      remove_stale_temporaries, save_checkpoint, settings_differences)
from splitdyn_cld.image_training import TrainSettings, generate_images, load_trained_model, settings_for, train
from splitdyn_cld.image_training import logs as logs_module
from splitdyn_cld.image_training.data_stream import BatchStream
from splitdyn_cld.training import NonFiniteDataError, NonFiniteLossError

from _scripts import load_example


def tiny(out, **overrides):
    values = dict(out=str(out), progress=False, tensorboard=False, device="cpu", sample_every=0)
    values.update(overrides)
    return settings_for("tiny", **values)


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 3, "w": torch.arange(1000, dtype=torch.float32)})
    return path


# -- the file format ---------------------------------------------------------------------------------------------
def test_a_checkpoint_round_trips_through_its_checksum(checkpoint):
    state = load_checkpoint(checkpoint)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(1000, dtype=torch.float32))


def test_a_flipped_byte_is_refused_naming_the_file_and_the_file_is_untouched(checkpoint):
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"(?s){checkpoint}.*corrupt.*SHA-256.*left untouched"):
        load_checkpoint(checkpoint)
    assert checkpoint.read_bytes() == bytes(data)


@pytest.mark.parametrize("damage, problem", [
    (lambda b: b[: len(b) // 3], "corrupt"),  # truncated payload
    (lambda b: b[:20], "truncated"),  # truncated header
    (lambda b: b"", "empty"),
    (lambda b: bytes(range(256)) * 8, "not a checkpoint"),  # random bytes
])
def test_damaged_checkpoints_name_the_file_and_the_problem(checkpoint, damage, problem):
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = checkpoint.read_bytes()
    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(info.value)
    assert checkpoint.read_bytes() == before


def test_a_plain_torch_save_file_from_before_checksums_still_loads(tmp_path):
    torch.save({"step": 5}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["step"] == 5


def test_settings_mismatch_lists_every_difference_and_the_override_accepts_them(tmp_path):
    saved, now = {"seed": 0, "mass": 0.25, "shape": (1, 2)}, {"seed": 1, "mass": 0.25, "shape": [1, 2]}
    assert settings_differences(saved, now, ["seed", "mass", "shape"]) == ["seed: checkpoint 0, now 1"]
    with pytest.raises(SettingsMismatchError, match=r"ckpt\.pt.*seed: checkpoint 0, now 1.*--override-settings"):
        check_run_settings(tmp_path / "ckpt.pt", saved, dict(now, mass=0.5), ["seed", "mass"])
    assert len(check_run_settings(tmp_path / "ckpt.pt", saved, dict(now, mass=0.5), ["seed", "mass"],
                                  override=True)) == 2


def test_remove_stale_temporaries_removes_only_this_runs_temporaries(tmp_path):
    for name in (".checkpoint.pt.abc123.tmp", ".checkpoint_0000010.pt.x.tmp", "checkpoint.pt", ".other.pt.y.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path, ("checkpoint*.pt",))
    assert sorted(p.name for p in removed) == [".checkpoint.pt.abc123.tmp", ".checkpoint_0000010.pt.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.y.tmp", "checkpoint.pt"]


# -- image training ----------------------------------------------------------------------------------------------
def test_image_resume_refuses_a_corrupt_checkpoint_and_leaves_it_untouched(tmp_path):
    train(tiny(tmp_path, steps=2, ckpt_every=2))
    path = tmp_path / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny(tmp_path, steps=4, ckpt_every=2, resume=True))
    assert path.read_bytes() == bytes(data)


def test_image_resume_with_other_run_settings_is_refused_listing_them_and_accepted_with_the_override(tmp_path):
    train(tiny(tmp_path, steps=2, ckpt_every=2))
    with pytest.raises(SettingsMismatchError) as info:
        train(tiny(tmp_path, steps=3, resume=True, seed=5, mass=0.5))
    message = str(info.value)
    assert "seed: checkpoint 0, now 5" in message and "mass: checkpoint 0.25, now 0.5" in message
    assert "steps" not in message  # the step budget may grow between runs
    result = train(tiny(tmp_path, steps=3, resume=True, seed=5, mass=0.5, override_settings=True))
    assert result.step == 3 and len(result.history) == 1


def test_image_resume_from_another_network_config_is_refused_and_does_not_fit_with_the_override(tmp_path):
    train(tiny(tmp_path, steps=1, ckpt_every=1))
    with pytest.raises(SettingsMismatchError, match=r"config: checkpoint 'tiny', now 'digits'.*net_config"):
        train(settings_for("digits", out=str(tmp_path), steps=2, resume=True, progress=False, tensorboard=False,
                           device="cpu", sample_every=0, dataset="synthetic"))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: cannot load the saved weights"):
        train(settings_for("digits", out=str(tmp_path), steps=2, resume=True, override_settings=True,
                           progress=False, tensorboard=False, device="cpu", sample_every=0, dataset="synthetic"))


def test_image_training_removes_temporaries_of_a_killed_checkpoint_write(tmp_path, caplog):
    tmp_path.mkdir(exist_ok=True)
    orphan = tmp_path / ".checkpoint.pt.k1ll3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    caplog.set_level("INFO", logger="splitdyn_cld")  # the library logs its notes (the script shows them)
    train(tiny(tmp_path, steps=1, ckpt_every=1))
    assert not orphan.exists() and (tmp_path / "checkpoint.pt").is_file()
    assert "k1ll3d" in caplog.text


def test_a_nan_batch_stops_with_the_step_and_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real_next, calls = BatchStream.__next__, [0]

    def poisoned(self):
        calls[0] += 1
        batch = real_next(self)
        return batch * float("nan") if calls[0] == 3 else batch

    monkeypatch.setattr(BatchStream, "__next__", poisoned)
    with pytest.raises(NonFiniteDataError, match=r"(?s)batch at step 3 .*non-finite.*last good checkpoint is .*"
                                                 r"checkpoint\.pt"):
        train(tiny(tmp_path, steps=4, ckpt_every=2))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert issubclass(NonFiniteDataError, NonFiniteLossError)
    calls[0] = 0
    cli = load_example("train_images")
    capsys.readouterr()
    assert cli.main(["--config", "tiny", "--out", str(tmp_path / "cli"), "--steps", "4", "--device", "cpu",
                     "--no-progress", "--no-tensorboard"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 3" in err[0] and "Traceback" not in err[0]


def test_train_settings_refuse_bad_values_naming_the_field():
    for field, value in (("log_every", 0), ("steps", 0), ("batch_size", 0), ("grad_clip", -1.0),
                         ("ema_decay", 1.0), ("sample_grid", "cubic")):
        with pytest.raises((ValueError, TypeError), match=field):
            TrainSettings(**{field: value})


def test_generate_images_refuses_a_zero_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        generate_images(None, None, 4, (1, 8, 8), batch_size=0)


def test_load_trained_model_names_a_file_of_another_kind(tmp_path):
    save_checkpoint(tmp_path / "toy.pt", {"format": "splitdyn_cld.toy_model/1"})
    with pytest.raises(CheckpointError, match=r"toy\.pt was not written by splitdyn_cld\.image_training\.train"):
        load_trained_model(tmp_path / "toy.pt")


def test_missing_tensorboard_warns_once(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(logs_module.TensorBoardLogger, "warned_missing", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = logs_module.TensorBoardLogger(tmp_path, True), logs_module.TensorBoardLogger(tmp_path, True)
        logs_module.TensorBoardLogger(tmp_path, False)
    assert first.writer is None and second.writer is None
    assert [str(w.message).split(":")[0] for w in caught] == ["TensorBoard is not installed"]


def test_the_image_sampling_progress_bar_counts_images_not_batches(monkeypatch):
    import tqdm.auto

    from splitdyn_cld.image_training import build_cld, build_score_model
    from splitdyn_cld.image_training.model import image_shape_of, net_config_for

    bars = []

    class Recorder:
        def __init__(self, *args, total=None, **kwargs):
            self.total, self.count = total, 0
            bars.append(self)

        def update(self, n=1):
            self.count += n

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    s = tiny("unused")
    cld = build_cld(s)
    score, net = build_score_model(net_config_for(s), cld)
    images, _ = generate_images(score.eval(), cld, 5, image_shape_of(net_config_for(s)), n_steps=2, batch_size=2,
                                generator=torch.Generator().manual_seed(0), progress=True)
    assert len(images) == 5 and [(b.total, b.count) for b in bars] == [(5, 5)]
