"""Hardening, second round (issue 20): each class of hostile input is refused at its boundary.

One table per class; every case calls ``callable(**kwargs)`` and checks the exception type, that the message
names the argument (as a word) and that it says what was expected (a fragment). Before this round, 35 of the
39 examples below (the tables of generators/devices, shapes, wrong-layer errors, resources, scripts, checkpoint
writes, plus the lock and the full disk) ended in a deep torch error, a wrong-layer message, a silent result or
a false rejection; the tables pin the clear behaviour.

Classes: generators and devices; shapes; accepted nonsense (script flags); degenerate results (a NaN loss
warns); errors from the wrong layer (ODE method, NaN score, degenerate kernels, checkpoint writes); false
rejections (the splitting samplers on the VE SDE, numpy batch sizes); resources (a draw beyond memory);
training folders (a lock per output folder, a full disk).
"""

from __future__ import annotations

import errno
import math
import re
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

import splitdyn
from splitdyn import VESDE, VPSDE, PerturbationKernel, ProbabilityFlowODE, UniformGrid, checks
from splitdyn.flow_maps import decode, encode, flow, interpolate, slerp
from splitdyn.likelihood import log_likelihood
from splitdyn.metrics import wasserstein_sliced
from splitdyn_cld import CLD, checkpoints, dsm_loss, hsm_loss, nll_bound
from splitdyn_cld import sample as cld_sample
from splitdyn_cld.checkpoints import (CheckpointWriteError, RunFolderInUseError, load_checkpoint, run_folder_lock,
                                      save_checkpoint)
from splitdyn_cld.cli import device_name
from splitdyn_cld.image_training import TrainSettings, settings_for, train
from splitdyn_cld.image_training.distributed import setup_distributed
from splitdyn_cld.losses import sample_times, score_matching_objective

from _scripts import ROOT, load_example

F64 = torch.float64
NAN = float("nan")
VP = VPSDE()
CLD_ = CLD()
U1 = torch.randn(3, 1, 2, dtype=F64, generator=torch.Generator().manual_seed(0))  # a VP state batch
X0 = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(1))  # data
ODE = ProbabilityFlowODE(VP, lambda u, t: -u)
NO_CUDA = not torch.cuda.is_available()


def standard_score(u, t):
    return -u


def velocity_score(u, t):
    return -u[:, 1:] / CLD_.mass


def nan_score(u, t):
    return torch.full_like(u, NAN)


def check_raises(fn, kwargs, error, name, expected):
    with pytest.raises(error) as info:
        fn(**kwargs)
    message = str(info.value)
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message), f"{name!r} not named in: {message}"
    assert expected in message, f"{expected!r} not said in: {message}"
    assert "\n" not in message.strip(), f"not one line: {message}"
    return message


def ids(table):
    return [pytest.param(*case[1:], id=case[0]) for case in table]


# -- generators and devices --------------------------------------------------------------------------------------
GENERATORS_AND_DEVICES = [
    ("ll-generator-int", log_likelihood, dict(ode=ODE, u=U1, generator=0), TypeError, "generator", "manual_seed(0)"),
    ("ll-generator-str", log_likelihood, dict(ode=ODE, u=U1, generator="seed"), TypeError, "generator",
     "torch.Generator or None"),
    ("ll-generator-numpy", log_likelihood, dict(ode=ODE, u=U1, generator=np.random.default_rng(0)), TypeError,
     "generator", "numpy generator"),
    ("nll-generator-int", nll_bound, dict(cld=CLD_, velocity_score=velocity_score, x0=X0, generator=7), TypeError,
     "generator", "torch.Generator"),
    ("nll-generator-numpy", nll_bound,
     dict(cld=CLD_, velocity_score=velocity_score, x0=X0, generator=np.random.default_rng(0)), TypeError, "generator",
     "numpy generator"),
    ("hsm-generator-int", hsm_loss, dict(score_model=velocity_score, x0=X0, cld=CLD_, generator=3), TypeError,
     "generator", "torch.Generator"),
    ("sw2-generator-int", wasserstein_sliced, dict(x=X0, y=X0, generator=0), TypeError, "generator",
     "torch.Generator"),
    ("sample-times-generator-str", sample_times, dict(batch=4, T=1.0, generator="g"), TypeError, "generator",
     "torch.Generator"),
    ("prior-generator-numpy", VP.prior_sample, dict(shape=(2, 3), generator=np.random.default_rng(0)), TypeError,
     "generator", "numpy generator"),
    ("cld-prior-generator-int", CLD_.prior_sample, dict(shape=(2, 3), generator=1), TypeError, "generator",
     "torch.Generator"),
    ("prior-device-nonsense", VP.prior_sample, dict(shape=(2, 3), device="nonsense"), ValueError, "device",
     "such as 'cpu', 'cuda'"),
    ("cld-prior-device-float", CLD_.prior_sample, dict(shape=(2, 3), device=1.5), TypeError, "device",
     "torch.device or a string"),
    ("check-device-nonsense", checks.check_device, dict(name="device", value="nonsense"), ValueError, "device",
     "'cpu', 'cuda', 'cuda:0' or 'mps'"),
    ("check-device-bool", checks.check_device, dict(name="device", value=True), TypeError, "device",
     "torch.device or a string"),
    ("setup-distributed-nonsense", setup_distributed, dict(device="nonsense"), ValueError, "device", "such as 'cpu'"),
    ("settings-device-int", TrainSettings, dict(device=3), TypeError, "device", "a str such as 'cpu'"),
    ("cli-device-nonsense", device_name, dict(text="gpu0"), Exception, "device", "such as 'cpu'"),
]
if NO_CUDA:
    GENERATORS_AND_DEVICES += [
        ("check-device-cuda-absent", checks.check_device, dict(name="device", value="cuda"), ValueError, "device",
         "not available on this machine"),
        ("prior-device-cuda-absent", VP.prior_sample, dict(shape=(2, 3), device="cuda"), ValueError, "device",
         "not available"),
        ("setup-distributed-cuda-absent", setup_distributed, dict(device="cuda:0"), ValueError, "device",
         "not available"),
        ("cld-sample-device-cuda-absent", cld_sample,
         dict(cld=CLD_, velocity_score=velocity_score, shape_or_u=(4, 2), n_steps=2, device="cuda"), ValueError,
         "device", "not available"),
    ]


@pytest.mark.parametrize(("fn", "kwargs", "error", "name", "expected"), ids(GENERATORS_AND_DEVICES))
def test_generators_and_devices_are_checked_at_the_boundary(fn, kwargs, error, name, expected):
    check_raises(fn, kwargs, error, name, expected)


def test_valid_generators_and_devices_pass():
    g = torch.Generator().manual_seed(0)
    assert checks.check_generator("generator", None) is None and checks.check_generator("generator", g) is g
    assert checks.check_device("device", "cpu") == torch.device("cpu")
    assert checks.check_device("device", torch.device("cpu")) == torch.device("cpu")
    assert checks.check_device("device", None) is None
    assert device_name("cpu") == "cpu"
    x = VP.prior_sample((2, 3), generator=g, device="cpu")
    assert x.shape == (2, 1, 3)


# -- shapes --------------------------------------------------------------------------------------------------------
SHAPES = [
    ("slerp-2d-weights", slerp, dict(z0=U1, z1=U1 + 1, weights=torch.rand(2, 3)), ValueError, "weights",
     "a number or a 1-D sequence"),
    ("slerp-empty-weights", slerp, dict(z0=U1, z1=U1 + 1, weights=[]), ValueError, "weights", "at least one"),
    ("slerp-str-weights", slerp, dict(z0=U1, z1=U1 + 1, weights="0.5"), TypeError, "weights", "a number or a 1-D"),
    ("slerp-nan-weights", slerp, dict(z0=U1, z1=U1 + 1, weights=[0.0, NAN]), ValueError, "weights", "finite"),
    ("flow-wrong-components", flow, dict(process=CLD_, score=velocity_score, u=U1, times=[0.1, 0.5]), ValueError, "u",
     "(batch, 2, *event)"),
    ("flow-2d-times", flow, dict(process=VP, score=standard_score, u=U1, times=[[0.1, 0.5]]), ValueError, "times",
     "1-D sequence"),
    ("cld-kernel-0d-x0", CLD_.perturbation_kernel, dict(t=0.5, x0=torch.tensor(1.0)), ValueError, "x0",
     "a 0-d tensor"),
    ("cld-kernel-int-x0", CLD_.perturbation_kernel, dict(t=0.5, x0=torch.zeros(4, 2, dtype=torch.long)), TypeError,
     "x0", "floating"),
    ("vp-kernel-0d-x0", VP.perturbation_kernel, dict(t=0.5, x0=torch.tensor(1.0)), ValueError, "x0", "0-d"),
    ("data-batch-empty", checks.check_data_batch, dict(name="x0", x=torch.zeros(0, 2)), ValueError, "x0",
     "batch >= 1"),
]


@pytest.mark.parametrize(("fn", "kwargs", "error", "name", "expected"), ids(SHAPES))
def test_wrong_shapes_are_refused_before_any_arithmetic(fn, kwargs, error, name, expected):
    check_raises(fn, kwargs, error, name, expected)


def test_slerp_still_takes_a_scalar_and_a_flat_sequence():
    assert slerp(U1, U1 + 1, 0.5).shape == (1, *U1.shape)
    assert torch.allclose(slerp(U1, 2 * U1, [0.0, 1.0])[1], 2 * U1)


# -- errors from the wrong layer -----------------------------------------------------------------------------------
def singular_kernel_score():
    kernel = PerturbationKernel(CLD(eps_num=0.0), 0.0, torch.zeros(4, 2, 2, dtype=F64))
    return kernel.score(torch.zeros(4, 2, 2, dtype=F64))


WRONG_LAYER = [
    ("ll-unknown-method", log_likelihood, dict(ode=ODE, u=U1, method="rk45"), ValueError, "method", "dopri5"),
    ("ll-fixed-step-method", log_likelihood, dict(ode=ODE, u=U1, method="euler"), ValueError, "method",
     "one step over the whole interval"),
    ("nll-unknown-method", nll_bound, dict(cld=CLD_, velocity_score=velocity_score, x0=X0, method="RK45"),
     ValueError, "method", "dopri5"),
    ("flow-unknown-method", flow, dict(process=VP, score=standard_score, u=U1, times=[0.1, 0.5], method="rk45"),
     ValueError, "method", "rk4"),
    ("flow-method-int", flow, dict(process=VP, score=standard_score, u=U1, times=[0.1, 0.5], method=4), TypeError,
     "method", "a str"),
    ("encode-nan-score", encode, dict(process=VP, score=nan_score, u=U1), ValueError, "score", "non-finite"),
    ("decode-nan-score", decode, dict(process=VP, score=nan_score, z=U1), ValueError, "score", "NaN/inf"),
    ("decode-no-process", decode, dict(process=None, score=standard_score, z=U1), TypeError, "process",
     "a forward SDE"),
    ("encode-no-process", encode, dict(process="vp", score=standard_score, u=U1), TypeError, "process",
     "a forward SDE"),
    ("interpolate-no-process", interpolate, dict(process=None, score=standard_score, z0=U1, z1=U1), TypeError,
     "process", "a forward SDE"),
    ("prior-negative-size", VP.prior_sample, dict(shape=(-1, 2)), ValueError, "shape[0]", ">= 1"),
    ("prior-int-shape", VP.prior_sample, dict(shape=3), TypeError, "shape", "pass (3,)"),
    ("prior-integer-dtype", VP.prior_sample, dict(shape=(3, 2), dtype=torch.int64), TypeError, "dtype",
     "floating torch.dtype"),
    ("cld-prior-negative-size", CLD_.prior_sample, dict(shape=(-1, 2)), ValueError, "shape[0]", ">= 1"),
    ("cld-prior-int-shape", CLD_.prior_sample, dict(shape=3), TypeError, "shape", "sequence (batch, *event_shape)"),
    ("cld-prior-integer-dtype", CLD_.prior_sample, dict(shape=(3, 2), dtype=torch.int32), TypeError, "dtype",
     "floating"),
    ("cld-prior-float-size", CLD_.prior_sample, dict(shape=(2.5, 2)), TypeError, "shape[0]", "integer"),
    ("vp-kernel-score-at-zero", lambda: VP.perturbation_kernel(0.0, X0).score(X0[:, None]), {}, ValueError,
     "eps_num", "use times t > 0 or eps_num > 0"),
    ("vp-kernel-noise-score-at-zero",
     lambda: VP.perturbation_kernel(torch.tensor([0.5, 0.0, 0.2, 0.1]), X0).score_from_noise(torch.zeros(4, 1, 2,
                                                                                                  dtype=F64)),
     {}, ValueError, "t", "singular at t = 0"),
    ("cld-kernel-score-at-zero", singular_kernel_score, {}, ValueError, "eps_num", "no density"),
    ("vp-kernel-log-prob-at-zero", lambda: VP.perturbation_kernel(0.0, X0).log_prob(X0[:, None]), {}, ValueError,
     "eps_num", "singular"),
]


@pytest.mark.parametrize(("fn", "kwargs", "error", "name", "expected"), ids(WRONG_LAYER))
def test_errors_come_from_the_layer_that_knows_the_argument(fn, kwargs, error, name, expected):
    check_raises(fn, kwargs, error, name, expected)


def test_degenerate_kernels_still_sample_and_score_where_they_are_regular():
    kernel = VP.perturbation_kernel(torch.tensor([0.0, 0.5]), X0[:2])
    sample, _ = kernel.sample(generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample[0], X0[0][None])  # a point mass at t = 0
    stabilised = VP.perturbation_kernel(0.0, X0, eps_num=1e-6)
    assert torch.allclose(stabilised.score(X0[:, None] + 1e-3), torch.full((4, 1, 2), -1e3, dtype=F64))


# -- checkpoint writes: the wrong layer, and the file is untouched -------------------------------------------------
def test_checkpoint_writes_that_cannot_happen_say_why_and_leave_the_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})
    (tmp_path / "afile").write_text("x")
    cases = [
        (dict(path=tmp_path / "afile" / "c.pt", state={"a": 1}), CheckpointWriteError, "afile is a file"),
        (dict(path=tmp_path / "afile" / "sub" / "c.pt", state={"a": 1}), CheckpointWriteError, "not a folder"),
        (dict(path=tmp_path, state={"a": 1}), CheckpointWriteError, "it is a folder"),
        (dict(path=path, state={"w": torch.ones(2), "lock": threading.Lock()}), TypeError, "state['lock']"),
        (dict(path=path, state={"f": lambda: 1}), TypeError, "cannot be pickled"),
    ]
    for kwargs, error, expected in cases:
        message = check_raises(save_checkpoint, kwargs, error, "checkpoint", expected)
        if kwargs["path"] == path:
            assert "left untouched" in message
    assert load_checkpoint(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ckpt.pt"]  # no temporary left behind


class _FullDisk:
    """A checkpoint writer on a disk that fills up after ``room`` bytes (the file's write raises ENOSPC)."""

    room = 200

    def __init__(self, file, digest) -> None:
        self.written = 0

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)

    def flush(self) -> None:
        pass


def test_a_full_disk_gives_one_line_naming_the_intact_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(3)})
    monkeypatch.setattr(checkpoints, "_HashingWriter", _FullDisk)
    with pytest.raises(RuntimeError, match="inline_container"):  # what torch.save itself raises on it
        torch.save({"w": torch.zeros(1000)}, _FullDisk(None, None))
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"step": 2, "w": torch.zeros(10**4)})
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert "the disk is full" in message and f"previous checkpoint {path} is intact" in message
    assert "inline_container" not in message and "\n" not in message
    with pytest.raises(CheckpointWriteError, match=r"no checkpoint was at .*new\.pt before"):
        save_checkpoint(tmp_path / "new.pt", {"w": torch.zeros(10**4)})

    def torch_save_fails(obj, f, *args, **kwargs):  # the bare error, no OSError attached
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.undo()
    monkeypatch.setattr(torch, "save", torch_save_fails)
    with pytest.raises(CheckpointWriteError, match="is intact") as info:
        save_checkpoint(path, {"step": 3})
    monkeypatch.undo()
    assert "\n" not in str(info.value)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_image_trainer_stops_on_a_full_disk_with_its_last_checkpoint_intact(tmp_path, monkeypatch, capsys):
    real = checkpoints._HashingWriter
    saves = []

    def writer(file, digest):
        saves.append(1)
        return real(file, digest) if len(saves) == 1 else _FullDisk(file, digest)

    monkeypatch.setattr(checkpoints, "_HashingWriter", writer)
    out = tmp_path / "run"
    script = load_example("train_images")
    with pytest.raises(SystemExit) as info:
        script.main(["--config", "tiny", "--steps", "4", "--ckpt-every", "2", "--out", str(out), "--device", "cpu",
                     "--no-progress", "--no-tensorboard"])
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "the disk is full" in err[0] and f"{out / 'checkpoint.pt'} is intact" in err[0]
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# -- degenerate results: a NaN loss is reported ---------------------------------------------------------------------
@pytest.mark.parametrize("loss", [hsm_loss, dsm_loss], ids=["hsm", "dsm"])
def test_a_nan_score_makes_the_loss_warn(loss):
    kind = "hsm" if loss is hsm_loss else "dsm"
    with pytest.warns(RuntimeWarning, match=r"_loss is non-finite: the score returned NaN or inf .* 4 of 4 samples"):
        value = loss(lambda u, t: torch.full_like(u[:, 1:], NAN), X0, CLD_)
    assert torch.isnan(value)

    def half(u, t):  # NaN after t = 0.5
        return torch.where(t.reshape(-1, 1, 1) > 0.5, NAN, 0.0) * u[:, 1:]

    with pytest.warns(RuntimeWarning, match=rf"{kind}_loss is non-finite.* for 1 of 4 samples \(at t = 0\.9\)"):
        score_matching_objective(half, X0, CLD_, kind=kind, t=torch.tensor([0.1, 0.2, 0.9, 0.3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(loss(velocity_score, X0, CLD_))  # finite losses stay silent


# -- accepted nonsense and bad devices in the training scripts ------------------------------------------------------
SCRIPTS = [
    ("images-override-without-resume", "train_images", ["--config", "tiny", "--override-settings"],
     "--override-settings only applies with --resume"),
    ("toy-override-without-resume", "toy_train", ["--override-settings", "--steps", "1"],
     "--override-settings only applies with --resume"),
    ("images-device-nonsense", "train_images", ["--config", "tiny", "--device", "nonsense"],
     "argument --device: device must name a device such as 'cpu'"),
    ("toy-device-nonsense", "toy_train", ["--device", "cuda:x", "--steps", "1"], "argument --device: device"),
]
if NO_CUDA:
    SCRIPTS += [
        ("images-device-cuda-absent", "train_images", ["--config", "tiny", "--device", "cuda"],
         "device='cuda' asks for the cuda backend, which is not available"),
        ("toy-device-cuda-absent", "toy_train", ["--device", "cuda:0", "--steps", "1"], "not available"),
    ]


@pytest.mark.parametrize(("script", "argv", "expected"), [pytest.param(*case[1:], id=case[0]) for case in SCRIPTS])
def test_scripts_refuse_flags_that_would_be_ignored_or_fail_later(script, argv, expected, tmp_path, capsys):
    module = load_example(script)
    with pytest.raises(SystemExit) as info:
        module.main(argv + ["--out", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


# -- false rejections -----------------------------------------------------------------------------------------------
def _ve_gaussian():
    """A VE SDE on data N(m, s0^2): the marginals are N(m, s0^2 + sigma(t)^2), the exact score is linear."""
    ve, m, s0 = VESDE(sigma_min=0.05, sigma_max=3.0), 1.0, 0.5

    def variance(t):
        return s0**2 + ve.sigma(torch.as_tensor(t, dtype=F64)) ** 2

    def score(u, t):
        v = variance(t)
        return -(u - m) / (v.reshape(-1, *([1] * (u.ndim - 1))) if v.ndim else v).to(u)

    return ve, m, variance, score


@pytest.mark.parametrize("step", ["sscs", "trotter-split"])
def test_the_splitting_samplers_run_the_ve_sde_and_converge_to_its_moments(step):
    # The VE SDE has no stationary law; its split uses the zero reference precision (linear part -F = 0 with
    # the noise, score part GG^T s), which is exact in the limit: the variance error falls as the grid refines
    # (first order) and the mean is right (for a linear score it is exact up to Monte Carlo noise).
    ve, m, variance, score = _ve_gaussian()
    assert torch.equal(ve.reference_precision(), torch.zeros(1, 1, dtype=F64))
    eps = 1e-3
    u0 = m + variance(1.0).sqrt() * torch.randn(4000, 1, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    errors = []
    for n in (50, 200):
        x = splitdyn.sample(ve, score, u0, UniformGrid(n, eps=eps), step=step, denoise=False, dtype=F64,
                            generator=torch.Generator().manual_seed(1)).state
        se_mean = math.sqrt(float(variance(eps)) / x.numel())
        assert abs(float(x.mean()) - m) < 5 * se_mean
        errors.append(float(x.var()) / float(variance(eps)) - 1.0)
    se_var = math.sqrt(2.0 / u0.numel())  # relative standard error of the sample variance, about 0.008
    assert abs(errors[0]) > 10 * se_var  # 50 steps: a clear discretisation error ...
    assert abs(errors[1]) < 0.45 * abs(errors[0]) and abs(errors[1]) < 0.1  # ... that shrinks like h


def test_the_pc_splitting_sampler_runs_the_ve_sde():
    ve, m, variance, score = _ve_gaussian()
    eps = 1e-3
    u0 = m + variance(1.0).sqrt() * torch.randn(2000, 1, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    x = splitdyn.sample(ve, score, u0, UniformGrid(50, eps=eps), step="pc-sscs-langevin", denoise=False, dtype=F64,
                        generator=torch.Generator().manual_seed(3)).state
    assert abs(float(x.mean()) - m) < 5 * math.sqrt(float(variance(eps)) / x.numel())
    assert abs(float(x.var()) / float(variance(eps)) - 1.0) < 0.06


def test_the_likelihood_of_the_ve_sde_uses_its_prior():
    # no stationary law: the default p_T is the VE prior N(0, sigma_max^2); with the exact p_T the result is exact
    ve, _, _, _ = _ve_gaussian()
    s0 = 0.5

    def variance(t):
        return s0**2 + ve.sigma(torch.as_tensor(t, dtype=F64)) ** 2

    def score(u, t):  # data N(0, s0^2)
        v = variance(t)
        return -u / (v.reshape(-1, 1, 1) if v.ndim else v).to(u)

    ode = ProbabilityFlowODE(ve, score)
    u = torch.randn(5, 1, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    default = log_likelihood(ode, u, t0=1e-3, trace="exact").log_prob
    given = log_likelihood(ode, u, t0=1e-3, trace="exact", prior_covariance=[[ve.prior_std**2]]).log_prob
    assert torch.equal(default, given)
    exact = log_likelihood(ode, u, t0=1e-3, trace="exact", prior_covariance=[[float(variance(1.0))]]).log_prob
    v0 = float(variance(1e-3))
    expected = -0.5 * (u**2).sum((1, 2)) / v0 - math.log(2 * math.pi * v0)  # two coordinates
    assert torch.allclose(exact, expected, atol=1e-3)
    with pytest.raises(ValueError, match="pass prior_covariance: the forward SDE has no stationary distribution"):
        log_likelihood(ProbabilityFlowODE(splitdyn.LinearSDE([[0.5]], [[1.0]]), score), u)


def test_numpy_integers_are_batch_sizes():
    out = cld_sample(CLD_, velocity_score, (np.int64(4), np.int32(2)), np.int64(3), generator=torch.Generator())
    assert out.state.shape == (4, 2, 2)
    assert VP.prior_sample((np.int64(2), np.int16(3))).shape == (2, 1, 3)
    assert CLD_.prior_sample(torch.tensor([2, 3])).shape == (2, 2, 3)
    with pytest.raises(TypeError, match="shape must be a sequence"):
        CLD_.prior_sample(torch.tensor(3))
    assert cld_sample(CLD_, velocity_score, [np.int64(2)], 2).state.shape == (2, 2)
    import splitdyn

    out = splitdyn.sample(CLD_, velocity_score, (np.int64(4), np.int32(2)), splitdyn.UniformGrid(3))
    assert out.state.shape == (4, 2, 2)


@pytest.mark.parametrize("script", ["sample_images", "evaluate_images", "sample_pretrained"])
def test_sampling_scripts_check_their_device_while_parsing(script, capsys):
    with pytest.raises(SystemExit) as info:
        load_example(script).main(["--device", "nonsense"])
    assert info.value.code == 2
    assert "argument --device: device must name a device such as 'cpu'" in capsys.readouterr().err


# -- resources -----------------------------------------------------------------------------------------------------
RESOURCES = [
    ("vp-prior-1e10", VP.prior_sample, dict(shape=(10**10, 2)), ValueError, "shape", "more than this machine's memory"),
    ("cld-prior-1e10", CLD_.prior_sample, dict(shape=(10**10, 3, 32, 32)), ValueError, "shape", "use a smaller batch"),
    ("cld-sample-1e10", cld_sample, dict(cld=CLD_, velocity_score=velocity_score, shape_or_u=(10**10, 2), n_steps=2),
     ValueError, "shape", "GiB"),
    ("allocation-1e12", checks.check_allocation, dict(name="batch", shape=(10**12,), dtype=F64), ValueError, "batch",
     "more than this machine's memory"),
]


@pytest.mark.parametrize(("fn", "kwargs", "error", "name", "expected"), ids(RESOURCES))
def test_a_draw_beyond_memory_is_refused_up_front(fn, kwargs, error, name, expected):
    if checks.memory_capacity() is None:
        pytest.skip("this platform does not report its memory")
    message = check_raises(fn, kwargs, error, name, expected)
    assert "enforce fail" not in message and "at most about" in message


def test_the_memory_check_passes_what_fits():
    capacity = checks.memory_capacity()
    assert capacity is None or capacity > 2**26
    assert checks.check_allocation("shape", (1000, 2, 3)) == 24_000


# -- training folders: one run per output folder -------------------------------------------------------------------
def test_a_run_folder_takes_one_lock_at_a_time(tmp_path):
    folder = tmp_path / "out"
    with run_folder_lock(folder) as lock:
        assert lock.is_file() and "pid" in lock.read_text()
        with pytest.raises(RunFolderInUseError, match=r"output folder .*out is in use by another training run \(pid"), \
                run_folder_lock(folder):
            pass
    with run_folder_lock(folder):  # released at the end of the block
        pass
    (tmp_path / "afile").write_text("x")
    for path in (tmp_path / "afile", tmp_path / "afile" / "out"):
        with pytest.raises(CheckpointWriteError, match=r"output folder .* cannot be created: .*afile is a file"), \
                run_folder_lock(path):
            pass


def test_the_lock_of_a_killed_run_does_not_block_the_next(tmp_path):
    folder = tmp_path / "out"
    code = ("import sys; from splitdyn_cld.checkpoints import run_folder_lock\n"
            f"with run_folder_lock({str(folder)!r}):\n    print('locked', flush=True); sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderInUseError, match=f"pid {holder.pid}"), run_folder_lock(folder):
            pass
    finally:
        holder.kill()  # a crash: the process dies holding the lock
        holder.wait()
    with run_folder_lock(folder):
        pass


@pytest.mark.parametrize("script", ["train_images", "toy_train"])
def test_a_second_training_on_the_same_folder_stops_at_once(script, tmp_path, capsys):
    out = tmp_path / "out"
    argv = (["--config", "tiny", "--no-tensorboard"] if script == "train_images" else ["--steps", "1"])
    with run_folder_lock(out), pytest.raises(SystemExit) as info:
        load_example(script).main(argv + ["--out", str(out), "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is in use by another" in err, err
    assert sorted(p.name for p in out.iterdir()) == [".run.lock"]  # nothing of the run was written


def test_the_trainer_api_still_trains_in_a_locked_folder_of_its_own(tmp_path):
    # the lock belongs to the scripts (one process per folder); the API is free to be used under it
    with run_folder_lock(tmp_path / "run"):
        result = train(settings_for("tiny", out=str(tmp_path / "run"), steps=1, progress=False, tensorboard=False,
                                    device="cpu"))
    assert result.step == 1
