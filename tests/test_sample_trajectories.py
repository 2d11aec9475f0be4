"""Every sampler returns its trajectory (save_at), and the saved states are the states of an unsaved run with the
same generator: fixed-grid samplers exactly (SSCS with fuse=False: fusion draws the noise differently), the
adaptive probability-flow ODE up to its tolerance."""

import pytest
import torch

import splitdyn

from splitdyn.grids import make_grid
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD, sample


def exact_score():
    cld = CLD(mass=0.25, beta=4.0, gamma=0.04)
    oracle = DiffusedGaussianMixture(diamond_mixture(), cld, [[cld.gamma * cld.mass]])
    return cld, lambda u, t: oracle.component_score(u, t, [1]).to(u.dtype)


@pytest.mark.parametrize("sampler, grid", [("sscs", "uniform"), ("sscs", "quadratic"), ("em", "quadratic"),
                                           ("trotter-split", "uniform")])
def test_saved_states_equal_the_states_of_unsaved_runs_with_the_same_generator(sampler, grid):
    cld, score = exact_score()
    times = make_grid(grid, 12, cld.T, 1e-3)
    saved_at = [float(times[k]) for k in (3, 7, 12)]
    saved = sample(cld, score, (6, 2), 12, sampler, grid=grid, denoise=False, save_at=saved_at,
                   generator=torch.Generator().manual_seed(0))
    assert saved.saved_times == saved_at and len(saved.trajectory) == 3
    for k, state in zip((3, 7, 12), saved.trajectory):
        # the unsaved run over the first k steps of the same grid, same generator
        g = torch.Generator().manual_seed(0)
        u = cld.prior_sample((6, 2), generator=g)  # the saving run's prior draw; g continues past it
        part = splitdyn.sample(cld, score, u, times[:k + 1], step=sampler, denoise=False, fuse=False, generator=g)
        torch.testing.assert_close(state, part.state, rtol=0, atol=0)
    unsaved = sample(cld, score, (6, 2), 12, sampler, grid=grid, denoise=False, fuse=False,
                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(saved.state, unsaved.state, rtol=0, atol=0)


def test_saving_does_not_change_a_fixed_grid_sample_with_fuse_off():
    cld, score = exact_score()
    kwargs = dict(grid="quadratic", fuse=False)
    a = sample(cld, score, (5, 2), 10, "sscs", save_at="all", generator=torch.Generator().manual_seed(1), **kwargs)
    b = sample(cld, score, (5, 2), 10, "sscs", generator=torch.Generator().manual_seed(1), **kwargs)
    assert len(a.trajectory) == 11
    torch.testing.assert_close(a.state, b.state, rtol=0, atol=0)


def test_the_ode_trajectory_matches_solves_stopped_at_the_saved_times():
    cld, score = exact_score()
    u = cld.prior_sample((5, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    taus = [0.3, 0.8, 0.95]
    options = dict(eps=1e-2, denoise=False, rtol=1e-7, atol=1e-7)  # eps = 1e-2: cheap tight solves
    saved = sample(cld, score, u, None, "ode", save_at=taus, **options)
    assert saved.saved_times == pytest.approx(taus)
    for tau, state in zip(taus, saved.trajectory):
        part = sample(cld, score, u, None, "ode", **dict(options, eps=cld.T - tau))
        torch.testing.assert_close(state, part.state, rtol=0, atol=1e-5)
    unsaved = sample(cld, score, u, None, "ode", **options)
    torch.testing.assert_close(saved.state, unsaved.state, rtol=0, atol=1e-5)
