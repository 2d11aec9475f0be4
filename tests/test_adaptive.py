"""The adaptive-step sampler: its tolerance against a fine-grid reference on the same path, NFE bookkeeping.

The reference is Euler-Maruyama with 4096 uniform steps on the same torchsde ``BrownianInterval`` (strong
error about 1e-3, below every tolerance tested). The claim checked: with the default error-per-unit-step
criterion the global error, in the controller's own weighted RMS norm, stays below the requested tolerance
(``rtol = atol = tol``), and it falls in proportion to the tolerance (tolerance proportionality: a 3x
tighter tolerance cuts it at least 2x).
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torchsde

from splitdyn import AdaptiveSampler, BrownianNoise, EulerMaruyama, integrate, sample
from test_brownian_paths import problem, start

F64 = torch.float64
EPS = 1e-3
BATCH = 200


@lru_cache(maxsize=None)
def setup(name):
    """The reverse SDE, one Brownian path, the start and the reference (computed once per problem)."""
    sde, S0, reverse = problem(name)
    end = sde.T - EPS
    bm = torchsde.BrownianInterval(0.0, end * (1 + 1e-12), size=(BATCH, S0.shape[0]), dtype=F64, entropy=5,
                                   levy_area_approximation="space-time")
    u0 = start(sde, S0, BATCH, 1, torch.Generator().manual_seed(1))
    grid = torch.linspace(0.0, end, 4097, dtype=F64).tolist()
    ref = integrate(EulerMaruyama(reverse), u0, grid, noise=BrownianNoise(bm, torch.Generator().manual_seed(2))).state
    return reverse, bm, u0, ref


@pytest.mark.parametrize("name", ["vp", "cld"])
def test_adaptive_sampler_meets_its_tolerance_against_a_fine_grid_reference(name):
    reverse, bm, u0, ref = setup(name)
    # SSCS takes only ~9 steps at tol = 0.3 (pre-asymptotic): it is checked one decade lower
    for method, tolerances in (("em", (3e-1, 1e-1)), ("sscs", (1e-1, 3e-2))):
        errors = []
        for tol in tolerances:
            solver = AdaptiveSampler(method, rtol=tol, atol=tol, eps=EPS, bm=bm)
            out = solver.solve(reverse, u0, None, EPS, generator=torch.Generator().manual_seed(2))
            scaled = ((out.state - ref) / (tol + tol * ref.abs())).square().mean().sqrt().item()
            errors.append((out.state - ref).flatten(1).norm(dim=1).mean().item())
            print(f"\n{name} {method} tol {tol}: nfe {out.nfe}, scaled error {scaled:.3f}, error {errors[-1]:.2e}")
            assert scaled <= 1.0
            assert out.times[0] == 0.0 and abs(out.times[-1] - (reverse.T - EPS)) < 1e-12
        assert errors[1] < errors[0] / 2


@pytest.mark.parametrize("method, per_attempt", [("em", 2), ("sscs", 3)])
def test_nfe_counts_every_attempt_rejected_ones_included(method, per_attempt):
    reverse, bm, u0, _ = setup("vp")
    seen = []
    solver = AdaptiveSampler(method, rtol=1e-2, atol=1e-2, eps=EPS, h0=0.5, bm=bm)  # h0 too large: rejections
    out = solver.solve(reverse, u0, None, EPS, callback=lambda i, tau, u: seen.append(tau))
    assert solver.rejected > 0 and len(seen) == solver.accepted == len(out.times) - 1
    assert out.nfe == per_attempt * (solver.accepted + solver.rejected)
    assert reverse.evaluations >= out.nfe


def test_rejections_leave_the_path_unchanged():
    """A rejected attempt queries the path at times it then abandons; the solution of the same path reached
    with and without rejections agrees to the tolerance (the Brownian interval fills in bridges)."""
    reverse, bm, u0, ref = setup("vp")
    a = AdaptiveSampler("em", rtol=1e-2, atol=1e-2, eps=EPS, h0=0.5, bm=bm)
    b = AdaptiveSampler("em", rtol=1e-2, atol=1e-2, eps=EPS, h0=1e-4, bm=bm)
    sa, sb = a.solve(reverse, u0, None, EPS).state, b.solve(reverse, u0, None, EPS).state
    assert a.rejected > 0
    for s in (sa, sb):
        assert ((s - ref) / (1e-2 + 1e-2 * ref.abs())).square().mean().sqrt().item() <= 1.0


def test_sample_runs_the_named_adaptive_samplers(generator):
    sde, S0, reverse = problem("cld")
    for name in ("adaptive-em", "adaptive-sscs"):
        out = sample(sde, reverse.score, (16, 2), None, step=name, generator=generator, dtype=F64)
        assert bool(torch.isfinite(out.state).all()) and out.nfe >= 3
    with pytest.raises(ValueError, match="grid=None"):
        sample(sde, reverse.score, (4, 2), [0.0, 0.5], step="adaptive-em")


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="method"):
        AdaptiveSampler("rk4")
    with pytest.raises(ValueError, match="rtol"):
        AdaptiveSampler(rtol=0.0)
    with pytest.raises(ValueError, match="atol"):
        AdaptiveSampler(atol=-1.0)
    with pytest.raises(ValueError, match="safety"):
        AdaptiveSampler(safety=2.0)
    with pytest.raises(TypeError, match="max_steps"):
        AdaptiveSampler(max_steps=1.5)
    reverse, bm, u0, _ = setup("vp")
    with pytest.raises(ValueError, match="saves no states"):
        AdaptiveSampler(bm=bm).solve(reverse, u0, None, EPS, save_at=[0.1])
    with pytest.raises(RuntimeError, match="max_steps"):
        AdaptiveSampler(bm=bm, max_steps=3).solve(reverse, u0, None, EPS)


def test_per_step_criterion_is_available_and_takes_fewer_steps_at_the_same_tolerance():
    reverse, bm, u0, _ = setup("vp")
    unit = AdaptiveSampler("em", rtol=0.1, atol=0.1, eps=EPS, bm=bm)
    plain = AdaptiveSampler("em", rtol=0.1, atol=0.1, eps=EPS, bm=bm, per_unit_step=False)
    assert plain.solve(reverse, u0, None, EPS).nfe < unit.solve(reverse, u0, None, EPS).nfe
    with pytest.raises(TypeError, match="per_unit_step"):
        AdaptiveSampler(per_unit_step="yes")
