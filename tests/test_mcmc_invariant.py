"""Invariant laws of the Langevin samplers for Gaussian targets, from the discrete Lyapunov equation.

For a quadratic potential U(q) = q^T P q / 2 every unadjusted sampler step is an affine Gaussian map
u -> M u + xi, xi ~ N(0, C), and its invariant covariance solves S = M S M^T + C exactly. Three independent
routes must agree: (1) M and C built by hand in the test from the textbook updates, (2) M and C read off the
library's exact moment propagation (Step.gaussian_moments), (3) closed forms (Leimkuhler & Matthews 2013):
ULA's variance 1/(w^2 (1 - w^2 h / 2)) (its known O(h) bias); BAOAB exact in q, p-variance 1 - w^2 h^2 / 4;
OBABO exact in p, q-variance 1 / (w^2 (1 - w^2 h^2 / 4)); ABOBA exact in q, p-variance 1 / (1 - w^2 h^2 / 4).
A Monte Carlo run of the real sampler code then matches the Lyapunov covariance within 5 standard errors.
"""

import math

import pytest
import torch

from splitdyn.mcmc import ULA, Potential, kinetic_langevin, run_chain, with_momentum

F64 = torch.float64
OMEGA2, FRICTION = 2.0, 1.0
QUADRATIC = Potential(lambda x: 0.5 * OMEGA2 * (x**2).sum(-1), lambda x: OMEGA2 * x)


def lyapunov(M: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    n = M.shape[0]
    return torch.linalg.solve(torch.eye(n * n, dtype=F64) - torch.kron(M, M), C.reshape(-1)).reshape(n, n)


def read_off(step, h: float, k: int, d: int = 1):
    """M and C of an affine Gaussian step from its exact moment propagation."""
    n = k * d
    zero = torch.zeros(n, n, dtype=F64)
    columns = []
    for i in range(n):
        mean = torch.zeros(1, k, d, dtype=F64)
        mean.view(-1)[i] = 1.0
        columns.append(step.gaussian_moments(mean, zero, 0.0, h)[0].reshape(n))
    _, C = step.gaussian_moments(torch.zeros(1, k, d, dtype=F64), zero, 0.0, h)
    return torch.stack(columns, 1), C


def hand_built(sequence: str, h: float, w2: float = OMEGA2, gamma: float = FRICTION):
    """M and C of a splitting for U = w2 q^2 / 2, unit mass, written from the updates themselves."""
    counts = {c: sequence.count(c) for c in set(sequence)}
    M, C = torch.eye(2, dtype=F64), torch.zeros(2, 2, dtype=F64)
    for letter in sequence:
        f = h / counts[letter]
        if letter == "A":
            S, N = torch.tensor([[1.0, f], [0.0, 1.0]], dtype=F64), torch.zeros(2, 2, dtype=F64)
        elif letter == "B":
            S, N = torch.tensor([[1.0, 0.0], [-w2 * f, 1.0]], dtype=F64), torch.zeros(2, 2, dtype=F64)
        else:
            c = math.exp(-gamma * f)
            S, N = torch.tensor([[1.0, 0.0], [0.0, c]], dtype=F64), torch.diag(torch.tensor([0.0, 1 - c * c], dtype=F64))
        M, C = S @ M, S @ C @ S.T + N
    return M, C


CLOSED_FORMS = {  # (q variance * w^2, p variance) as functions of r = w^2 h^2 / 4
    "BAOAB": lambda r: (1.0, 1.0 - r),
    "OBABO": lambda r: (1.0 / (1.0 - r), 1.0),
    "ABOBA": lambda r: (1.0, 1.0 / (1.0 - r)),
}


@pytest.mark.parametrize("sequence", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("h", [0.05, 0.3, 1.0])
def test_splitting_invariant_covariance_matches_hand_built_matrices_and_closed_forms(sequence, h):
    step = kinetic_langevin(QUADRATIC, sequence, friction=FRICTION)
    S = lyapunov(*read_off(step, h, 2))
    S_hand = lyapunov(*hand_built(sequence, h))
    assert torch.allclose(S, S_hand, rtol=1e-12, atol=1e-14)
    q_var, p_var = CLOSED_FORMS[sequence](OMEGA2 * h * h / 4)
    assert math.isclose(S[0, 0].item() * OMEGA2, q_var, rel_tol=1e-12)
    assert math.isclose(S[1, 1].item(), p_var, rel_tol=1e-12)


@pytest.mark.parametrize("h", [0.05, 0.2, 0.5])
def test_ula_invariant_variance_has_the_known_order_h_bias(h):
    S = lyapunov(*read_off(ULA(QUADRATIC), h, 1))
    M_hand, C_hand = torch.tensor([[1.0 - h * OMEGA2]], dtype=F64), torch.tensor([[2.0 * h]], dtype=F64)
    assert torch.allclose(S, lyapunov(M_hand, C_hand), rtol=1e-12)
    assert math.isclose(S.item(), 1.0 / (OMEGA2 * (1.0 - OMEGA2 * h / 2.0)), rel_tol=1e-12)
    assert S.item() * OMEGA2 - 1.0 > 0.9 * OMEGA2 * h / 2.0  # biased upwards by at least ~ w^2 h / 2


def test_baoab_configurational_covariance_is_exact_for_a_correlated_gaussian():
    P = torch.tensor([[3.0, 1.2], [1.2, 1.0]], dtype=F64)  # precision, condition number ~ 8
    target = Potential(lambda x: 0.5 * ((x @ P) * x).sum(-1), lambda x: x @ P)
    for sequence in ("BAOAB", "ABOBA"):
        S = lyapunov(*read_off(kinetic_langevin(target, sequence, friction=0.7), 0.6, 2, d=2))
        assert torch.allclose(S[:2, :2], torch.linalg.inv(P), rtol=1e-11, atol=1e-13), sequence


@pytest.mark.parametrize("sequence", ["BAOAB", "OBABO", "ABOBA"])
def test_the_sampler_code_reaches_the_lyapunov_covariance(sequence):
    h, chains = 1.0, 20000
    S = lyapunov(*hand_built(sequence, h))
    g = torch.Generator().manual_seed(3)
    u = with_momentum(torch.randn(chains, 1, generator=g, dtype=F64) / math.sqrt(OMEGA2), generator=g)
    out = run_chain(kinetic_langevin(QUADRATIC, sequence, friction=FRICTION), u, 60, h, generator=g, keep=False)
    x = out.state.reshape(chains, 2)
    empirical = x.T @ x / chains
    se = ((torch.diagonal(S)[:, None] * torch.diagonal(S)[None, :] + S**2) / chains).sqrt()
    assert ((empirical - S).abs() / se).max() < 5


def test_ula_sampler_code_shows_the_bias_that_the_lyapunov_equation_predicts():
    h, chains = 0.5, 20000
    S = 1.0 / (OMEGA2 * (1.0 - OMEGA2 * h / 2.0))
    g = torch.Generator().manual_seed(4)
    out = run_chain(ULA(QUADRATIC), torch.zeros(chains, 1, 1, dtype=F64), 50, h, generator=g, keep=False)
    var = out.state.square().mean().item()
    assert abs(var - S) < 5 * S * math.sqrt(2 / chains)
    assert abs(var - 1 / OMEGA2) > 20 * S * math.sqrt(2 / chains)  # visibly biased
