"""Order-table cases of the few-step samplers (merged into ``ORDER_TABLE`` by tests/test_steps.py): UniPC and
DPM-Solver++(2M)'s midpoint form, from exact Gaussian moments (``Plan.gaussian_moments``: exact linear scores,
deterministic steps, so the fitted slopes carry no Monte Carlo noise).
"""

from __future__ import annotations

from functools import partial

import torch
from order_cases_pc import cld_problem, vp_problem

from splitdyn import ExponentialODE, PowerGrid, UniPC
from splitdyn.integrate import plan_step

F64 = torch.float64


def power_error(problem, rho=3.0):
    """error(step, n): |mean| + ||covariance error|| at the cutoff 1e-3 after n power-rho steps from the exact p_T."""

    def error(step, n):
        sde, S0, _ = problem()
        grid = PowerGrid(n, rho, 1e-3).reverse_times(sde.T).tolist()
        Phi, Q = sde.kernel(sde.T)
        k = S0.shape[0]
        mean, cov = torch.zeros(1, k, 1, dtype=F64), Phi @ S0 @ Phi.T + Q
        plan = plan_step(step, grid, mean, fuse=False)
        for i in range(n):
            mean, cov = plan.gaussian_moments(mean, cov, i)
        Phi, Q = sde.kernel(1e-3)
        return (cov - (Phi @ S0 @ Phi.T + Q)).norm().item() + mean.norm().item()

    return error


def case(problem, factory, counts):
    return lambda: (factory(problem()[2]), power_error(problem), counts)


#: name -> [(label, case)] as in tests/test_steps.py's ORDER_TABLE
FEWSTEP_ORDER_CASES = {
    "UniPC": [
        ("UniPC-1 (bh2), VP: DDIM + UniC-1", case(vp_problem, partial(UniPC, order=1), (32, 64, 128))),
        ("UniPC-2 (bh2), CLD", case(cld_problem, partial(UniPC, order=2), (32, 64, 128))),
        ("UniPC-3 (bh2), CLD", case(cld_problem, partial(UniPC, order=3), (64, 128, 256))),
        ("UniPC-2 (bh1), VP log-SNR", case(vp_problem, partial(UniPC, order=2, variant="bh1",
                                                              interpolation="log_snr"), (32, 64, 128))),
        # lower_order_final: DDIM's last step caps the order at 2 (on CLD's power grid still 1.65 at n = 256)
        ("UniPC-2 with lower_order_final, VP: order 2",
         case(vp_problem, partial(UniPC, order=2, lower_order_final=True), (128, 256, 512))),
    ],
    "ExponentialODE": [
        ("DPM-Solver++(2M) midpoint (bh2), VP log-SNR",
         case(vp_problem, partial(ExponentialODE, order=2, interpolation="log_snr", linear_rule="bh2"),
              (32, 64, 128))),
        ("order 2 with the bh1 rule, VP", case(vp_problem, partial(ExponentialODE, order=2, linear_rule="bh1"),
                                               (32, 64, 128))),
    ],
}
