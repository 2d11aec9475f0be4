"""NFE of every named sampler: ``solution.nfe`` equals the documented count and the score calls actually made.

The documented table is the one in :mod:`splitdyn.sample` (evaluations per step of an ``n``-step grid, plus one
for the Euler denoising step or the Tweedie estimate, none for ``denoise="score-free"``). Scores are counted by wrapping them, once.
"""

from __future__ import annotations

import pytest
import torch

from splitdyn import (
    SAMPLERS,
    VPSDE,
    ReverseSDE,
    UniformGrid,
    apply_matrix,
    sample,
    tweedie_denoise,
)
from splitdyn_cld import CLD

F64 = torch.float64
STEPS = 6

#: score evaluations per step of an n-step grid (splitdyn.sample's table); None: adaptive (the solver's choice)
PER_STEP = {
    **{name: 1 for name in ("em", "sscs", "trotter-split", "torchsde-euler", "ancestral")},
    **{f"{family}-{q}": 1 for family in ("ei-ode", "ei-sde", "gddim") for q in (1, 2, 3)},
    **{name: 1 for name in ("dpmpp-1", "dpmpp-2m", "dpmpp-2m-midpoint", "dpmpp-2m-heun", "dpmpp-3m")},
    **{f"unipc-{q}{v}": 1 for q in (1, 2, 3) for v in ("", "-bh1", "-bh2")},
    **{f"unipc-{q}-{v}-lof": 1 for q in (2, 3) for v in ("bh1", "bh2")},
    **{name: 2 for name in ("heun", "pc-em-langevin", "pc-ancestral-langevin", "pc-sscs-langevin")},
    "torchsde-srk": 3,
    "rk4": 4,
    **{name: None for name in ("ode", "adaptive-em", "adaptive-sscs")},
}
#: evaluations a reference solver makes to check shapes (torchsde: once per sdeint call; one call on a uniform
#: grid), documented as not counted
SHAPE_CHECKS = {"torchsde-euler": 1, "torchsde-srk": 1}
# dpmpp-*: log-SNR polynomials; adaptive-*: on CLD their error control takes thousands of steps (15 s)
VP_ONLY = {name for name in SAMPLERS if name.startswith(("dpmpp", "adaptive"))}


class CountedGaussianScore:
    """The exact score of N(0, S0) data (rows ``components``), counting its calls."""

    def __init__(self, sde, S0, components):
        self.sde, self.S0, self.components, self.calls = sde, S0, components, 0

    def __call__(self, u, t):
        self.calls += 1
        Phi, Q = self.sde.kernel(float(t))
        P = -torch.linalg.inv(Phi @ self.S0 @ Phi.T + Q)
        return apply_matrix(P if self.components is None else P[self.components], u)


def problem(name):
    if name in VP_ONLY:
        vp = VPSDE()
        return vp, CountedGaussianScore(vp, torch.tensor([[0.5]], dtype=F64), None)
    cld = CLD()
    S0 = torch.diag(torch.tensor([0.5, cld.gamma * cld.mass], dtype=F64))
    return cld, CountedGaussianScore(cld, S0, [1])


def test_every_named_sampler_has_a_documented_count():
    assert set(PER_STEP) == set(SAMPLERS), "a sampler was added or removed without its NFE entry"


def run(name, denoise):
    """(solution, counted score) of ``name`` on an STEPS-step grid (adaptive samplers: their own steps)."""
    process, score = problem(name)
    grid = None if PER_STEP[name] is None else UniformGrid(STEPS, 1e-3)
    solution = sample(process, score, (16, 2), grid, step=name, denoise=denoise, dtype=F64,
                      generator=torch.Generator().manual_seed(0), divergence_factor=None)
    return solution, score


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_of_every_named_sampler_is_the_documented_count(name):
    solution, score = run(name, False)
    if PER_STEP[name] is not None:
        assert solution.nfe == PER_STEP[name] * STEPS
    assert score.calls == solution.nfe + SHAPE_CHECKS.get(name, 0)


@pytest.mark.parametrize("denoise, final", [(True, 1), ("euler", 1), ("tweedie", 1), ("score-free", 0)])
@pytest.mark.parametrize("name", ["em", "sscs", "heun", "ei-sde-2", "unipc-3", "torchsde-euler"])
def test_the_final_step_adds_its_documented_count(name, denoise, final):
    solution, score = run(name, denoise)
    assert solution.nfe == PER_STEP[name] * STEPS + final
    assert score.calls == solution.nfe + SHAPE_CHECKS.get(name, 0)


def test_score_free_final_step_is_refused_for_vp_before_any_evaluation():
    process, score = problem("dpmpp-2m")
    with pytest.raises(ValueError, match="reaches its data component"):
        sample(process, score, (4, 2), UniformGrid(4, 1e-3), step="ei-ode-2", denoise="score-free")
    assert score.calls == 0
    with pytest.raises(ValueError, match="denoise"):
        sample(process, score, (4, 2), UniformGrid(4, 1e-3), step="ei-ode-2", denoise="ddim")
    with pytest.raises(TypeError, match="denoise"):
        sample(process, score, (4, 2), UniformGrid(4, 1e-3), step="ei-ode-2", denoise=1)


def test_score_free_final_step_gives_the_euler_step_data_component_of_cld():
    """eq. 109: x_0 = x_eps - eps beta M^-1 v_eps, equal to the Euler denoising step's x for any score."""
    cld, score = problem("ei-ode-2")
    initial = cld.prior_sample((32, 3), torch.Generator().manual_seed(1), dtype=F64)
    kwargs = {"step": "unipc-2", "dtype": F64}
    free = sample(cld, score, initial, UniformGrid(5, 1e-3), denoise="score-free", **kwargs)
    euler = sample(cld, score, initial, UniformGrid(5, 1e-3), denoise=True, **kwargs)
    raw = sample(cld, score, initial, UniformGrid(5, 1e-3), denoise=False, **kwargs).state
    eps = 1e-3
    expected = raw[:, 0] - eps * cld.beta(eps).item() / cld.mass * raw[:, 1]
    assert torch.equal(free.state[:, 0], euler.state[:, 0])
    assert (free.state[:, 0] - expected).abs().max().item() < 1e-14
    assert free.nfe == euler.nfe - 1 == 5


@pytest.mark.parametrize("name", ["VP", "CLD"])
def test_tweedie_final_step_is_the_gaussian_posterior_mean_of_the_data(name):
    """N(0, S0) data: E[x_0 | u_eps] = c0 phi^T Sigma_eps^{-1} u with Sigma_eps the marginal covariance."""
    process, score = problem("dpmpp-2m" if name == "VP" else "em")
    eps = 1e-3
    u = torch.randn(64, process.num_components, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    out = tweedie_denoise(ReverseSDE(process, score, score.components), u, eps)
    Phi, Q = process.kernel(eps)
    marginal = Phi @ score.S0 @ Phi.T + Q
    row = score.S0[0, 0] * Phi[:, 0] @ torch.linalg.inv(marginal)  # Cov(x_0, u) Var(u)^{-1}
    assert (out[:, 0] - torch.einsum("k,bkd->bd", row, u)).abs().max().item() < 1e-10
    assert torch.equal(out[:, 1:], u[:, 1:]) and score.calls == 1
