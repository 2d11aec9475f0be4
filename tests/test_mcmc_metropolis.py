"""Metropolis-Hastings kernels (MALA, HMC, GHMC): exact invariant laws, detailed balance, acceptance.

Oracles: the exact moments of a Gaussian target; numerical quadrature of exp(-U) for a 1-D double well
(trapezoid rule on a fine grid, independent of any sampler); proposal densities and leapfrog identities
written in the test. Monte Carlo errors are standard errors from independent chains (the per-chain means
of their draws are independent), and every comparison allows 5 of them.
"""

import math

import pytest
import torch

from splitdyn.steps.noise import GaussianNoise
from splitdyn.mcmc import GHMC, HMC, MALA, ULA, Potential, hamiltonian, leapfrog, run_chain, with_momentum

F64 = torch.float64
GAUSSIAN = Potential(lambda x: 0.5 * (x**2).sum(-1), lambda x: x.clone())
DOUBLE_WELL = Potential(lambda x: ((x**2 - 1.0) ** 2).sum(-1), lambda x: 4.0 * x * (x**2 - 1.0))


def banana_energy(x):
    return 0.5 * (x[:, 0] ** 2 / 4.0 + (x[:, 1] - 0.5 * x[:, 0] ** 2) ** 2 / 0.25)


BANANA = Potential(banana_energy)  # autograd gradient


def quadrature_moments(energy, powers=(2, 4)) -> dict:
    x = torch.linspace(-6.0, 6.0, 120_001, dtype=F64)
    w = torch.exp(-energy(x[:, None]))
    Z = torch.trapezoid(w, x)
    return {k: (torch.trapezoid(w * x**k, x) / Z).item() for k in powers}


def chain_estimate(step, u0, n_steps, h, power, seed, burn_in):
    """(estimate, standard error) of E[x^power] from independent chains."""
    out = run_chain(step, u0, n_steps, h, generator=torch.Generator().manual_seed(seed), burn_in=burn_in, thin=5)
    per_chain = out.samples.pow(power).reshape(out.samples.shape[0], out.samples.shape[1], -1).mean((0, 2))
    return per_chain.mean().item(), per_chain.std().item() / math.sqrt(per_chain.numel()), out


def start(chains, kinetic, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(chains, 1, generator=g, dtype=F64)
    return with_momentum(x, generator=g) if kinetic else x[:, None]


ADJUSTED = {
    "MALA": (lambda U: MALA(U), False),
    "HMC": (lambda U: HMC(U, n_leapfrog=4), False),
    "GHMC": (lambda U: GHMC(U, friction=1.0), True),
}


@pytest.mark.parametrize("name", sorted(ADJUSTED))
def test_adjusted_kernels_are_exact_for_a_gaussian_where_ula_is_biased(name):
    h = 0.5  # ULA's stationary variance is 1 / (1 - h / 2) = 4/3 here
    factory, kinetic = ADJUSTED[name]
    mean, se, out = chain_estimate(factory(GAUSSIAN), start(2000, kinetic), 600, h, 2, seed=1, burn_in=100)
    assert abs(mean - 1.0) < 5 * se, (mean, se)
    ula, ula_se, _ = chain_estimate(ULA(GAUSSIAN), start(2000, False), 600, h, 2, seed=1, burn_in=100)
    assert abs(ula - 4.0 / 3.0) < 5 * ula_se and ula - 1.0 > 20 * ula_se
    assert 0.5 < out.acceptance_rate.mean().item() < 1.0


@pytest.mark.parametrize("name", sorted(ADJUSTED))
def test_adjusted_kernels_match_quadrature_on_the_double_well(name):
    # chains start in the wells' region: far in the quartic tails MALA's proposals overshoot and are all
    # rejected (it is not geometrically ergodic there), a known property of the kernel, not of this code
    exact = quadrature_moments(DOUBLE_WELL.energy_fn)
    factory, kinetic = ADJUSTED[name]
    for power in (2, 4):
        mean, se, _ = chain_estimate(factory(DOUBLE_WELL), start(2000, kinetic, seed=power, scale=0.5), 1500, 0.2, power,
                                     seed=power, burn_in=300)
        assert abs(mean - exact[power]) < 5 * se, (power, mean, exact[power], se)


def test_mala_flux_is_symmetric_on_pairs_with_the_independent_proposal_density():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 2, generator=g, dtype=F64), torch.randn(500, 2, generator=g, dtype=F64)
    h = 0.3
    step = MALA(BANANA)

    def log_flux(a, b):  # log pi(a) + log q(a, b) + log alpha(a, b); q = N(b; a - h grad U(a), 2h I)
        mean = a - h * BANANA.gradient(a)
        log_q = -((b - mean) ** 2).sum(-1) / (4 * h)
        return -BANANA.energy(a) + log_q + step.log_acceptance(a, b, h).clamp(max=0.0)

    forward, backward = log_flux(x, y), log_flux(y, x)
    assert torch.allclose(forward, backward, rtol=1e-12, atol=1e-10)


def test_mala_plan_accepts_with_the_probability_of_its_log_acceptance():
    chains, h = 400, 0.4
    x = torch.randn(chains, 1, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    step = MALA(BANANA)
    plan = step.plan(__import__("splitdyn").Intervals.single(0.0, h), x)
    plan(x, 0, GaussianNoise(torch.Generator().manual_seed(7)))
    xi = torch.randn(chains, 2, generator=torch.Generator().manual_seed(7), dtype=F64)  # replay the proposal
    y = x[:, 0] - h * BANANA.gradient(x[:, 0]) + math.sqrt(2 * h) * xi
    expected = step.log_acceptance(x[:, 0], y, h).clamp(max=0.0).exp()
    assert torch.allclose(plan.acceptance_probability, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n_leapfrog", [1, 5])
def test_leapfrog_is_reversible_and_volume_preserving(n_leapfrog):
    g = torch.Generator().manual_seed(2)
    q, p = torch.randn(300, 2, generator=g, dtype=F64), torch.randn(300, 2, generator=g, dtype=F64)
    q1, p1, _, _ = leapfrog(BANANA, q, p, 0.2, n_leapfrog)
    q2, p2, _, _ = leapfrog(BANANA, q1, -p1, 0.2, n_leapfrog)  # F Psi F Psi = id
    assert torch.allclose(q2, q, rtol=0, atol=1e-12) and torch.allclose(-p2, p, rtol=0, atol=1e-12)

    def flat(z):
        a, b, _, _ = leapfrog(BANANA, z[:2].reshape(1, 2), z[2:].reshape(1, 2), 0.2, n_leapfrog)
        return torch.cat([a.reshape(2), b.reshape(2)])

    for i in range(5):
        J = torch.func.jacrev(flat)(torch.cat([q[i], p[i]]))
        assert abs(torch.linalg.det(J).item() - 1.0) < 1e-12


@pytest.mark.parametrize("kernel", ["HMC", "GHMC"])
def test_hamiltonian_kernels_satisfy_detailed_balance_on_pairs(kernel):
    # pi(z) alpha(z) = pi(F Psi z) alpha(F Psi z): the flux from z to its proposal equals the flux back
    step = HMC(BANANA, n_leapfrog=3) if kernel == "HMC" else GHMC(BANANA, n_leapfrog=3)
    g = torch.Generator().manual_seed(3)
    q, p = torch.randn(500, 2, generator=g, dtype=F64), torch.randn(500, 2, generator=g, dtype=F64)
    h = 0.35
    q1, p1, _, _ = leapfrog(BANANA, q, p, h, 3)
    forward = -hamiltonian(BANANA, q, p) + step.log_acceptance(q, p, h).clamp(max=0.0)
    backward = -hamiltonian(BANANA, q1, -p1) + step.log_acceptance(q1, -p1, h).clamp(max=0.0)
    assert torch.allclose(forward, backward, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name, steps, min_slope", [("MALA", (0.04, 0.02, 0.01), 1.3),
                                                   ("HMC", (0.05, 0.025, 0.0125), 2.7), ("GHMC", (0.2, 0.1, 0.05), 2.7)])
def test_acceptance_tends_to_one_as_the_step_shrinks(name, steps, min_slope):
    # mean rejection probabilities E[1 - min(1, alpha)]: MALA O(h^{3/2}); HMC and GHMC O(h^3) (the leapfrog
    # energy error after a fixed number of steps)
    factory, kinetic = ADJUSTED[name]
    rejection = []
    for h in steps:
        out = run_chain(factory(DOUBLE_WELL), start(4000, kinetic, seed=5, scale=0.5), 60, h,
                        generator=torch.Generator().manual_seed(6), burn_in=20, keep=False)
        rejection.append(1.0 - out.acceptance_probability.mean().item())
    assert rejection[0] > rejection[1] > rejection[2] > 0
    slope = math.log(rejection[0] / rejection[2]) / math.log(steps[0] / steps[2])
    print(f"\n{name}: rejection {rejection}, slope {slope:.2f}")
    assert slope > min_slope


def test_ghmc_flips_the_momentum_on_rejection_and_keeps_one_gradient_per_step():
    step = GHMC(DOUBLE_WELL, friction=0.0)  # no refresh: a rejection is visible as p -> -p
    u = torch.tensor([[[1.9], [4.0]]], dtype=F64)  # huge step: the proposal is rejected
    plan = step.plan(__import__("splitdyn").Intervals.single(0.0, 1.5), u)
    out = plan(u, 0, GaussianNoise(torch.Generator().manual_seed(0)))
    assert plan.accepted.item() == 0 and torch.equal(out[:, 0], u[:, 0]) and torch.equal(out[:, 1], -u[:, 1])
    result = run_chain(GHMC(DOUBLE_WELL), start(10, True), 200, 0.1, generator=torch.Generator().manual_seed(1))
    assert result.nfe == 201  # one gradient per step after the first
