"""One evaluation counter: the score is wrapped once (by the reverse SDE) and ``Solution.nfe`` is the number of
calls the user's score actually received, for every named sampler (no plan counts by hand, so none can count
twice or forget a call)."""

from __future__ import annotations

import pytest
import torch

import splitdyn
from splitdyn import VPSDE, EulerDrift, UniformGrid, integrate, splitting
from splitdyn.steps.base import EvaluationCounter, evaluation_count
from splitdyn.integrate import plan_step
from splitdyn_cld import CLD

F64 = torch.float64
SELF_STEPPING = {"ode", "adaptive-em", "adaptive-sscs"}  # pick their own steps: grid=None


class CountingScore:
    """The exact score of N(0, I) data under a VP SDE (or CLD's velocity part), counting its calls."""

    def __init__(self, velocity_only: bool = False) -> None:
        self.calls = 0
        self.velocity_only = velocity_only

    def __call__(self, u, t):
        self.calls += 1
        return -u[:, 1:] / 4.0 if self.velocity_only else -u


@pytest.mark.parametrize("name", sorted(splitdyn.SAMPLERS))
def test_nfe_is_the_number_of_score_calls_for_every_named_sampler(name):
    score = CountingScore()
    grid = None if name in SELF_STEPPING else UniformGrid(6, eps=1e-2)
    out = splitdyn.sample(VPSDE(), score, (16, 2), grid, step=name, dtype=F64,
                          generator=torch.Generator().manual_seed(0))
    shape_checks = 1 if name.startswith("torchsde") else 0  # sdeint's own shape check, documented as uncounted
    assert out.nfe == score.calls - shape_checks > 0


@pytest.mark.parametrize("name", ["em", "sscs", "pc-sscs-langevin", "trotter-split"])
def test_nfe_is_the_number_of_score_calls_for_cld(name):
    score = CountingScore(velocity_only=True)
    out = splitdyn.sample(CLD(), score, (16, 2), UniformGrid(6, eps=1e-2), step=name, dtype=F64,
                          generator=torch.Generator().manual_seed(0))
    assert out.nfe == score.calls > 0


def test_reused_values_are_not_calls_and_compiled_or_not_counts_agree():
    calls = [0]

    def force(u, t):
        calls[0] += 1
        return torch.stack([torch.zeros_like(u[:, 0]), -u[:, 0]], 1)

    A = EulerDrift(lambda u, t: torch.stack([u[:, 1], torch.zeros_like(u[:, 1])], 1), nfe=0, reads=[1], writes=[0],
                   time_dependent=False)
    B = EulerDrift(force, nfe=1, reads=[0], writes=[1], time_dependent=False)
    u = torch.randn(8, 2, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = integrate(splitting("BAB", {"A": A, "B": B}), u, [0.1 * i for i in range(11)])
    assert out.nfe == calls[0] == 11  # first-same-as-last: one force per step and one to start


def test_the_counter_counts_what_it_wraps_with_a_weight():
    counter = EvaluationCounter()
    f = counter.wrap(lambda x: x + 1)
    g = counter.wrap(lambda x: x, weight=0)
    assert f(1) == 2 and g(3) == 3 and f(0) == 1
    assert counter.count == 2
    reverse = CLD().reverse(CountingScore(velocity_only=True))
    plan = plan_step(splitdyn.split_step(reverse), [0.0, 0.1, 0.2], torch.zeros(4, 2, 1, dtype=F64))
    assert plan.counters == (reverse.counter,) and evaluation_count(plan) == 0
