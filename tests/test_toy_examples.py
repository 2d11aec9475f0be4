"""The toy experiments run end to end at tiny settings; the toy networks have the documented shapes and
parametrisations; Fig. 9a's and App. C.1's orderings hold with exact scores."""

import json
import math

import pytest
import torch

from splitdyn_cld import CLD, velocity_variance
from splitdyn.score_matching import NoisePredictionScore
from splitdyn_cld.checkpoints import load_checkpoint
from splitdyn_cld.toy_models import ToyResNet, cld_toy_score, vpsde_toy_score
from splitdyn import VPSDE

from _scripts import load_example


def test_toy_resnet_handles_any_event_shape_and_stays_under_100k_parameters():
    for event_shape in (2, 3, (2, 2)):
        shape = (event_shape,) if isinstance(event_shape, int) else event_shape
        net = ToyResNet(event_shape, in_components=2, out_components=1)
        out = net(torch.randn(5, 2, *shape), torch.rand(5))
        assert out.shape == (5, 1, *shape)
    assert sum(p.numel() for p in ToyResNet(2, 2, 1).parameters()) < 100_000
    with pytest.raises(ValueError, match="u must have shape"):
        ToyResNet(2, 2, 1)(torch.randn(5, 1, 2), torch.rand(5))


def test_untrained_models_start_at_their_analytic_parts():
    cld = CLD()
    u, t = torch.randn(6, 2, 2), torch.rand(6, dtype=torch.float64) * 0.9 + 0.05
    s = cld_toy_score(cld)(u, t)  # zero output layer: the mixed score is -v / Sigma_vv
    expected = -u[:, 1:] / velocity_variance(cld, t).to(u.dtype).reshape(-1, 1, 1)
    torch.testing.assert_close(s, expected)

    sde = VPSDE()
    model = vpsde_toy_score(sde)
    model.net.out.reset_parameters()
    eps = model.network_output(u[:, :1], t)
    sigma = (1 - torch.exp(-(0.1 * t + 0.5 * 19.9 * t**2))).sqrt()  # VPSDE: sigma_t^2 = 1 - exp(-int beta)
    torch.testing.assert_close(model(u[:, :1], t), -eps / sigma.float().reshape(-1, 1, 1))
    with pytest.raises(ValueError, match="one component"):
        NoisePredictionScore(model.net, cld)


@pytest.mark.slow
def test_toy_train_tiny_run_writes_outputs_with_finite_metrics(tmp_path):
    toy = load_example("toy_train")
    result = toy.main(["--steps", "30", "--batch-size", "128", "--eval-samples", "300", "--nll-samples", "4",
                       "--sample-steps", "8", "--no-progress", "--out", str(tmp_path)])
    for name in ("samples.png", "samples.pt", "loss.png", "metrics.json", "loss_cld.csv", "loss_vpsde.csv", "cld.pt", "vpsde.pt"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["parameters"]["cld"] < 100_000
    assert {(r["model"], r["sampler"]) for r in saved["results"]} == {
        ("CLD", "SSCS"), ("CLD", "EM"), ("CLD", "ODE"), ("VPSDE", "EM"),
        ("CLD", toy.FEW_STEP["CLD"][0]), ("VPSDE", toy.FEW_STEP["VPSDE"][0])}  # the few-step samplers at NFE 10
    assert {r["nfe"] for r in saved["results"] if r["sampler"] in (toy.FEW_STEP["CLD"][0], toy.FEW_STEP["VPSDE"][0])} == {10}
    for row in result["results"]:
        assert all(math.isfinite(row[k]) for k in ("sw2", "mmd2", "nll_samples", "mode_weight_error")), row
        assert row["nonfinite"] == 0
    assert set(result["likelihoods_nats"]) == {"cld_nll_bound", "vpsde_nll", "data_entropy"}
    assert all(math.isfinite(v) for v in result["likelihoods_nats"].values())
    assert len((tmp_path / "loss_cld.csv").read_text().splitlines()) > 2
    # the saved EMA weights load back into the toy network (as toy_score_complexity --network does)
    complexity = load_example("toy_score_complexity")
    net = complexity._fixed_network(CLD(), 0, str(tmp_path / "cld.pt"))
    ema = load_checkpoint(tmp_path / "cld.pt")["ema"]
    torch.testing.assert_close(net.net.out.weight, ema["module.net.out.weight"], rtol=0, atol=0)


def test_score_complexity_cld_is_simpler_near_zero_and_hsm_gradients_are_less_noisy(tmp_path):
    module = load_example("toy_score_complexity")
    result = module.main(["--samples", "4000", "--jacobian-samples", "500", "--gradient-samples", "64",
                          "--times", "0.001", "0.01", "0.1", "--out", str(tmp_path)])
    # Fig. 9a: the CLD score is far closer to the Normal score than the VPSDE's at small t
    for row in result["score_complexity"]:
        assert row["xi_cld"] < row["xi_vpsde"] and row["jacobian_cld"] < row["jacobian_vpsde"], row
    assert result["score_complexity"][0]["xi_cld"] < 1e-2 * result["score_complexity"][0]["xi_vpsde"]
    # App. C.1: DSM = HSM + a zero-mean term, so its gradient noise is larger
    for row in result["gradient_noise"]:
        assert row["trcov_k_hsm"] < row["trcov_k_dsm"], row
    t_small = [r for r in result["gradient_noise"] if r["t"] == 0.001]
    assert all(r["grad_noise_hsm"] < r["grad_noise_dsm"] for r in t_small)
    assert (tmp_path / "score_complexity.png").is_file() and (tmp_path / "score_complexity.json").is_file()


@pytest.mark.slow
def test_toy_train_is_reproducible_from_its_seed(tmp_path):
    toy = load_example("toy_train")
    tiny = ["--steps", "4", "--batch-size", "32", "--eval-samples", "64", "--nll-samples", "0", "--sample-steps", "3",
            "--no-progress"]
    first = toy.main(tiny + ["--out", str(tmp_path / "a")])
    second = toy.main(tiny + ["--out", str(tmp_path / "b")])
    assert first["final_loss"] == second["final_loss"]
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in first["results"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in second["results"]]
    third = toy.main(tiny + ["--seed", "1", "--out", str(tmp_path / "c")])
    assert third["final_loss"] != first["final_loss"]


TINY_TOY = ["--steps", "6", "--batch-size", "32", "--width", "8", "--blocks", "1", "--eval-samples", "32",
            "--nll-samples", "0", "--sample-steps", "3", "--no-progress"]


class _Killed(BaseException):
    """Stands for SIGKILL in the middle of a training step."""


def test_toy_train_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    toy = load_example("toy_train")
    full = toy.main(TINY_TOY + ["--checkpoint-every", "2", "--out", str(tmp_path / "full")])
    real, calls = toy.vpsde_loss, [0]

    def dies_in_vpsde_step_4(*args, **kwargs):  # the CLD model is done, the VPSDE one has a step-2 checkpoint
        calls[0] += 1
        if calls[0] == 4:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(toy, "vpsde_loss", dies_in_vpsde_step_4)
    with pytest.raises(_Killed):
        toy.main(TINY_TOY + ["--checkpoint-every", "2", "--out", str(tmp_path / "cut")])
    assert load_checkpoint(tmp_path / "cut" / "checkpoint_vpsde.pt")["step"] == 2
    monkeypatch.setattr(toy, "vpsde_loss", real)
    resumed = toy.main(TINY_TOY + ["--checkpoint-every", "2", "--resume", "--out", str(tmp_path / "cut")])

    assert resumed["final_loss"] == full["final_loss"]
    for name in ("cld.pt", "vpsde.pt"):
        a, b = load_checkpoint(tmp_path / "full" / name), load_checkpoint(tmp_path / "cut" / name)
        assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for log in ("loss_cld.csv", "loss_vpsde.csv"):
        assert (tmp_path / "cut" / log).read_text() == (tmp_path / "full" / log).read_text()
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in full["results"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed["results"]]


def test_toy_resume_with_other_settings_is_refused_listing_them_unless_overridden(tmp_path, capsys):
    toy = load_example("toy_train")
    tmp_path.mkdir(exist_ok=True)
    orphan = tmp_path / ".checkpoint_cld.pt.k1ll3d.tmp"  # left by a kill during a checkpoint write
    orphan.write_bytes(b"half a checkpoint")
    toy.main(TINY_TOY + ["--checkpoint-every", "3", "--out", str(tmp_path)])
    assert not orphan.exists() and "k1ll3d" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        toy.main(TINY_TOY + ["--resume", "--lr", "0.01", "--seed", "3", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to resume" in err[0] and "checkpoint_cld.pt" in err[0]
    assert "lr: checkpoint 0.002, now 0.01" in err[0] and "seed: checkpoint 0, now 3" in err[0]
    result = toy.main(TINY_TOY + ["--resume", "--lr", "0.01", "--seed", "3", "--override-settings",
                                  "--out", str(tmp_path)])
    assert "--override-settings" in capsys.readouterr().err and result["settings"]["seed"] == 3


def test_load_toy_model_rebuilds_network_and_process_from_the_file(tmp_path):
    from splitdyn_cld.toy_models import load_toy_model, save_toy_model
    from splitdyn_cld.training import make_ema

    cld = CLD(mass=0.5, beta=2.0, gamma=0.1, eps_num=1e-5)
    model = cld_toy_score(cld, 2, width=8, blocks=2)
    model.net.out.reset_parameters()
    ema = make_ema(model, 0.9)
    ema.update_parameters(model)
    save_toy_model(tmp_path / "m.pt", "cld", model, {"mass": 0.5, "beta": 2.0, "gamma": 0.1, "eps_num": 1e-5},
                   ema=ema, step=7)
    loaded = load_toy_model(tmp_path / "m.pt")
    assert loaded.kind == "cld" and loaded.step == 7 and len(loaded.network.blocks) == 2
    assert loaded.process.mass == 0.5 and loaded.process.gamma == 0.1
    u, t = torch.randn(5, 2, 2), torch.full((5,), 0.3)
    torch.testing.assert_close(loaded.score(u, t), model.eval()(u, t), rtol=0, atol=0)
    # weights saved from a DDP-wrapped model (prefix "module.") load too
    wrapped = torch.nn.ModuleDict({"module": model})
    state = load_checkpoint(tmp_path / "m.pt")
    state["model"] = wrapped.state_dict()
    from splitdyn_cld.checkpoints import save_checkpoint

    save_checkpoint(tmp_path / "ddp.pt", state)
    raw = load_toy_model(tmp_path / "ddp.pt", use_ema=False)
    torch.testing.assert_close(raw.network.out.weight, model.net.out.weight, rtol=0, atol=0)


def test_toy_train_stops_on_a_nan_batch_with_the_step_and_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    toy = load_example("toy_train")
    real, calls = toy.get_toy_dataset, [0]

    def poisoned_dataset(name):
        sampler = real(name)

        def draw(n, generator):
            calls[0] += 1
            x = sampler(n, generator)
            return x * float("nan") if calls[0] == 4 else x

        return draw

    monkeypatch.setattr(toy, "get_toy_dataset", poisoned_dataset)
    with pytest.raises(SystemExit) as exit_info:
        toy.main(TINY_TOY + ["--checkpoint-every", "2", "--out", str(tmp_path)])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch at step 3" in err[0] and "checkpoint_cld.pt" in err[0]
    assert load_checkpoint(tmp_path / "checkpoint_cld.pt")["step"] == 2
