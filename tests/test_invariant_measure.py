"""Invariant measures of Langevin splittings for a harmonic potential, from the discrete Lyapunov equation.

Underdamped Langevin dynamics dq = p dt, dp = -w^2 q dt - g p dt + sqrt(2 g) dW (unit mass and temperature) has
the invariant law N(0, diag(1/w^2, 1)). A splitting of it into the exact Ornstein-Uhlenbeck flow O, the kick B
and the drift A is, for this linear force, an affine Gaussian map u -> M u + xi with xi ~ N(0, C); its invariant
covariance solves the discrete Lyapunov equation S = M S M^T + C exactly (no Monte Carlo). Known results
(Leimkuhler & Matthews 2013): BAOAB has the exact configurational variance 1/w^2 at every stable step size;
OBABO has the exact momentum variance 1 and a configurational variance 1 / (w^2 (1 - w^2 h^2 / 4)); BAOAB's
momentum variance is 1 - w^2 h^2 / 4.
"""

import math

import pytest
import torch

from splitdyn import EulerDrift, ExactLinearFlow, LinearSDE, splitting

OMEGA2, FRICTION = 2.0, 1.0


def langevin_parts():
    O = ExactLinearFlow(LinearSDE(drift_matrix=[[0.0, 0.0], [0.0, -FRICTION]],
                                  diffusion_matrix=[[0.0, 0.0], [0.0, math.sqrt(2 * FRICTION)]], T=100.0))
    B = EulerDrift(lambda u, t: torch.stack([torch.zeros_like(u[:, 0]), -OMEGA2 * u[:, 0]], 1), nfe=1)
    A = EulerDrift(lambda u, t: torch.stack([u[:, 1], torch.zeros_like(u[:, 1])], 1), nfe=0)
    return {"O": O, "B": B, "A": A}


def invariant_covariance(sequence: str, h: float) -> torch.Tensor:
    """Solve S = M S M^T + C for the step's affine Gaussian map, M and C read off exact moment propagation."""
    step = splitting(sequence, langevin_parts())
    zero_cov = torch.zeros(2, 2, dtype=torch.float64)
    columns = []
    for i in range(2):
        mean = torch.zeros(1, 2, 1, dtype=torch.float64)
        mean[0, i, 0] = 1.0
        columns.append(step.gaussian_moments(mean, zero_cov, 0.0, h)[0].reshape(2))
    M = torch.stack(columns, 1)
    _, C = step.gaussian_moments(torch.zeros(1, 2, 1, dtype=torch.float64), zero_cov, 0.0, h)
    vec = torch.linalg.solve(torch.eye(4, dtype=torch.float64) - torch.kron(M, M), C.reshape(4))
    return vec.reshape(2, 2)


@pytest.mark.parametrize("h", [0.05, 0.2, 0.5, 1.0])
def test_baoab_has_the_exact_configurational_variance_for_a_harmonic_potential(h):
    S = invariant_covariance("BAOAB", h)
    assert math.isclose(S[0, 0].item(), 1.0 / OMEGA2, rel_tol=1e-12)
    assert math.isclose(S[1, 1].item(), 1.0 - OMEGA2 * h * h / 4.0, rel_tol=1e-12)  # momentum: biased
    assert abs(S[0, 1].item()) < 1e-12


@pytest.mark.parametrize("h", [0.05, 0.2, 0.5, 1.0])
def test_obabo_has_the_exact_momentum_variance_and_an_order_two_configurational_bias(h):
    S = invariant_covariance("OBABO", h)
    assert math.isclose(S[1, 1].item(), 1.0, rel_tol=1e-12)
    assert math.isclose(S[0, 0].item(), 1.0 / (OMEGA2 * (1.0 - OMEGA2 * h * h / 4.0)), rel_tol=1e-12)
