"""Training utilities: EMA warm-up, atomic checkpoints, bit-exact resume, NaN detection, CSV log, warm-up lr."""

import math
import random

import numpy as np
import pytest
import torch

from splitdyn_cld import CLD, hsm_loss
from splitdyn_cld.toy_data import sample_diamond
from splitdyn_cld.toy_models import cld_toy_score
from splitdyn_cld.training import (
    CSVLogger,
    NonFiniteLossError,
    check_finite_loss,
    ema_rate,
    load_checkpoint,
    make_ema,
    rng_state,
    save_checkpoint,
    set_rng_state,
    warmup_lr,
)


def _scalar_model(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_ema_first_update_copies_then_follows_the_warmup_rate():
    model = _scalar_model(0.0)
    ema = make_ema(model, decay=0.999)
    expected = None
    for n, value in enumerate([1.0, 2.0, 4.0, -3.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        if n == 0:
            expected = value  # the first update copies the model
        else:
            rate = min(0.999, (1 + n) / (10 + n))
            expected = rate * expected + (1 - rate) * value
        assert math.isclose(ema.module.weight.item(), expected, rel_tol=1e-6)
    assert math.isclose(ema_rate(1, 0.999), 2 / 11) and ema_rate(10**6, 0.999) == 0.999


def test_ema_without_warmup_uses_the_decay_and_averages_buffers():
    model = torch.nn.BatchNorm1d(1)
    ema = make_ema(model, decay=0.5, warmup=False)
    ema.update_parameters(model)
    model.running_mean.fill_(2.0)
    ema.update_parameters(model)
    assert ema.module.running_mean.item() == pytest.approx(0.5 * 0.0 + 0.5 * 2.0)
    with pytest.raises(ValueError, match="decay"):
        make_ema(model, decay=1.0)


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(3)})
    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):
        real_save({"step": 2, "w": torch.zeros(10**5)}, f)  # a partial file is on disk ...
        raise OSError("disk full")  # ... when the process dies

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


class _Trainer:
    """A tiny CLD training run whose every step draws from all the RNGs a real run may touch."""

    def __init__(self):
        self.cld = CLD()
        self.model = cld_toy_score(self.cld, 2, width=16, blocks=1)
        self.model.net.out.reset_parameters()  # not zero, so every parameter gets a gradient
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.ema = make_ema(self.model, 0.9)
        self.data = torch.Generator().manual_seed(5)
        self.step = 0

    def train_step(self):
        x0 = sample_diamond(64, self.data)  # explicit generator
        x0 = x0 + 0.01 * torch.randn(x0.shape)  # torch's global RNG (and hsm_loss without a generator)
        x0 = x0 * float(1 + 0.01 * np.random.rand()) * (1 + 0.01 * random.random())  # NumPy, Python
        loss = hsm_loss(self.model, x0, self.cld)
        check_finite_loss(loss, self.step)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.ema.update_parameters(self.model)
        self.step += 1

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict(), "step": self.step, "rng": rng_state({"data": self.data})}

    def load(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        set_rng_state(state["rng"], {"data": self.data})


def _seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_resuming_from_a_checkpoint_is_bit_identical_to_the_uninterrupted_run(tmp_path):
    steps = 6
    _seed_everything(0)
    reference = _Trainer()
    for _ in range(steps):
        reference.train_step()

    _seed_everything(0)
    first = _Trainer()
    for _ in range(steps // 2):
        first.train_step()
    save_checkpoint(tmp_path / "ckpt.pt", first.state())
    for _ in range(2):  # the interrupted run goes on a little before it dies
        first.train_step()

    _seed_everything(123)  # a new process: different RNG states and fresh objects
    resumed = _Trainer()
    resumed.load(load_checkpoint(tmp_path / "ckpt.pt"))
    assert resumed.step == steps // 2
    while resumed.step < steps:
        resumed.train_step()
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(reference.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    # and the run really depends on the RNG state: without restoring it, the parameters differ
    _seed_everything(0)
    other = _Trainer()
    for _ in range(steps // 2):
        other.train_step()
    _seed_everything(123)
    while other.step < steps:
        other.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(reference.model.parameters(), other.model.parameters()))


def test_non_finite_losses_stop_training_with_step_and_advice():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteLossError, match=r"step 7.*learning rate.*bf16"):
            check_finite_loss(torch.tensor(bad), 7)
    assert issubclass(NonFiniteLossError, RuntimeError)
    check_finite_loss(torch.tensor(1.0), 0)  # finite: no error


def test_warmup_lr_is_linear_then_constant():
    assert warmup_lr(0, 1.0, 4) == 0.25 and warmup_lr(3, 1.0, 4) == 1.0 and warmup_lr(100, 1.0, 4) == 1.0
    assert warmup_lr(0, 2e-4, 0) == 2e-4


def test_csv_logger_writes_rows_and_resumes_without_the_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    with CSVLogger(path) as log:
        for step in range(5):
            log.log(step=step, loss=torch.tensor(float(step)))
        with pytest.raises(ValueError, match="unknown columns"):
            log.log(step=5, accuracy=1.0)
    with CSVLogger(path, resume_step=2) as log:
        log.log({"step": 3, "loss": 30.0})
    assert path.read_text().splitlines() == ["step,loss", "0,0.0", "1,1.0", "2,2.0", "3,30.0"]
