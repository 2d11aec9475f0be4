"""Order-table cases of the predictor-corrector steps (merged into ``ORDER_TABLE`` by tests/test_steps.py).

Every case pushes the exact Gaussian law through the steps (``Plan.gaussian_moments``: the scores are exact
and linear, the step sizes deterministic), so the fitted slopes carry no Monte Carlo noise.
"""

from __future__ import annotations

import torch

from splitdyn import EulerMaruyama, LinearSDE, ReverseSDE, VPSDE, apply_matrix, uniform_grid
from splitdyn.integrate import plan_step
from splitdyn.steps import LangevinCorrector, ReverseDiffusion, predictor_corrector
from splitdyn_cld import CLD

F64 = torch.float64
EPS = 1e-3


class ExactGaussianScore:
    """Score -Sigma_t^{-1} u (rows ``components``) of N(0, S0) data diffused by a linear SDE."""

    def __init__(self, sde, S0, components=None):
        self.sde, self.S0, self.components = sde, S0, components

    def __call__(self, u, t):
        Phi, Q = self.sde.kernel(float(t))
        P = -torch.linalg.inv(Phi @ self.S0 @ Phi.T + Q)
        return apply_matrix(P if self.components is None else P[self.components], u)


def cld_problem(gamma: float = 1.0):
    cld = CLD(gamma=gamma)
    S0 = torch.diag(torch.tensor([0.5, cld.gamma * cld.mass], dtype=F64))
    return cld, S0, ReverseSDE(cld, ExactGaussianScore(cld, S0, [1]), score_components=[1])


def vp_problem():
    vp = VPSDE()
    S0 = torch.tensor([[0.5]], dtype=F64)
    return vp, S0, ReverseSDE(vp, ExactGaussianScore(vp, S0))


def reverse_error(problem):
    """error(step, n): |mean| + ||covariance error|| at the cutoff after n uniform steps from the exact p_T."""

    def error(step, n):
        sde, S0, _ = problem()
        grid = uniform_grid(n, sde.T, EPS).tolist()
        Phi, Q = sde.kernel(sde.T)
        k = S0.shape[0]
        mean, cov = torch.zeros(1, k, 1, dtype=F64), Phi @ S0 @ Phi.T + Q
        plan = plan_step(step, grid, mean, fuse=False)
        for i in range(n):
            mean, cov = plan.gaussian_moments(mean, cov, i)
        Phi, Q = sde.kernel(EPS)
        return (cov - (Phi @ S0 @ Phi.T + Q)).norm().item() + mean.norm().item()

    return error


def case(problem, factory, counts):
    return lambda: (factory(problem()[2]), reverse_error(problem), counts)


# stationary CLD data: p_t = N(0, diag(1, M)) at every t, so the corrector alone follows the annealed Langevin
# dynamics dv = -rate v / M dtau + sqrt(2 rate) dW with x fixed: an Ornstein-Uhlenbeck process with exact kernel
MEAN0 = torch.tensor([0.3, 1.0], dtype=F64).reshape(1, 2, 1)
COV0 = torch.tensor([[0.8, 0.1], [0.1, 0.05]], dtype=F64)
SPAN, RATE = 0.9, 2.0  # reverse times [0, 0.9], Langevin time 1.8


def stationary_cld_reverse():
    cld = CLD(gamma=1.0)
    S0 = torch.diag(torch.tensor([1.0, cld.mass], dtype=F64))
    return ReverseSDE(cld, ExactGaussianScore(cld, S0, [1]), score_components=[1])


def langevin_error(step, n):
    """Law after n corrector calls over reverse times [0, SPAN] against the exact velocity-Langevin kernel."""
    mass = step.reverse.sde.mass
    grid = torch.linspace(0.0, SPAN, n + 1, dtype=F64).tolist()
    plan = plan_step(step, grid, MEAN0)
    mean, cov = MEAN0.clone(), COV0.clone()
    for i in range(n):
        mean, cov = plan.gaussian_moments(mean, cov, i)
    langevin = LinearSDE([[0.0, 0.0], [0.0, -1.0 / mass]], [[0.0], [2.0 ** 0.5]], beta=RATE)
    Phi, Q = langevin.kernel(SPAN)
    exact_mean = Phi @ MEAN0.reshape(2)
    return (mean.reshape(2) - exact_mean).norm().item() + (cov - (Phi @ COV0 @ Phi.T + Q)).norm().item()


COUNTS = (64, 128, 256, 512)

#: name -> [(label, case)] as in tests/test_steps.py's ORDER_TABLE
PC_ORDER_CASES = {
    # CLD (velocity score): 0.957 over n = 256..2048, its constant 5x EM's; too slow for the suite
    "ReverseDiffusion": [
        ("VP reverse SDE (DDPM ancestral)", case(vp_problem, ReverseDiffusion, COUNTS)),
    ],
    "LangevinCorrector": [
        ("annealed Langevin on CLD's velocity (rate rule), exact OU kernel",
         lambda: (LangevinCorrector(stationary_cld_reverse(), rate=RATE), langevin_error, (16, 32, 64, 128, 256))),
    ],
    "Composition": [
        ("predictor-corrector: EM + Langevin (rate), CLD",
         case(cld_problem, lambda r: predictor_corrector(EulerMaruyama(r), LangevinCorrector(r, rate=1.0)), COUNTS)),
        ("predictor-corrector: ancestral + 2 Langevin (rate), VP",
         case(vp_problem, lambda r: predictor_corrector(ReverseDiffusion(r), LangevinCorrector(r, rate=2.0, steps=2)),
              COUNTS)),
        ("predictor-corrector with a fixed-size corrector: its bias stays (order 0), VP",
         case(vp_problem, lambda r: predictor_corrector(EulerMaruyama(r), LangevinCorrector(r, step_size=0.2)),
              COUNTS)),
    ],
}
