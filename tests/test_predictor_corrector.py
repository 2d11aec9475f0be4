"""Predictor-corrector sampling: Gaussian marginals kept with exact scores, CLD's corrector on v given x, NFE.

Monte Carlo checks compare sample moments with the exact Gaussian marginal; each tolerance is four standard
errors plus the bias the method is known to have (stated next to it), never a fitted number. The declared
weak orders are measured from exact moments in the order table (tests/order_cases_pc.py, tests/test_steps.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from splitdyn import (
    EulerMaruyama,
    LangevinCorrector,
    ReverseDiffusion,
    SAMPLERS,
    ReverseSDE,
    VESDE,
    VPSDE,
    integrate,
    pc_step,
    predictor_corrector,
    sample,
    uniform_grid,
)
from splitdyn_cld import CLD
from order_cases_pc import ExactGaussianScore

F64 = torch.float64
N, D = 20_000, 4  # samples and coordinates per sample


def exact_covariance(sde, S0, t):
    Phi, Q = sde.kernel(t)
    return Phi @ S0 @ Phi.T + Q


def draw(cov, n, d, generator):
    """n samples of N(0, cov (x) I_d), shape (n, k, d)."""
    L = torch.linalg.cholesky(cov)
    return torch.einsum("kj,njd->nkd", L, torch.randn(n, cov.shape[0], d, generator=generator, dtype=F64))


def pooled_covariance(u):
    x = u.transpose(1, 2).reshape(-1, u.shape[1])
    return x.T @ x / x.shape[0]


def assert_covariance_close(u, cov, bias=0.0):
    """Sample covariance (mean known to be 0) within 4 standard errors (+ a stated bias) of ``cov``."""
    sample_cov = pooled_covariance(u)
    m = u.shape[0] * u.shape[2]
    se = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov ** 2) / m)
    excess = (sample_cov - cov).abs() - (4 * se + bias)
    assert bool((excess <= 0).all()), f"sample {sample_cov.tolist()} vs exact {cov.tolist()} (se {se.tolist()})"
    assert u.mean(dim=(0, 2)).abs().max() <= 4 * cov.diagonal().max().sqrt() / math.sqrt(m)


def vp_case():
    vp = VPSDE()
    S0 = torch.tensor([[0.5]], dtype=F64)
    return vp, S0, ExactGaussianScore(vp, S0)


def ve_case():
    ve = VESDE()
    S0 = torch.tensor([[0.5]], dtype=F64)
    return ve, S0, ExactGaussianScore(ve, S0)


def cld_case():
    cld = CLD(gamma=0.04)
    S0 = torch.diag(torch.tensor([0.5, cld.gamma * cld.mass], dtype=F64))
    return cld, S0, ExactGaussianScore(cld, S0, [1])


def predictor_bias(sde, S0, reverse, predictor, grid):
    """|covariance error| of the predictor alone on ``grid``, from exact moments (no Monte Carlo)."""
    from splitdyn.integrate import plan_step

    k = S0.shape[0]
    mean, cov = torch.zeros(1, k, 1, dtype=F64), exact_covariance(sde, S0, sde.T)
    plan = plan_step(SAMPLERS[predictor](reverse), grid, mean, fuse=False)
    for i in range(len(grid) - 1):
        mean, cov = plan.gaussian_moments(mean, cov, i)
    return (cov - exact_covariance(sde, S0, sde.T - grid[-1])).abs()


@pytest.mark.parametrize("case, predictor, eps", [(vp_case, "em", 1e-3), (vp_case, "ancestral", 1e-3),
                                                  (ve_case, "em", 1e-3), (ve_case, "ancestral", 1e-3),
                                                  (cld_case, "em", 0.1), (cld_case, "sscs", 0.1)])
def test_pc_with_exact_scores_keeps_the_gaussian_marginal(case, predictor, eps, generator):
    sde, S0, score = case()
    n, snr = 200, 0.05
    reverse = ReverseSDE(sde, score, getattr(sde, "score_components", None))
    grid = uniform_grid(n, sde.T, eps).tolist()
    u0 = draw(exact_covariance(sde, S0, sde.T), N, D, generator)
    step = lambda r: pc_step(r, predictor=predictor, snr=snr)  # noqa: E731
    out = sample(sde, score, u0, grid, step=step, denoise=False, generator=generator)
    assert out.nfe == 2 * n
    # the stated biases: the predictor's own (exact moments, same grid) and the Langevin corrector's stationary
    # variance inflation, about 1 / (1 - r^2) - 1 ~ r^2 relative
    cov = exact_covariance(sde, S0, eps)
    bias = predictor_bias(sde, S0, reverse, predictor, grid) + snr ** 2 * cov.abs()
    assert_covariance_close(out.state, cov, bias=bias)


@pytest.mark.parametrize("per_sample, n, d", [(False, N, D), (True, 40, 2000)])
def test_cld_corrector_moves_the_velocity_given_the_position_towards_p_t(per_sample, n, d, generator):
    """From the exact x-marginal and a wrong velocity law, 200 corrector moves reach p_t(x, v): v's variance and
    its covariance with x; x itself is never touched. The per-sample rule needs many coordinates per sample
    (images): with few, ||s|| fluctuates and the state-dependent step size biases the chain."""
    cld, S0, score = cld_case()
    reverse = ReverseSDE(cld, score, score_components=[1])
    t = 0.4  # forward time; the corrector over reverse interval [T - t - h, T - t] targets t at its end
    cov = exact_covariance(cld, S0, t)
    u0 = draw(cov, n, d, generator)
    wrong_v = 0.5 * cov[1, 1].sqrt() * torch.randn(n, d, generator=generator, dtype=F64)  # no x-correlation
    u0 = torch.stack([u0[:, 0], wrong_v], dim=1)
    corrector = LangevinCorrector(reverse, snr=0.16, steps=200, per_sample=per_sample)
    out = integrate(corrector, u0, [cld.T - t - 0.01, cld.T - t], generator=generator)
    assert torch.equal(out.state[:, 0], u0[:, 0]) and out.nfe == 200
    # ULA's stationary bias: variance of v given x inflated by about r^2 = 0.0256 relative
    assert_covariance_close(out.state, cov, bias=0.16 ** 2 * cov[1, 1].item())


def test_ve_reverse_diffusion_predictor_is_song_et_al_s_update(generator):
    """VE: Phi = 1 and Q = sigma_t^2 - sigma_{t-h}^2, so u' = u + Q s + sqrt(Q) z exactly."""
    ve = VESDE()
    S0 = torch.tensor([[0.5]], dtype=F64)
    reverse = ReverseSDE(ve, ExactGaussianScore(ve, S0))
    u = torch.randn(8, 1, 3, generator=generator, dtype=F64)
    tau, h = 0.3, 0.05
    z = torch.randn(u.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    out = ReverseDiffusion(reverse)(u, tau, h, torch.Generator().manual_seed(7))
    t = ve.T - tau
    Q = (ve.sigma(t) ** 2 - ve.sigma(t - h) ** 2).item()
    expected = u + Q * ExactGaussianScore(ve, S0)(u, t) + math.sqrt(Q) * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_vp_reverse_diffusion_predictor_is_the_ddpm_ancestral_update(generator):
    vp, S0, score = vp_case()
    reverse = ReverseSDE(vp, score)
    u = torch.randn(8, 1, 3, generator=generator, dtype=F64)
    tau, h = 0.3, 0.05
    z = torch.randn(u.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    out = ReverseDiffusion(reverse)(u, tau, h, torch.Generator().manual_seed(7))
    t = vp.T - tau
    beta = 1.0 - (vp.alpha(t) / vp.alpha(t - h)).item() ** 2  # 1 - alpha_i, alpha_i = exp(-int beta)
    expected = (u + beta * score(u, t)) / math.sqrt(1.0 - beta) + math.sqrt(beta) * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_nfe_counts_predictor_and_every_corrector_move(generator):
    vp, S0, score = vp_case()
    u0 = draw(exact_covariance(vp, S0, vp.T), 16, 2, generator)
    out = sample(vp, score, u0, uniform_grid(10, vp.T, 1e-3), step=lambda r: pc_step(r, steps=3))
    assert out.nfe == 10 * (1 + 3) + 1  # plus the denoising step
    for name in ("pc-em-langevin", "pc-ancestral-langevin", "pc-sscs-langevin", "ancestral"):
        out = sample(vp, score, u0, uniform_grid(10, vp.T, 1e-3), step=name, denoise=False)
        assert out.nfe == (10 if name == "ancestral" else 20) and bool(torch.isfinite(out.state).all())


def test_snr_rule_per_batch_and_per_sample(generator):
    """epsilon = 2 (r ||z|| / ||s||)^2 with the batch means of the norms, or per sample."""
    vp, S0, score = vp_case()
    reverse = ReverseSDE(vp, score)
    u = torch.randn(6, 1, 5, generator=generator, dtype=F64)
    t = 0.5
    s = score(u, t)
    z = torch.randn(s.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    for per_sample in (False, True):
        corrector = LangevinCorrector(reverse, snr=0.2, per_sample=per_sample)
        out = corrector(u, vp.T - t - 0.1, 0.1, torch.Generator().manual_seed(3))
        zn, sn = z.flatten(1).norm(dim=1), s.flatten(1).norm(dim=1)
        eps = (2 * (0.2 * zn / sn) ** 2)[:, None, None] if per_sample else 2 * (0.2 * zn.mean() / sn.mean()) ** 2
        torch.testing.assert_close(out, u + eps * s + (2 * eps) ** 0.5 * z, rtol=1e-12, atol=1e-12)


def test_declared_orders_follow_the_step_size_rule():
    vp, S0, score = vp_case()
    reverse = ReverseSDE(vp, score)
    assert LangevinCorrector(reverse).weak_order == 0 and LangevinCorrector(reverse).snr == 0.16
    assert LangevinCorrector(reverse, rate=1.0).weak_order == 1
    assert predictor_corrector(EulerMaruyama(reverse), LangevinCorrector(reverse, rate=1.0)).weak_order == 1
    assert predictor_corrector(EulerMaruyama(reverse), LangevinCorrector(reverse, steps=2)).nfe == 3
    with pytest.raises(NotImplementedError, match="signal-to-noise"):
        LangevinCorrector(reverse).gaussian_moments(torch.zeros(1, 1, 1, dtype=F64), torch.eye(1, dtype=F64), 0.1, 0.1)


def test_bad_arguments_are_refused_by_name():
    vp, S0, score = vp_case()
    reverse = ReverseSDE(vp, score)
    with pytest.raises(ValueError, match="at most one step-size rule"):
        LangevinCorrector(reverse, snr=0.1, rate=1.0)
    with pytest.raises(ValueError, match="steps"):
        LangevinCorrector(reverse, steps=0)
    with pytest.raises(ValueError, match="snr"):
        LangevinCorrector(reverse, snr=-1.0)
    with pytest.raises(TypeError, match="per_sample"):
        LangevinCorrector(reverse, per_sample=1)
    with pytest.raises(ValueError, match="time_point"):
        LangevinCorrector(reverse, time_point=2.0)
    with pytest.raises(TypeError, match="reverse"):
        LangevinCorrector(vp)
    with pytest.raises(TypeError, match="predictor"):
        predictor_corrector(lambda u: u, LangevinCorrector(reverse))
    with pytest.raises(ValueError, match="predictor"):
        pc_step(reverse, predictor="heun")


def test_custom_predictor_corrector_tutorial_runs_and_counts_its_evaluations():
    """Smoke-sized run of docs/tutorials/custom_predictor_corrector.py (the page shows the full run)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "custom_predictor_corrector.py"
    spec = importlib.util.spec_from_file_location("custom_predictor_corrector_tutorial", path)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    _, _, reverse = tutorial.setup()
    assert {name: f(reverse).nfe for name, f in tutorial.samplers(reverse).items()} == {
        "SSCS": 1, "SSCS + Langevin": 2, "ancestral + Langevin": 2, "EM + 2 correctors": 3}
    results = tutorial.compare(nfe=13, samples=200)
    assert results["SSCS"][0] == 13 and results["SSCS + Langevin"][0] == 13 and results["EM + 2 correctors"][0] == 13
    assert all(torch.isfinite(torch.tensor(sw2)) for _, sw2 in results.values())
