"""The CLD training switches of the ablations (toy_train.py, train_images.py) change what they should: DSM draws
v0 ~ N(0, gamma M) and uses the DSM ell_t, the likelihood weighting is Gamma beta, beta = 8 sqrt(M) on request,
the mixed score can be switched off, and every switch is run-defining for the checkpoint guards."""

import math

import pytest
import torch

from _scripts import load_example
from splitdyn_cld import CLD, ell, loss_weight
from splitdyn_cld.image_training import TrainSettings
from splitdyn_cld.image_training.settings import RUN_DEFINING_SETTINGS
from splitdyn_cld.toy_models import load_toy_model

SWITCHES = ("objective", "mixed", "weighting", "mass", "gamma", "beta", "eps_num")


class Recorder(torch.nn.Module):
    """A zero velocity score that keeps the states it was called with."""

    def forward(self, u, t):
        self.u = u.detach().clone()
        return torch.zeros_like(u[:, 1:2])


def test_dsm_draws_v0_from_n_0_gamma_m_and_hsm_does_not():
    toy = load_example("toy_train")
    cld = CLD(mass=0.25, gamma=1.0, eps_num=0.0)
    x0 = torch.zeros(20_000, 2, dtype=torch.float64)
    noise = torch.zeros(20_000, 2, 2, dtype=torch.float64)  # no kernel noise: what is left of v_t is v0's
    for objective, variance in (("dsm", cld.gamma * cld.mass), ("hsm", 0.0)):
        score = Recorder()
        toy.cld_objective(objective)(score, x0, cld, t=1e-8, noise=noise, generator=torch.Generator().manual_seed(0))
        assert score.u[:, 1].var().item() == pytest.approx(variance, rel=0.05, abs=1e-12), objective


@pytest.mark.parametrize("objective", ["hsm", "dsm"])
def test_the_likelihood_weighting_is_gamma_beta_with_the_objectives_ell(objective):
    toy = load_example("toy_train")
    cld = CLD(mass=0.25, beta=4.0, gamma=0.04)
    t = torch.tensor([1e-3, 0.1, 0.7], dtype=torch.float64)
    noise = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = toy.cld_objective(objective, "likelihood")(Recorder(), torch.zeros(3, 2, dtype=torch.float64), cld, t=t,
                                                      noise=noise, reduction="none")
    # a zero score leaves lambda(t) ||ell_t eps_v||^2 with lambda = Gamma beta and the objective's ell_t
    expected = cld.friction * 4.0 * ell(cld, t, objective) ** 2 * noise[:, 1].pow(2).sum(1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss_weight(cld, t, "likelihood"), torch.full_like(t, cld.friction * 4.0))


def test_beta_8sqrtm_ties_the_rate_to_the_mass_in_both_scripts():
    toy = load_example("toy_train")
    args = toy.parse_args(["--mass", "0.0625", "--beta", "8sqrtM"])
    process = toy.cld_process_settings(args)
    assert process["beta"] == pytest.approx(2.0) and process["friction"] == pytest.approx(0.5)
    images = load_example("train_images")
    assert images.settings_from_args(["--config", "tiny", "--mass", "0.0625", "--beta", "8sqrtM"]).beta == 2.0
    assert images.settings_from_args(["--config", "tiny", "--beta", "8sqrtm"]).beta == pytest.approx(4.0)


def test_a_bad_switch_value_is_refused_naming_it(capsys):
    toy = load_example("toy_train")
    for argv, name in ((["--beta", "fast"], "--beta"), (["--objective", "ism"], "--objective"),
                       (["--gamma", "0"], "--gamma")):
        with pytest.raises(SystemExit) as exit_info:
            toy.parse_args(argv)
        assert exit_info.value.code == 2 and name in capsys.readouterr().err
    with pytest.raises(ValueError, match="objective"):
        TrainSettings(objective="ism")


def test_every_switch_is_run_defining():
    toy = load_example("toy_train")
    assert set(SWITCHES) <= set(toy.RUN_SETTINGS)
    assert set(SWITCHES) <= set(RUN_DEFINING_SETTINGS)


def test_the_switches_reach_the_saved_model_and_guard_the_resume(tmp_path, capsys):
    toy = load_example("toy_train")
    common = ["--steps", "4", "--batch-size", "16", "--eval-samples", "40", "--nll-samples", "0", "--sample-steps",
              "3", "--width", "8", "--blocks", "1", "--checkpoint-every", "2", "--no-progress", "--out", str(tmp_path)]
    toy.main(common + ["--objective", "dsm", "--no-mixed", "--weighting", "likelihood", "--mass", "1",
                       "--beta", "8sqrtM", "--gamma", "0.4"])
    model = load_toy_model(tmp_path / "cld.pt")
    assert model.score.kind == "dsm" and not model.score.mixed
    assert (model.process.mass, model.process.friction, model.process.gamma) == (1.0, 2.0, 0.4)
    assert model.process.beta(torch.tensor(0.5)).item() == 8.0
    with pytest.raises(SystemExit) as exit_info:
        toy.main(common + ["--resume", "--objective", "hsm", "--no-mixed", "--weighting", "likelihood", "--mass", "1",
                           "--beta", "8sqrtM", "--gamma", "0.4"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "objective" in err and "refusing to resume" in err


def test_the_image_step_trains_the_chosen_objective():
    from splitdyn_cld import score_matching_objective
    from splitdyn_cld.image_training import train_step

    cld = CLD(mass=0.25, gamma=0.04)
    net = torch.nn.Conv2d(2, 1, 1)
    score = lambda u, t: net(u[:, :, 0])[:, :, None]  # noqa: E731 - (B, 2, 1, H, W) -> (B, 1, 1, H, W)
    x0 = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for objective in ("hsm", "dsm"):
        expected = score_matching_objective(score, x0, cld, kind=objective, generator=torch.Generator().manual_seed(3))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        stats = train_step(score, optimizer, x0, cld, objective=objective, parameters=list(net.parameters()),
                           generator=torch.Generator().manual_seed(3))
        assert stats["loss"] == pytest.approx(expected.item(), rel=1e-6), objective
    assert math.isfinite(stats["grad_norm"])
