"""Image CLD-SGM training on the CPU with the tiny config: optimisation, DDP on gloo, exact resume, NaN stop,
sampling, and clear errors.

Budget (with tests/test_image_eval.py): < 120 s on 2 cores.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from splitdyn_cld.image_training import step as step_module
from splitdyn_cld.image_training.model import image_shape_of, net_config_for
from splitdyn_cld.losses import hsm_loss
from splitdyn_cld.image_training import (
    build_cld,
    build_dataset,
    build_score_model,
    generate_images,
    load_trained_model,
    save_image_grid,
    settings_for,
    split_global_batch,
    train,
    train_step,
)
from splitdyn_cld.data import to_uint8
from splitdyn_cld.checkpoints import load_checkpoint
from splitdyn_cld.training import NonFiniteLossError

from _scripts import load_example


def tiny(out, **overrides):
    values = dict(out=str(out), progress=False, tensorboard=False, device="cpu", sample_every=0)
    values.update(overrides)
    return settings_for("tiny", **values)


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_one_optimisation_step_on_a_fixed_batch_lowers_the_loss():
    s = tiny("unused")
    torch.manual_seed(0)
    cld = build_cld(s)
    score, net = build_score_model(net_config_for(s), cld)
    net.eval()  # no dropout: the loss is a deterministic function of the weights and the generator
    shape = image_shape_of(net_config_for(s))
    x0 = torch.rand(16, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def loss_at(seed):
        with torch.no_grad():
            return float(hsm_loss(score, x0, cld, generator=torch.Generator().manual_seed(seed)))

    before = loss_at(7)
    stats = train_step(score, optimizer, x0, cld, generator=torch.Generator().manual_seed(7))
    assert stats["loss"] == pytest.approx(before, rel=1e-6)  # the step saw the same times and noise
    assert loss_at(7) < before


def test_global_batch_not_divisible_by_world_size_errors_before_starting(monkeypatch, tmp_path):
    assert split_global_batch(128, 16) == 8
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="batch_size=7 is not divisible by WORLD_SIZE=2"):
        train(tiny(tmp_path, batch_size=7))


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after the raise runs in the training loop's step."""


def test_killed_and_resumed_training_gives_the_same_next_losses_and_weights_bit_for_bit(tmp_path, monkeypatch):
    full = train(tiny(tmp_path / "full", steps=4, ckpt_every=2, sample_every=2))

    real_loss, calls = step_module.score_matching_objective, [0]

    def dies_in_step_3(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise _Killed
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(step_module, "score_matching_objective", dies_in_step_3)
    with pytest.raises(_Killed):
        train(tiny(tmp_path / "cut", steps=4, ckpt_every=2))
    monkeypatch.setattr(step_module, "score_matching_objective", real_loss)
    resumed = train(tiny(tmp_path / "cut", steps=4, ckpt_every=2, resume=True))

    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history[2:]]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = full.ema.state_dict(), resumed.ema.state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert sorted(p.name for p in (tmp_path / "full" / "samples").glob("*.png")) == ["step_0000002.png", "step_0000004.png"]

    def steps_and_losses(path):
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        return [(r[0], r[1]) for r in rows]

    assert steps_and_losses(tmp_path / "cut" / "train_log.csv") == steps_and_losses(tmp_path / "full" / "train_log.csv")
    assert len(steps_and_losses(tmp_path / "full" / "train_log.csv")) == 4


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    train(tiny(tmp_path, steps=2, ckpt_every=2, precision="fp16"))
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["scaler"]
    assert saved["scale"] < 65536.0 or saved["_growth_tracker"] > 0  # the scaler has been stepped
    resumed = train(tiny(tmp_path, steps=3, ckpt_every=1, precision="fp16", resume=True))
    assert resumed.step == 3 and np.isfinite(resumed.history[-1]["loss"])


def test_nan_loss_stops_with_the_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss, calls = step_module.score_matching_objective, [0]

    def poisoned(*args, **kwargs):
        calls[0] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls[0] == 4 else loss

    monkeypatch.setattr(step_module, "score_matching_objective", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"(?s)step 4.*last good checkpoint is .*checkpoint\.pt"):
        train(tiny(tmp_path, steps=6, ckpt_every=2))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # the CLI reports it and exits with status 3 (NaN at its first step)
    calls[0] = 3
    cli = load_example("train_images")
    assert cli.main(["--config", "tiny", "--out", str(tmp_path / "cli"), "--steps", "2", "--device", "cpu",
                     "--no-progress", "--no-tensorboard"]) == 3


def test_samplers_return_finite_images_in_range(tmp_path):
    s = tiny(tmp_path)
    torch.manual_seed(0)
    cld = build_cld(s)
    score, net = build_score_model(net_config_for(s), cld)
    net.eval()
    shape = image_shape_of(net_config_for(s))
    for sampler in ("sscs", "em", "ode"):
        count, batch = (3, 2) if sampler != "ode" else (2, 2)
        images, nfe = generate_images(score, cld, count, shape, sampler=sampler, n_steps=4, grid="quadratic",
                                      batch_size=batch, rtol=1e-2, atol=1e-2, generator=torch.Generator().manual_seed(0))
        assert images.shape == (count, *shape) and bool(torch.isfinite(images).all())
        assert images.min() >= -1 and images.max() <= 1
        assert nfe == 5 if sampler != "ode" else nfe > 5
        assert to_uint8(images).dtype == torch.uint8
    png = save_image_grid(images, tmp_path / "grid.png")
    assert png.stat().st_size > 0


def test_sample_cli_writes_npz_and_grid_from_a_checkpoint(tmp_path):
    train(tiny(tmp_path / "run", steps=1, ckpt_every=1))
    model = load_trained_model(tmp_path / "run")
    assert model.step == 1
    cli = load_example("sample_images")
    out = tmp_path / "samples"
    assert cli.main(["--checkpoint", str(tmp_path / "run"), "--sampler", "em", "--steps", "3", "--grid", "uniform",
                     "--num-samples", "5", "--batch-size", "4", "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    with np.load(out / "samples.npz") as f:
        c, h, w = model.image_shape
        assert f["images"].shape == (5, h, w, c) and f["images"].dtype == np.uint8 and float(f["nfe"]) == 4
    assert (out / "grid.png").is_file()


# slow (11 s on a loaded 2-core machine): two torchrun worker processes each import torch and the model
@pytest.mark.slow
def test_sampling_under_torchrun_splits_the_samples_over_two_ranks_and_merges_them(tmp_path):
    train(tiny(tmp_path / "run", steps=1, ckpt_every=1))
    out = tmp_path / "samples"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    script = Path(__file__).resolve().parents[1] / "examples" / "sample_images.py"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "--checkpoint", str(tmp_path / "run"), "--sampler", "sscs", "--steps", "3",
                           "--num-samples", "5", "--batch-size", "4", "--out", str(out), "--device", "cpu",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out / "samples_rank0.npz") as r0, np.load(out / "samples_rank1.npz") as r1, \
            np.load(out / "samples.npz") as merged:
        assert len(r0["images"]) == 3 and len(r1["images"]) == 2  # the global count, split over the ranks
        assert np.array_equal(merged["images"], np.concatenate([r0["images"], r1["images"]]))
        assert not np.array_equal(r0["images"][:2], r1["images"])  # each rank draws its own stream
        assert float(merged["nfe"]) == 4
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def test_missing_data_root_errors_name_the_flag_and_the_folder(tmp_path):
    with pytest.raises(ValueError, match="--data-root"):
        build_dataset("cifar10", None, (3, 32, 32))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        build_dataset("cifar10", str(tmp_path / "nowhere"), (3, 32, 32))


@pytest.mark.slow
def test_ddp_on_two_gloo_processes_keeps_parameters_identical(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from splitdyn_cld.image_training import settings_for, train
        s = settings_for("tiny", out={str(tmp_path / 'run')!r}, steps=3, batch_size=8, ckpt_every=3, device="cpu",
                         progress=False, tensorboard=False, sample_every=0)
        result = train(s)
        torch.save(result.model.unet.state_dict(), {str(tmp_path)!r} + f"/rank{{result.rank}}.pt")
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["generators"]["loss"], state["rng"][1]["generators"]["loss"])  # ranks draw their own noise
    assert all(torch.equal(state["model"][k], r0[k]) for k in r0)  # rank 0 wrote the shared weights
    assert int(state["optimizer"]["state"][0]["step"]) == 3


def test_resumable_sampler_shards_an_epoch_over_ranks_and_restarts_mid_epoch():
    from splitdyn_cld.image_training import ResumableDistributedSampler, SyntheticImages

    data = SyntheticImages((1, 2, 2), length=40)
    ranks = [ResumableDistributedSampler(data, 2, r, seed=3, batch_size=4) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(5)
    full = [list(sampler) for sampler in ranks]
    assert sorted(full[0] + full[1]) == list(range(40))  # each epoch is a permutation split over the ranks
    ranks[1].set_epoch(5, start_batch=2)
    assert list(ranks[1]) == full[1][8:] and len(ranks[1]) == 12
    ranks[1].set_epoch(6)
    assert list(ranks[1]) != full[1]  # a new epoch reshuffles
