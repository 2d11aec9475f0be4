"""One entry point: the CLD preset forwards every argument of ``splitdyn.sample``; ``check_grid`` takes the grid
objects ``sample`` takes; fusion is a property of the intervals a plan is given, not a loop special case."""

from __future__ import annotations

import pytest
import torch

import splitdyn
from splitdyn import QuadraticGrid, UniformGrid
from splitdyn.grids import check_grid
from splitdyn.integrate import plan_step
from splitdyn_cld import CLD
from splitdyn_cld import sample as cld_sample

F64 = torch.float64
CLD_ = CLD()


def velocity(u, t):
    return -u[:, 1:] / CLD_.mass


def test_the_cld_preset_equals_splitdyn_sample_with_every_forwarded_argument():
    for options in (dict(differentiable=True), dict(divergence_factor=None), dict(fuse=False),
                    dict(denoise=False), dict(score_components=[1])):
        a = cld_sample(CLD_, velocity, (8, 2), 5, "sscs", grid="quadratic", dtype=F64,
                       generator=torch.Generator().manual_seed(1), **options)
        b = splitdyn.sample(CLD_, velocity, (8, 2), QuadraticGrid(5, eps=1e-3), step="sscs", dtype=F64,
                            generator=torch.Generator().manual_seed(1), **options)
        assert torch.equal(a.state, b.state) and a.nfe == b.nfe, options
    u = torch.zeros(4, 2, 2, dtype=F64, requires_grad=True)
    out = cld_sample(CLD_, velocity, u, 3, "em", dtype=F64, differentiable=True)
    out.state.sum().backward()
    assert u.grad is not None


def test_the_cld_preset_takes_grid_objects_and_refuses_unknown_arguments():
    a = cld_sample(CLD_, velocity, (8, 2), None, "em", grid=UniformGrid(4), dtype=F64,
                   generator=torch.Generator().manual_seed(0))
    b = cld_sample(CLD_, velocity, (8, 2), 4, "em", grid="uniform", dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.state, b.state)
    with pytest.raises(TypeError, match="bogus"):
        cld_sample(CLD_, velocity, (8, 2), 4, "em", bogus=1)
    with pytest.raises(ValueError, match="n_steps must be None with a grid object"):
        cld_sample(CLD_, velocity, (8, 2), 4, "em", grid=UniformGrid(4))


def test_check_grid_accepts_grid_objects_with_the_horizon():
    assert check_grid(UniformGrid(4, eps=0.0), T=2.0) == [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(TypeError, match="horizon T"):
        check_grid(UniformGrid(4))


def test_integrate_has_one_way_to_save_states():
    step = splitdyn.EulerMaruyama(CLD_.reverse(velocity))
    u = torch.zeros(2, 2, 1, dtype=F64)
    out = splitdyn.integrate(step, u, [0.0, 0.1, 0.2], save_at="all")
    assert len(out.trajectory) == 3
    with pytest.raises(TypeError, match="save_trajectory"):
        splitdyn.integrate(step, u, [0.0, 0.1, 0.2], save_trajectory=True)


def test_fusion_is_decided_by_the_intervals_not_by_the_loop():
    step = splitdyn.split_step(CLD_.reverse(velocity))
    like = torch.zeros(2, 2, 1, dtype=F64)
    times = [0.0, 0.1, 0.2, 0.3]
    assert plan_step(step, times, like).fused is not None
    assert plan_step(step, times, like, fuse=False).fused is None
    intervals = splitdyn.Intervals.from_grid(times, fusable=True)
    assert step.plan(intervals, like).fused is not None
    assert step.plan(intervals.without_fusion(), like).fused is None
