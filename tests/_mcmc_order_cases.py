"""Order-table cases of the splitdyn.mcmc steps (merged into ORDER_TABLE by tests/test_steps.py).

Unadjusted steps are measured like every other step: the Gaussian law of the state is pushed exactly through
each step (Step.gaussian_moments) for a Gaussian target, and compared with the exact law of the continuous
dynamics from a linear SDE's kernel. Metropolis-Hastings steps declare weak_order = inf (their invariant law
is exact); for them the "error" is the detailed-balance defect on pairs of states, the largest
|log flux(x -> y) - log flux(y -> x)| computed with a proposal density written here (MALA) or the leapfrog
map's reversibility (HMC, GHMC), which must vanish to rounding.
"""

from __future__ import annotations

import math

import torch

from splitdyn import LinearSDE, VESDE
from splitdyn.mcmc import (
    GHMC,
    HMC,
    MALA,
    SGLD,
    ULA,
    AnnealedLangevin,
    KineticLangevin,
    MomentumOU,
    Potential,
    StochasticGradient,
    hamiltonian,
    leapfrog,
)

F64 = torch.float64
PRECISION = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=F64)
GAUSSIAN_2D = Potential(lambda x: 0.5 * ((x @ PRECISION) * x).sum(-1), lambda x: x @ PRECISION)
MEAN0 = torch.tensor([1.0, -0.5], dtype=F64)
COV0 = torch.tensor([[0.3, 0.05], [0.05, 0.2]], dtype=F64)
COUNTS = (8, 16, 32, 64, 128)


def propagate(step, n, mean, cov, T=1.0):
    h = T / n
    for i in range(n):
        mean, cov = step.gaussian_moments(mean, cov, i * h, h)
    return mean.reshape(-1), cov


def moment_error(mean, cov, Phi, Q, mean0, cov0):
    return (mean - Phi @ mean0).norm().item() + (cov - (Phi @ cov0 @ Phi.T + Q)).norm().item()


def overdamped_error(step, n):
    """Law at T = 1 against dx = -P x dt + sqrt(2) dw (an Ornstein-Uhlenbeck process)."""
    mean, cov = propagate(step, n, MEAN0.reshape(1, 1, 2), COV0.clone())
    Phi, Q = LinearSDE(-PRECISION, math.sqrt(2.0) * torch.eye(2, dtype=F64)).kernel(1.0)
    return moment_error(mean, cov, Phi, Q, MEAN0, COV0)


OMEGA2, GAMMA, MASS = 2.0, 0.8, 1.5
QUADRATIC = Potential(lambda x: 0.5 * OMEGA2 * (x**2).sum(-1), lambda x: OMEGA2 * x)
KIN_MEAN0, KIN_COV0 = torch.tensor([1.0, 0.5], dtype=F64), torch.tensor([[0.2, 0.0], [0.0, 0.4]], dtype=F64)


def kinetic_sde(force: bool = True) -> LinearSDE:
    F = [[0.0, 1.0 / MASS], [-OMEGA2 if force else 0.0, -GAMMA]]
    return LinearSDE(F if force else [[0.0, 0.0], [0.0, -GAMMA]], [[0.0], [math.sqrt(2 * GAMMA * MASS)]])


def kinetic_error(step, n, force=True):
    mean, cov = propagate(step, n, KIN_MEAN0.reshape(1, 2, 1), KIN_COV0.clone())
    Phi, Q = kinetic_sde(force).kernel(1.0)
    return moment_error(mean, cov, Phi, Q, KIN_MEAN0, KIN_COV0)


# Annealed Langevin on N(0, S0) data: two levels on [0, 1/2) and [1/2, 1]; at level i the exact dynamics is the
# Ornstein-Uhlenbeck process dx = -(r_i / v_i) x dt + sqrt(2 r_i) dw, v_i = S0 + sigma_i^2, r_i = sigma_i^2 / sigma_L^2
S0 = 0.5
VE = VESDE(sigma_min=0.01, sigma_max=2.0)
LEVELS = torch.tensor([1.0, 0.5], dtype=F64)


def gaussian_ve_score(u, t):
    return -u / (S0 + VE.sigma(float(t)).item() ** 2)


def annealed_error(step, n):
    mean0, cov0 = torch.tensor([1.0], dtype=F64), torch.tensor([[0.3]], dtype=F64)
    mean, cov = propagate(step, n, mean0.reshape(1, 1, 1), cov0.clone())
    Phi, Q = torch.eye(1, dtype=F64), torch.zeros(1, 1, dtype=F64)
    for sigma in LEVELS.tolist():
        r, v = sigma**2 / LEVELS[-1].item() ** 2, S0 + sigma**2
        P, C = LinearSDE([[-r / v]], [[math.sqrt(2 * r)]]).kernel(0.5)
        Phi, Q = P @ Phi, P @ Q @ P.T + C
    return moment_error(mean, cov, Phi, Q, mean0, cov0)


def banana(x):
    return 0.5 * (x[:, 0] ** 2 / 4.0 + (x[:, 1] - 0.5 * x[:, 0] ** 2) ** 2 / 0.25)


BANANA = Potential(banana)


def mala_balance_defect(step, n, h=0.3):
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)

    def log_flux(a, b):  # log pi(a) + log N(b; a - h grad U(a), 2h I) + log alpha(a, b)
        return (-BANANA.energy(a) - ((b - a + h * BANANA.gradient(a)) ** 2).sum(-1) / (4 * h)
                + step.log_acceptance(a, b, h).clamp(max=0.0))

    return (log_flux(x, y) - log_flux(y, x)).abs().max().item()


def hamiltonian_balance_defect(step, n, h=0.3):
    g = torch.Generator().manual_seed(n)
    q, p = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)
    q1, p1, _, _ = leapfrog(BANANA, q, p, h, step.n_leapfrog)
    q2, p2, _, _ = leapfrog(BANANA, q1, -p1, h, step.n_leapfrog)
    reversibility = max((q2 - q).abs().max().item(), (p2 + p).abs().max().item())
    forward = -hamiltonian(BANANA, q, p) + step.log_acceptance(q, p, h).clamp(max=0.0)
    backward = -hamiltonian(BANANA, q1, -p1) + step.log_acceptance(q1, -p1, h).clamp(max=0.0)
    return reversibility + (forward - backward).abs().max().item()


MCMC_ORDER_TABLE = {
    "ULA": [("Gaussian target, Ornstein-Uhlenbeck law", lambda: (ULA(GAUSSIAN_2D), overdamped_error, COUNTS))],
    "SGLD": [("exact gradient, Ornstein-Uhlenbeck law",
              lambda: (SGLD(StochasticGradient.exact(GAUSSIAN_2D)), overdamped_error, COUNTS))],
    "AnnealedLangevin": [("Gaussian data, two VE levels",
                          lambda: (AnnealedLangevin(gaussian_ve_score, VE, LEVELS, 0.5), annealed_error, COUNTS))],
    "MomentumOU": [("exact momentum refresh", lambda: (MomentumOU(GAMMA, MASS),
                                                      lambda s, n: kinetic_error(s, n, force=False), COUNTS))],
    "KineticLangevin": [
        ("BAOAB, harmonic force", lambda: (KineticLangevin(QUADRATIC, "BAOAB", GAMMA, MASS), kinetic_error, COUNTS)),
        ("OBABO, harmonic force", lambda: (KineticLangevin(QUADRATIC, "OBABO", GAMMA, MASS), kinetic_error, COUNTS)),
        ("BAO (not symmetric), harmonic force",
         lambda: (KineticLangevin(QUADRATIC, "BAO", GAMMA, MASS), kinetic_error, COUNTS)),
    ],
    "MALA": [("detailed-balance defect on pairs", lambda: (MALA(BANANA), mala_balance_defect, (100, 1000)))],
    "HMC": [("detailed-balance defect on pairs",
             lambda: (HMC(BANANA, n_leapfrog=4), hamiltonian_balance_defect, (100, 1000)))],
    "GHMC": [("detailed-balance defect on pairs",
              lambda: (GHMC(BANANA, n_leapfrog=2), hamiltonian_balance_defect, (100, 1000)))],
}
