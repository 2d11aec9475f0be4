"""The grid optimiser (:mod:`splitdyn.grid_search`) and the information log-SNR (:class:`InformationLogSNR`).

Oracles: the discrepancy a search reports is recomputed independently (:func:`grid_discrepancy`); on a
Gaussian data law (exact linear score, so the sampler is an affine map) a two-step grid has one free point,
and the search must reach the minimum of a brute-force scan over it; for a one-component process the
information log-SNR equals the closed-form log(alpha / sigma).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from splitdyn import VPSDE
from splitdyn.grid_search import candidate_grids, grid_discrepancy, search_grid
from splitdyn.grids import GivenGrid, InformationLogSNR, LogSNRGrid, make_grid
from splitdyn.oracles import DiffusedGaussianMixture, GaussianMixture, diamond_mixture
from splitdyn_cld import CLD

F64 = torch.float64
EPS = 1e-3


def gaussian_vp():
    vp = VPSDE()
    data = GaussianMixture(torch.tensor([[0.5]], dtype=F64), torch.tensor([0.3], dtype=F64))
    return vp, DiffusedGaussianMixture(data, vp).score_fn()


def diamond_vp():
    vp = VPSDE()
    return vp, DiffusedGaussianMixture(diamond_mixture(), vp).score_fn()


SMALL = dict(batch=64, reference_steps=48, sweeps=2, evaluations_per_point=5, seed=3)


def test_search_improves_its_own_objective_and_reports_it_exactly():
    vp, score = diamond_vp()
    result = search_grid(vp, score, "ei-ode-2", 5, event_shape=(2,), **SMALL)
    best_candidate = min(result.candidates.values())
    assert result.discrepancy == result.history[-1] and result.history[0] == best_candidate
    assert result.discrepancy < 0.9 * best_candidate  # a real improvement over every closed-form grid
    assert all(b <= a for a, b in zip(result.history, result.history[1:]))
    # recomputed from scratch on the same calibration batch and reference
    initial = vp.prior_sample((SMALL["batch"], 2), generator=torch.Generator().manual_seed(SMALL["seed"]), dtype=F64)
    from splitdyn.grids import PowerGrid

    again = grid_discrepancy(vp, score, "ei-ode-2", result.grid, PowerGrid(48, 3.0, EPS), initial=initial,
                             seed=SMALL["seed"])
    assert again == pytest.approx(result.discrepancy, rel=1e-12)
    # and the improvement is not an artefact of the calibration batch: it holds on fresh prior draws
    fresh = vp.prior_sample((400, 2), generator=torch.Generator().manual_seed(99), dtype=F64)
    start = candidate_grids(vp, result.steps, EPS)[result.start]
    on_fresh = grid_discrepancy(vp, score, "ei-ode-2", [result.grid, start], PowerGrid(48, 3.0, EPS),
                                initial=fresh, seed=99)
    assert on_fresh[0] < on_fresh[1]


def test_search_is_deterministic_for_a_seed_and_returns_a_valid_saveable_grid():
    vp, score = diamond_vp()
    a = search_grid(vp, score, "ei-ode-1", 4, event_shape=(2,), denoise=True, **SMALL)
    b = search_grid(vp, score, "ei-ode-1", 4, event_shape=(2,), denoise=True, **SMALL)
    assert torch.equal(a.grid.times, b.grid.times) and a.discrepancy == b.discrepancy
    tau = a.grid.reverse_times(1.0)
    assert a.steps == 3 and a.nfe == 4 and tau.shape == (4,)  # 3 steps + the denoising evaluation
    assert tau[0].item() == 0.0 and tau[-1].item() == pytest.approx(1.0 - EPS, abs=1e-15)
    assert bool((tau[1:] > tau[:-1]).all())
    restored = GivenGrid.from_dict(json.loads(json.dumps(a.grid.to_dict())))
    assert torch.equal(restored.times, a.grid.times) and restored.T == a.grid.T and restored.eps == a.grid.eps
    c = search_grid(vp, score, "ei-ode-1", 4, event_shape=(2,), denoise=True, **{**SMALL, "seed": 4})
    assert c.discrepancy != a.discrepancy  # the seed fixes the calibration batch


def test_score_free_final_step_costs_no_evaluation():
    cld = CLD()
    score = DiffusedGaussianMixture(diamond_mixture(), cld, cld.initial_covariance()).score_fn([1])
    result = search_grid(cld, score, "ei-ode-2", 3, event_shape=(2,), denoise="score-free",
                         **{**SMALL, "sweeps": 1, "evaluations_per_point": 3, "reference_steps": 24})
    assert result.steps == 3 and result.nfe == 3
    with pytest.raises(ValueError, match="denoise"):
        search_grid(cld, score, "ei-ode-2", 3, event_shape=(2,), denoise="yes", **SMALL)


def test_search_refuses_budgets_below_what_the_sampler_needs():
    vp, score = diamond_vp()
    with pytest.raises(ValueError, match="nfe = 1 is below what the sampler needs.*at least 2"):
        search_grid(vp, score, "ei-ode-2", 1, event_shape=(2,), denoise=True, **SMALL)
    with pytest.raises(ValueError, match="nfe = 2 is below.*2 evaluation.*at least 3"):
        search_grid(vp, score, "heun", 2, event_shape=(2,), denoise=True, **SMALL)
    with pytest.raises(ValueError, match="nfe"):
        search_grid(vp, score, "ei-ode-2", 0, event_shape=(2,), **SMALL)
    with pytest.raises(ValueError, match="eps"):
        search_grid(vp, score, "ei-ode-2", 5, event_shape=(2,), eps=2.0, **SMALL)
    with pytest.raises(ValueError, match="cannot share a Brownian path"):
        search_grid(vp, score, "ei-sde-1", 3, event_shape=(2,), **SMALL)


def test_two_step_grid_on_a_gaussian_matches_a_brute_force_scan():
    """Gaussian data: the exact score is linear, so the sampler is an affine map of u_T and D is a smooth
    function of the one interior time. The search (golden section in log t inside [eps, T]) must reach the
    minimum of a dense scan of the same objective, and land next to its minimiser."""
    vp, score = gaussian_vp()
    kwargs = dict(batch=64, reference_steps=128, seed=1)
    result = search_grid(vp, score, "ei-ode-1", 2, event_shape=(1,), sweeps=1, evaluations_per_point=24, **kwargs)
    initial = vp.prior_sample((64, 1), generator=torch.Generator().manual_seed(1), dtype=F64)
    from splitdyn.grids import PowerGrid

    reference = PowerGrid(128, 3.0, EPS).reverse_times(1.0)
    lo, hi = math.log(EPS), math.log(1.0)
    points = [math.exp(lo + r * (hi - lo)) for r in torch.linspace(0.02, 0.98, 161, dtype=F64).tolist()]
    values = grid_discrepancy(vp, score, "ei-ode-1", [[0.0, 1.0 - t1, 1.0 - EPS] for t1 in points], reference,
                              initial=initial, seed=1)
    scan = list(zip(values, points))
    best, t_best = min(scan)
    assert best < 0.5 * max(v for v, _ in scan)  # the interior point matters
    assert result.discrepancy <= best * (1 + 1e-3)
    found = 1.0 - result.grid.times[1].item()
    assert abs(math.log(found) - math.log(t_best)) < 2 * (hi - lo) * 0.96 / 160


def test_information_log_snr_is_the_log_snr_for_vp_and_decreasing_for_cld():
    vp = VPSDE()
    info = InformationLogSNR(vp)
    t = torch.tensor([1e-3, 0.05, 0.3, 0.7, 1.0], dtype=F64)
    assert torch.allclose(info.log_snr(t), vp.log_snr(t), rtol=0, atol=1e-12)
    assert torch.allclose(info.time_from_log_snr(vp.log_snr(t)), t, rtol=1e-12, atol=0)
    cld = CLD()
    lam = InformationLogSNR(cld).log_snr(torch.logspace(-5, 0, 60, dtype=F64))
    assert bool((lam[1:] < lam[:-1]).all())
    # Sigma_xx ~ t^3 near 0 for CLD: the information about x_0 grows like t^-3, lambda like -1.5 log t
    small = InformationLogSNR(cld).log_snr(torch.tensor([1e-5, 1e-4], dtype=F64))
    assert (small[0] - small[1]).item() / math.log(10) == pytest.approx(1.5, rel=0.02)
    grid = make_grid("logsnr", 8, 1.0, EPS, process=cld)  # any linear SDE gets a log-SNR grid
    direct = LogSNRGrid(8, InformationLogSNR(cld), EPS).reverse_times(1.0)
    assert torch.equal(grid, direct)
    ends = InformationLogSNR(cld).log_snr(torch.tensor([1.0, EPS], dtype=F64))
    steps = InformationLogSNR(cld).log_snr(1.0 - grid)
    assert torch.allclose(steps[1:] - steps[:-1], torch.full((8,), ((ends[1] - ends[0]) / 8).item(), dtype=F64),
                          rtol=1e-9)


def test_given_grid_from_dict_refuses_other_data():
    with pytest.raises(ValueError, match="reverse_times"):
        GivenGrid.from_dict({"times": [0.0, 1.0]})
