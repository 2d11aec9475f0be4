"""Plans keep no state that can go stale between calls: what a composition reuses from the previous interval
(first-same-as-last) is used only for the very state it returned, unmodified; an in-place edit of the returned
state gives the same next state as a fresh plan would."""

import math

import pytest
import torch

from splitdyn import EulerDrift, ExactLinearFlow, LinearSDE, splitting
from splitdyn.integrate import plan_step
from splitdyn.steps.noise import GaussianNoise

F64 = torch.float64


def _baoab(calls):
    def force(u, t):
        calls[0] += 1
        return torch.stack([torch.zeros_like(u[:, 0]), -(u[:, 0] ** 3)], 1)

    O = ExactLinearFlow(LinearSDE([[0.0, 0.0], [0.0, -1.0]], [[0.0, 0.0], [0.0, math.sqrt(2.0)]], T=1.0))
    A = EulerDrift(lambda u, t: torch.stack([u[:, 1], torch.zeros_like(u[:, 1])], 1), nfe=0, reads=[1],
                   writes=[0], time_dependent=False)
    B = EulerDrift(force, nfe=1, reads=[0], writes=[1], time_dependent=False)
    return splitting("BAOAB", {"B": B, "A": A, "O": O})


EDITS = {
    "add_": lambda u: u.add_(10.0),
    "position row": lambda u: u[:, 0].mul_(-2.0),
    "setitem": lambda u: u.__setitem__((slice(None), 0), 3.0),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_in_place_edit_of_the_returned_state_gives_what_a_fresh_plan_gives(edit):
    calls = [0]
    step = _baoab(calls)
    grid = [0.0, 0.1, 0.2, 0.3]
    u0 = torch.randn(16, 2, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    plan = plan_step(step, grid, u0, fuse=False)
    u1 = plan(u0, 0, GaussianNoise(torch.Generator().manual_seed(1)))
    EDITS[edit](u1)
    reused = plan(u1, 1, GaussianNoise(torch.Generator().manual_seed(2)))
    fresh = plan_step(step, grid, u0, fuse=False)(u1.clone(), 1, GaussianNoise(torch.Generator().manual_seed(2)))
    assert torch.equal(reused, fresh)


def test_the_carried_force_is_reused_for_the_unmodified_state_only():
    calls = [0]
    step = _baoab(calls)
    grid = [0.0, 0.1, 0.2, 0.3]
    u0 = torch.randn(16, 2, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    plan = plan_step(step, grid, u0, fuse=False)
    u1 = plan(u0, 0, GaussianNoise(torch.Generator().manual_seed(1)))
    assert calls[0] == 2
    plan(u1, 1, GaussianNoise(torch.Generator().manual_seed(2)))
    assert calls[0] == 3  # the closing force of step 0 is the opening one of step 1
    plan(u1.clone(), 1, GaussianNoise(torch.Generator().manual_seed(2)))
    assert calls[0] == 5  # another tensor (even with equal values) is evaluated afresh
    u2 = plan(u1, 1, GaussianNoise(torch.Generator().manual_seed(2)))
    plan(u2, 1, GaussianNoise(torch.Generator().manual_seed(2)))  # not the next interval: evaluated afresh
    assert calls[0] == 9


def test_a_stale_carried_force_would_have_changed_the_answer():
    # the oracle: computing with the carried (stale) force differs from the fresh answer, so the tests above
    # would fail if the plan reused it
    calls = [0]
    step = _baoab(calls)
    grid = [0.0, 0.1, 0.2]
    u0 = torch.randn(16, 2, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    plan = plan_step(step, grid, u0, fuse=False)
    u1 = plan(u0, 0, GaussianNoise(torch.Generator().manual_seed(1)))
    clean = plan_step(step, grid, u0, fuse=False)(u1.clone(), 1, GaussianNoise(torch.Generator().manual_seed(2)))
    u1.add_(10.0)
    edited = plan(u1, 1, GaussianNoise(torch.Generator().manual_seed(2)))
    assert not torch.allclose(clean, edited)
