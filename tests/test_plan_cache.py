"""Plan once, sample many: repeated ``sample`` calls with the same setup build one plan and give exactly what an
uncached call gives for the same generator; changing the grid, shape, dtype, step or score builds a new one."""

from __future__ import annotations

import pytest
import torch

import splitdyn
from splitdyn import PlanCache, QuadraticGrid, UniformGrid
from splitdyn_cld import CLD

F64 = torch.float64
CLD_ = CLD()


def velocity(u, t):
    return -u[:, 1:] / CLD_.mass


def run(cache, step="sscs", grid=None, shape=(8, 2), dtype=F64, score=velocity, seed=0, **options):
    return splitdyn.sample(CLD_, score, shape, grid or UniformGrid(5), step=step, dtype=dtype, cache=cache,
                           generator=torch.Generator().manual_seed(seed), **options)


@pytest.mark.parametrize("step", ["em", "sscs", "ei-ode-2", "pc-sscs-langevin"])
def test_repeated_calls_build_one_plan_and_equal_the_uncached_path(step):
    cache = PlanCache()
    outs = [run(cache, step, seed=s) for s in (0, 1, 0)]
    assert cache.builds == 1 and len(cache) == 1
    fresh = run(False, step, seed=0)
    assert torch.equal(outs[0].state, fresh.state) and torch.equal(outs[2].state, fresh.state)
    assert outs[0].nfe == outs[2].nfe == fresh.nfe
    assert not torch.equal(outs[1].state, outs[0].state)


def test_a_changed_setup_builds_a_new_plan():
    cache = PlanCache()
    run(cache)
    for options in (dict(grid=QuadraticGrid(5)), dict(shape=(4, 2)), dict(shape=(8, 3)), dict(dtype=torch.float32),
                    dict(step="em"), dict(score=lambda u, t: -u[:, 1:]), dict(callback=lambda i, tau, u: None)):
        before = cache.builds
        run(cache, **options)
        assert cache.builds == before + 1, options
    run(cache)  # the first setup again: still cached
    assert cache.builds == 8


def test_the_cache_is_bounded_and_can_be_cleared():
    cache = PlanCache(maxsize=2)
    for n in (3, 4, 5):
        run(cache, grid=UniformGrid(n))
    assert len(cache) == 2
    run(cache, grid=UniformGrid(3))  # evicted: built again
    assert cache.builds == 4
    cache.clear()
    assert len(cache) == 0
    run(cache, grid=UniformGrid(3))
    assert cache.builds == 5
    splitdyn.SAMPLE_PLANS.clear()
    run(True)
    assert len(splitdyn.SAMPLE_PLANS) == 1
    splitdyn.SAMPLE_PLANS.clear()


def test_reference_solvers_and_factories_are_not_cached_and_bad_caches_are_refused():
    cache = PlanCache()
    run(cache, step="torchsde-euler")
    run(cache, step=lambda reverse: splitdyn.EulerMaruyama(reverse))
    assert len(cache) == 0
    with pytest.raises(TypeError, match="cache"):
        run("yes")
    with pytest.raises(ValueError, match="maxsize"):
        PlanCache(maxsize=-1)
