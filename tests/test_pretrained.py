"""Pretrained-model adapters (:mod:`splitdyn.pretrained`) reproduce the original libraries' samplers.

The model is a tiny randomly initialised diffusers ``UNet2DModel`` written with ``save_pretrained`` and read back
with ``from_pretrained`` from a temporary folder (the real format, nothing downloaded). A random UNet's noise
prediction is unrelated to its input, so epsilon-prediction samples without clipping grow to |x| ~ 500; the
bounded cases (DDIM's clipping, sample and v prediction) are compared in absolute terms, the unbounded ones
relative to their size. diffusers computes its coefficients from a float32 ``alphas_cumprod`` (and DPM-Solver
upcasts to float32 inside ``step``), which bounds the agreement at float32 rounding; with the table in float64,
DDIM agrees to 1e-12.
"""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from splitdyn import SAMPLERS
from splitdyn.steps.unipc import UniPC
from splitdyn.pretrained import (
    DiscreteDiffusion,
    from_denoiser,
    from_diffusers,
    karras_sigmas,
    load_diffusers,
)

F64 = torch.float64


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline-style folder (unet/, scheduler/, model_index.json) written by diffusers itself."""
    root = tmp_path_factory.mktemp("tiny_ddpm")
    pipeline = diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000))
    pipeline.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def unet(saved):
    return diffusers.UNet2DModel.from_pretrained(saved / "unet", low_cpu_mem_usage=False).eval()


def noise(dtype=torch.float32):
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)


def ddim_loop(model, scheduler, x, use_clipped_model_output=False):
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x, eta=0.0,
                               use_clipped_model_output=use_clipped_model_output).prev_sample
    return x


def multistep_loop(model, scheduler, x):
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x).prev_sample
    return x


# -- the time map ------------------------------------------------------------------------------------------------
def test_time_map_puts_the_table_on_the_process_and_back():
    table = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    adapter = DiscreteDiffusion(lambda x, t: x, table)
    n = torch.arange(1000)
    t = adapter.time(n)
    # the process's alpha_bar at t_n is the table's entry, for a cosine table as for any other
    torch.testing.assert_close(adapter.process.alpha(t) ** 2, table.double(), rtol=1e-12, atol=0)
    assert torch.equal(adapter.timestep(t), n.double())  # exact integers at the grid times
    # between entries: linear in the log-SNR
    lam = 0.5 * (torch.log(table.double()) - torch.log1p(-table.double()))
    mid = adapter.process.time_from_log_snr(0.5 * (lam[500] + lam[501]))
    assert adapter.timestep(mid).item() == pytest.approx(500.5, abs=1e-9)
    with pytest.raises(ValueError, match="timesteps"):
        adapter.time([1000])
    with pytest.raises(ValueError, match="prediction_type"):
        DiscreteDiffusion(lambda x, t: x, table, prediction_type="eps")


# -- DDIM --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [
    {"clip_sample": True},  # DDIM's default clipping (with GLIDE's re-derived noise, see below)
    {"clip_sample": True, "prediction_type": "sample", "timestep_spacing": "trailing"},
    {"clip_sample": False, "prediction_type": "v_prediction"},
])
def test_ddim_equivalent_reproduces_diffusers_ddim_loop(unet, config):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, **config)
    scheduler.set_timesteps(10)
    reference = ddim_loop(unet, scheduler, noise(), use_clipped_model_output=True)
    ours = from_diffusers(unet, scheduler).sample(noise(), scheduler.timesteps, step="dpmpp-1")
    difference = (ours - reference).abs().max().item()
    assert difference < 1e-5, difference  # measured 8e-6, 2e-6, 1e-6
    assert reference.abs().max().item() < 10


def test_ddim_epsilon_unclipped_in_float64_agrees_to_rounding(unet):
    """With the same float64 table, DDIM and the first-order exponential integrator are the same formula."""
    model = tiny_unet_from(unet).double()
    for set_alpha_to_one in (True, False):
        scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False,
                                            set_alpha_to_one=set_alpha_to_one)
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=F64) if set_alpha_to_one else scheduler.alphas_cumprod[0]
        scheduler.set_timesteps(10)  # "leading": 900, 800, ..., 0
        reference = ddim_loop(model, scheduler, noise(F64))
        adapter = from_diffusers(model, scheduler)
        if set_alpha_to_one:  # the last step goes to alpha_bar = 1: the data prediction at timestep 0
            ours = adapter.sample(noise(F64), scheduler.timesteps, step="dpmpp-1")
        else:  # it goes to alpha_bar_0: the state at timestep 0 reached from timestep 0 itself, i.e. no move
            ours = adapter.sample(noise(F64), scheduler.timesteps, step="dpmpp-1", final="none")
        difference = (ours - reference).abs().max().item()
        assert difference < 1e-10 * reference.abs().max().item(), difference  # measured 6e-13 at |x| ~ 190


def tiny_unet_from(unet):
    model = tiny_unet()
    model.load_state_dict(unet.state_dict())
    return model.eval()


def test_ddim_default_clipping_is_not_a_score_step(unet):
    """diffusers' default (use_clipped_model_output=False) moves with the clipped x0 and the *unclipped* noise:
    no single score gives that step, so the adapter matches the consistent (GLIDE) form instead; this pins the
    difference to that choice."""
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=True)
    scheduler.set_timesteps(10)
    glide = ddim_loop(unet, scheduler, noise(), use_clipped_model_output=True)
    default = ddim_loop(unet, scheduler, noise(), use_clipped_model_output=False)
    ours = from_diffusers(unet, scheduler).sample(noise(), scheduler.timesteps, step="dpmpp-1")
    assert (ours - glide).abs().max().item() < 1e-5
    assert (default - glide).abs().max().item() > 0.1


# -- DPM-Solver++ and UniPC --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction", "epsilon"])
def test_dpm_solver_2m_reproduces_diffusers(unet, prediction_type):
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2, solver_type="heun",
                                                      prediction_type=prediction_type)
    scheduler.set_timesteps(15)
    reference = multistep_loop(unet, scheduler, noise())
    ours = from_diffusers(unet, scheduler).sample(noise(), scheduler.timesteps, step="dpmpp-2m-heun")
    difference = (ours - reference).abs().max().item()
    scale = max(1.0, reference.abs().max().item())
    assert difference < 1e-5 * scale, (difference, scale)  # measured 2e-6 (sample, v); 3e-4 at |x| ~ 500 (eps)


def test_dpm_solver_2m_midpoint_reproduces_diffusers_default(unet):
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, prediction_type="sample")
    scheduler.set_timesteps(15)
    reference = multistep_loop(unet, scheduler, noise())
    ours = from_diffusers(unet, scheduler).sample(noise(), scheduler.timesteps, step="dpmpp-2m-midpoint")
    assert (ours - reference).abs().max().item() < 1e-5


def dpm_3m_by_hand(model, scheduler, x, d2_factor):
    """DPM-Solver++(3M) on the scheduler's timesteps in float64, written from Lu et al. (2022): the last term
    is d2_factor * alpha_t * ((e^{-h} - 1 + h)/h^2 - 1/2) * D2 with D2 = (D1_0 - D1_1)/(r0 + r1). diffusers
    (and the reference code) use d2_factor = 1; the exact integral of the quadratic interpolant needs 2
    (D2 is h^2 x0''/2, the integral weighs h^2 x0'')."""
    abar = scheduler.alphas_cumprod.double()
    steps = scheduler.timesteps.tolist()
    history, lams = [], []
    with torch.no_grad():
        for i, n in enumerate(steps):
            a_t, s_t = abar[n].sqrt(), (1 - abar[n]).sqrt()
            m = (x - s_t * model(x.float(), n).sample.double()) / a_t if scheduler.config.prediction_type == "epsilon" \
                else model(x.float(), n).sample.double()
            history.insert(0, m)
            lams.insert(0, torch.log(a_t / s_t))
            if i == len(steps) - 1:
                return m  # the final step to sigma = 0 is first order: the data prediction
            a_s, s_s = abar[steps[i + 1]].sqrt(), (1 - abar[steps[i + 1]]).sqrt()
            h = torch.log(a_s / s_s) - lams[0]
            phi1 = torch.expm1(-h)
            x_next = (s_s / s_t) * x - a_s * phi1 * m
            q = min(3, i + 1)
            if q >= 2:
                r0 = (lams[0] - lams[1]) / h
                D1_0 = (history[0] - history[1]) / r0
                D1 = D1_0
                if q == 3:
                    r1 = (lams[1] - lams[2]) / h
                    D1_1 = (history[1] - history[2]) / r1
                    D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
                    D2 = (D1_0 - D1_1) / (r0 + r1)
                    x_next = x_next - d2_factor * a_s * ((phi1 + h) / h**2 - 0.5) * D2
                x_next = x_next + a_s * (phi1 / h + 1) * D1
            x = x_next


def test_dpm_solver_3m_differs_from_diffusers_by_one_coefficient(unet):
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=3, solver_type="heun",
                                                      prediction_type="sample")
    scheduler.set_timesteps(15)
    reference = multistep_loop(unet, scheduler, noise())
    ours = from_diffusers(unet, scheduler).sample(noise(), scheduler.timesteps, step="dpmpp-3m")
    theirs_by_hand = dpm_3m_by_hand(unet, scheduler, noise(F64), d2_factor=1.0)
    exact_by_hand = dpm_3m_by_hand(unet, scheduler, noise(F64), d2_factor=2.0)
    assert (theirs_by_hand.float() - reference).abs().max().item() < 1e-5  # the hand loop is diffusers' 3M
    assert (exact_by_hand.float() - ours).abs().max().item() < 1e-5  # ... and with the exact term it is ours
    assert (ours - reference).abs().max().item() > 1e-3  # the two 3M forms do differ (8e-2 measured)


@pytest.mark.parametrize("variant, order", [("bh2", 2)])
def test_unipc_reproduces_diffusers(unet, variant, order):
    """diffusers' default UniPC (bh2, order 2, data prediction) on a pretrained model, down to sigma = 0.

    Orders 1-3 and both B(h) variants are checked against diffusers on grids that end at a positive sigma in
    tests/test_unipc.py. On the adapter's timesteps diffusers' last step to sigma = 0 differs at order 3 (its
    predictor still extrapolates the data prediction through earlier model outputs there, 0.28 measured) and
    returns NaN for bh1 (-inf * 0); the adapter's last step is the model's data prediction, as DDIM's is.
    """
    scheduler = diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, solver_type=variant, solver_order=order,
                                                  prediction_type="sample")
    scheduler.set_timesteps(15)
    reference = multistep_loop(unet, scheduler, noise())
    # diffusers' UniPC interpolates in the log-SNR (the named samplers use polynomials in t, for any process)
    step = partial(UniPC, order=order, variant=variant, interpolation="log_snr")
    ours = from_diffusers(unet, scheduler).sample(noise(), scheduler.timesteps, step=step)
    assert (ours - reference).abs().max().item() < 1e-5  # 2.3e-6 measured


# -- loading ------------------------------------------------------------------------------------------------------
def test_load_diffusers_reads_a_pipeline_folder_and_a_model_folder(saved, unet, tmp_path):
    adapter = load_diffusers(saved)
    assert adapter.prediction_type == "epsilon" and adapter.clip_sample == 1.0  # DDPMScheduler's defaults
    torch.testing.assert_close(adapter.alphas_cumprod, diffusers.DDPMScheduler().alphas_cumprod.double())
    x = noise().unsqueeze(1)
    torch.testing.assert_close(adapter.score(x, 0.5), from_diffusers(unet, diffusers.DDPMScheduler()).score(x, 0.5))
    # a model folder with a scheduler config beside it
    unet.save_pretrained(tmp_path)
    diffusers.DDIMScheduler(prediction_type="v_prediction").save_config(tmp_path)
    assert load_diffusers(tmp_path).prediction_type == "v_prediction"
    with pytest.raises(FileNotFoundError, match="folder"):
        load_diffusers(tmp_path / "missing")


# -- k-diffusion / EDM denoisers -----------------------------------------------------------------------------------
def edm_denoiser(unet):
    """An EDM-preconditioned denoiser around the tiny UNet (Karras et al. 2022, Table 1), sigma_data = 0.5."""
    sd = 0.5

    def D(x, sigma):
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        c_in, c_noise = 1 / (s**2 + sd**2).sqrt(), 0.25 * sigma.log()
        return c_skip * x + c_out * unet(c_in * x, c_noise).sample

    return D


def karras_loop(D, x, sigmas, heun):
    """k-diffusion's sample_euler / sample_heun written out: dx/dsigma = (x - D(x, sigma))/sigma, the last step
    to sigma = 0 by Euler (which is D(x, sigma_min))."""
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = (x - D(x, s.expand(x.shape[0]).to(x.dtype))) / s
            x_euler = x + (s_next - s) * d
            if not heun or s_next == 0:
                x = x_euler
            else:
                d2 = (x_euler - D(x_euler, s_next.expand(x.shape[0]).to(x.dtype))) / s_next
                x = x + (s_next - s) * 0.5 * (d + d2)
    return x


@pytest.mark.parametrize("step, heun", [("dpmpp-1", False), ("heun", True)])
def test_ve_denoiser_reproduces_karras_euler_and_heun(unet, step, heun):
    D = edm_denoiser(unet.double())
    try:
        sigmas = karras_sigmas(12, 0.002, 80.0)
        x_T = noise(F64) * 80.0
        reference = karras_loop(D, x_T.clone(), sigmas, heun)
        adapter = from_denoiser(D, sigma_max=80.0)
        ours = adapter.sample(x_T.clone(), sigmas, step=step)
    finally:
        unet.float()
    difference = (ours - reference).abs().max().item()
    assert difference < 1e-8, difference
    assert reference.abs().max().item() < 50


# -- the example script ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, sampler, calls", [("timesteps", "dpmpp-2m", 5), ("logsnr", "heun", 11)])
def test_sample_pretrained_script_writes_an_image_grid(saved, tmp_path, capsys, grid, sampler, calls):
    """5 multistep steps: 4 moves and the final data prediction; Heun: 2 per step and the final one."""
    import json

    from _scripts import load_example

    script = load_example("sample_pretrained")
    out = tmp_path / "out"
    code = script.main([str(saved), "--sampler", sampler, "--grid", grid, "--steps", "5", "--num-samples", "3",
                        "--batch-size", "2", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 3 and summary["model_calls_per_batch"] == calls
    assert (out / "grid.png").stat().st_size > 0
    import numpy as np

    with np.load(out / "samples.npz") as f:
        assert f["images"].shape == (3, 8, 8, 3) and f["images"].dtype == np.uint8
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary


def test_the_pretrained_page_examples_run():
    import doctest
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "pretrained.rst"
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_bad_input_to_the_adapters_is_named():
    table = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100), 0)
    adapter = DiscreteDiffusion(lambda x, t: x, table)
    edm = from_denoiser(lambda x, s: x, sigma_max=80.0)
    x = torch.zeros(2, 1, 4, 4)
    cases = [
        (lambda: DiscreteDiffusion(lambda x, t: x, table.flip(0)), ValueError, "alphas_cumprod"),
        (lambda: DiscreteDiffusion(lambda x, t: x, torch.tensor([1.0, 0.5])), ValueError, "alphas_cumprod"),
        (lambda: DiscreteDiffusion("model", table), TypeError, "model"),
        (lambda: DiscreteDiffusion(lambda x, t: x, table, clip_sample=-1.0), ValueError, "clip_sample"),
        (lambda: from_diffusers(lambda x, t: x), ValueError, "alphas_cumprod"),
        (lambda: from_diffusers(lambda x, t: x, object()), TypeError, "scheduler"),
        (lambda: adapter.time([-1]), ValueError, "timesteps"),
        (lambda: adapter.time([2.5]), ValueError, "timesteps"),
        (lambda: adapter.grid([10, 20]), ValueError, "timesteps"),
        (lambda: adapter.sample(x, [99, 50], final="x0"), ValueError, "final"),
        (lambda: adapter.sample(x, [99, 50], denoise=True), ValueError, "denoise"),
        (lambda: adapter.sample(x), ValueError, "timesteps"),
        (lambda: adapter.sample("noise", [99, 50]), TypeError, "initial"),
        (lambda: DiscreteDiffusion(lambda x, t: x[:1], table).score(x, 0.5), ValueError, "shape"),
        (lambda: karras_sigmas(1), ValueError, "n"),
        (lambda: karras_sigmas(5, sigma_min=90.0), ValueError, "sigma_min"),
        (lambda: edm.grid([70.0, 1.0]), ValueError, "sigma_max"),
        (lambda: edm.grid([80.0, 1.0, 0.0]), ValueError, "sigmas"),
    ]
    for call, error, word in cases:
        with pytest.raises(error, match=word):
            call()
