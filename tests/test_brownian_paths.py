"""Shared Brownian paths: our steps on a torchsde path, equality with torchsde, strong orders on one path.

Strong errors are E|u_n - u_ref| at the end of the grid, against Euler-Maruyama on an 8x finer grid than the
finest measured, on the same torchsde ``BrownianInterval`` (its own strong error is 8x smaller).
"""

from __future__ import annotations

import pytest
import torch
import torchsde

import splitdyn

from splitdyn import (
    BrownianNoise,
    EulerMaruyama,
    ExactLinearFlow,
    ReverseSDE,
    TorchsdeSolver,
    VPSDE,
    apply_matrix,
    integrate,
    split_step,
    uniform_grid,
)
from splitdyn.steps.noise import brownian_flow_tables
from splitdyn_cld import CLD
from test_steps import fitted_slope

F64 = torch.float64
COUNTS = (16, 32, 64, 128)


class CachedGaussianScore:
    """Exact score -Sigma_t^{-1} u (rows ``components``) of N(0, S0) data, cached per time."""

    def __init__(self, sde, S0, components=None):
        self.sde, self.S0, self.components, self.cache = sde, S0, components, {}

    def __call__(self, u, t):
        key = float(t)
        if key not in self.cache:
            Phi, Q = self.sde.kernel(key)
            P = -torch.linalg.inv(Phi @ self.S0 @ Phi.T + Q)
            self.cache[key] = P if self.components is None else P[self.components]
        return apply_matrix(self.cache[key], u)


def problem(name):
    if name == "vp":
        sde, S0, cols = VPSDE(), torch.tensor([[0.5]], dtype=F64), None
    else:
        sde = CLD(gamma=1.0)
        S0, cols = torch.diag(torch.tensor([0.5, sde.mass], dtype=F64)), [1]
    return sde, S0, ReverseSDE(sde, CachedGaussianScore(sde, S0, cols), score_components=cols)


def start(sde, S0, batch, event, generator):
    Phi, Q = sde.kernel(sde.T)
    L = torch.linalg.cholesky(Phi @ S0 @ Phi.T + Q)
    return torch.einsum("kj,bjd->bkd", L, torch.randn(batch, S0.shape[0], event, generator=generator, dtype=F64))


@pytest.mark.parametrize("name", ["vp", "cld"])
def test_em_on_a_torchsde_path_equals_torchsde_euler(name, generator):
    sde, S0, reverse = problem(name)
    grid = uniform_grid(25, sde.T, 1e-3).tolist()
    u0 = start(sde, S0, 6, 3, generator)
    bm = torchsde.BrownianInterval(0.0, grid[-1], size=(6, S0.shape[0] * 3), dtype=F64, entropy=11)
    ours = integrate(EulerMaruyama(reverse), u0, grid, noise=BrownianNoise(bm)).state
    theirs = TorchsdeSolver("euler", bm=bm).solve(reverse, u0, grid, 1e-3, callback=lambda *a: None).state
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # a generator is still the default: the path changes nothing there
    a = integrate(EulerMaruyama(reverse), u0, grid, generator=torch.Generator().manual_seed(0)).state
    b = integrate(EulerMaruyama(reverse), u0, grid, generator=torch.Generator().manual_seed(0)).state
    assert torch.equal(a, b) and not torch.allclose(a, ours)


def strong_errors(name, levy, steps, counts=COUNTS, batch=100):
    sde, S0, reverse = problem(name)
    end = sde.T - 1e-2
    k = S0.shape[0]
    bm = torchsde.BrownianInterval(0.0, end, size=(batch, k), dtype=F64, entropy=5, levy_area_approximation=levy)
    u0 = start(sde, S0, batch, 1, torch.Generator().manual_seed(1))

    def run(step, n):
        noise = BrownianNoise(bm, torch.Generator().manual_seed(2))
        return integrate(step, u0, torch.linspace(0.0, end, n + 1, dtype=F64).tolist(), noise=noise).state

    ref = run(EulerMaruyama(reverse), 8 * counts[-1])
    return {label: [(run(step, n) - ref).flatten(1).norm(dim=1).mean().item() for n in counts]
            for label, step in steps(reverse).items()}


@pytest.mark.parametrize("name, counts", [("vp", COUNTS), ("cld", (64, 128, 256, 512))])
def test_strong_order_of_euler_maruyama_with_additive_noise_is_one(name, counts):
    """Our reverse SDEs have additive noise (G depends on time only): EM's strong order is 1, above the
    generic 1/2 it declares (CLD with gamma = 1 is asymptotic from n ~ 64, as for the weak order)."""
    errors = strong_errors(name, "none", lambda r: {"em": EulerMaruyama(r)}, counts)["em"]
    slope = fitted_slope(errors, counts)
    print(f"\n{name} EM strong errors {['%.2e' % e for e in errors]} order {slope:.3f}")
    assert abs(slope - 1.0) <= 0.15 and slope >= EulerMaruyama.strong_order


def test_sscs_converges_strongly_to_the_path_solution_with_the_space_time_levy_area():
    """SSCS's exact flows condition on (dW, U): it follows the same path as EM, with order 1 (its Euler score
    step) and, for CLD, a smaller error than EM at every step count."""
    errors = strong_errors("cld", "space-time", lambda r: {"em": EulerMaruyama(r), "sscs": split_step(r)})
    slope = fitted_slope(errors["sscs"], COUNTS)
    print(f"\nCLD strong errors {errors} SSCS order {slope:.3f}")
    assert abs(slope - 1.0) <= 0.15
    assert all(s < e for s, e in zip(errors["sscs"], errors["em"]))


@pytest.mark.parametrize("levy", [False, True])
def test_exact_flow_noise_given_the_path_has_the_exact_covariance(levy):
    """B0 dW + B1 U + R zeta ~ N(0, Q): Cov(dW) = h, Cov(dW, U) = h^2 / 2, Cov(U) = h^3 / 3 per channel."""
    for sde in (CLD(gamma=0.04).reverse_linear_part(), VPSDE().reverse_linear_part()):
        starts = torch.tensor([0.0, 0.3, 0.9], dtype=F64)
        spans = torch.tensor([0.05, 1e-3, 0.1], dtype=F64)
        B0, B1, R = brownian_flow_tables(sde, starts, spans, levy)
        h = spans[:, None, None]
        cov = h * B0 @ B0.mT + h ** 2 / 2 * (B0 @ B1.mT + B1 @ B0.mT) + h ** 3 / 3 * B1 @ B1.mT + R @ R.mT
        _, Q = sde.kernel(starts + spans, starts)
        torch.testing.assert_close(cov, Q, rtol=1e-9, atol=1e-15)
        if not levy:
            assert torch.equal(B1, torch.zeros_like(B1))


def test_tables_match_sampled_increments_of_a_brownian_interval():
    """torchsde's U is the space-time integral the tables assume: sample moments of (dW, U)."""
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(200_000, 1), dtype=F64, entropy=3,
                                   levy_area_approximation="space-time")
    W, U = bm(0.2, 0.5, return_U=True)
    h = 0.3
    se = 4 * (2 / 200_000) ** 0.5
    assert abs((W * W).mean() / h - 1) < se and abs((U * U).mean() / (h ** 3 / 3) - 1) < se
    assert abs((W * U).mean() / (h ** 2 / 2) - 1) < se * 1.5


def test_bad_noise_arguments_are_refused_by_name(generator):
    sde, S0, reverse = problem("vp")
    u0 = start(sde, S0, 4, 2, generator)
    grid = uniform_grid(4, sde.T, 1e-3).tolist()
    with pytest.raises(TypeError, match="noise"):
        integrate(EulerMaruyama(reverse), u0, grid, noise=generator)
    with pytest.raises(TypeError, match="bm"):
        BrownianNoise(3)
    with pytest.raises(TypeError, match="generator"):
        BrownianNoise(torchsde.BrownianInterval(0.0, 1.0, size=(4, 2)), generator=1)
    wrong = BrownianNoise(torchsde.BrownianInterval(0.0, 1.0, size=(4, 3), dtype=F64))
    with pytest.raises(ValueError, match="bm must have size"):
        integrate(EulerMaruyama(reverse), u0, grid, noise=wrong)
    with pytest.raises(ValueError, match="bm must have size"):
        integrate(ExactLinearFlow(sde.reverse_linear_part()), u0, grid, noise=wrong)


def test_sample_takes_the_noise_source_for_fixed_grid_steps_and_refuses_it_for_reference_solvers(generator):
    sde, S0, reverse = problem("cld")
    grid = uniform_grid(20, sde.T, 1e-3).tolist()
    u0 = start(sde, S0, 5, 2, generator)
    bm = torchsde.BrownianInterval(0.0, grid[-1], size=(5, 4), dtype=F64, entropy=2)
    ours = splitdyn.sample(sde, reverse.score, u0, grid, step="em", noise=BrownianNoise(bm), denoise=False)
    direct = integrate(EulerMaruyama(reverse), u0, grid, noise=BrownianNoise(bm)).state
    assert torch.equal(ours.state, direct)
    with pytest.raises(ValueError, match="noise is for fixed-grid steps"):
        splitdyn.sample(sde, reverse.score, u0, grid, step="torchsde-euler", noise=BrownianNoise(bm))
