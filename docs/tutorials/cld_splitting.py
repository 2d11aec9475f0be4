"""Custom splitting samplers for CLD: SSCS with a second-order score step, and their weak orders.

SSCS composes the exact flow A of the linear part of the reverse CLD SDE with an Euler step S of
its score part, A(h/2) S(h) A(h/2); the Euler step makes it first order. A midpoint (RK2) step,
a custom step written below, restores Strang's second order at two score evaluations.

With Gaussian data the exact score is linear, so every sampler maps Gaussians to Gaussians: the
weak errors in the mean and covariance are computed exactly, without Monte Carlo noise, by pushing
the moments through every sub-step (``Step.gaussian_moments``). A Monte Carlo run of the
same samplers and of torchsde's Euler-Maruyama then checks the samples themselves.

Run ``python docs/tutorials/cld_splitting.py`` (about a minute on 2 CPU cores; ``--grid uniform``
for equal steps). docs/tutorials/custom_splitting.rst shows this file; tests/test_docs.py runs it
with small settings.
"""

from __future__ import annotations

import argparse
import math

import torch

import splitdyn
from splitdyn import EulerDrift, EulerMaruyama, ExactLinearFlow, Plan, Step, integrate, make_grid, strang
from splitdyn.oracles import DiffusedGaussianMixture, GaussianMixture
from splitdyn_cld import CLD

EPS = 1e-3  # sampling cutoff: the reverse SDE runs from forward time T down to EPS
DATA_MEAN, DATA_STD = 0.7, 0.3  # 1-D Gaussian data


# --- a custom step: a midpoint (RK2) step of a drift, two evaluations per call ------------------
class MidpointDrift(Step):
    """u -> u + h b(u + h/2 b(u, t), t + h/2): local error O(h^3), where Euler's is O(h^2)."""

    nfe = 2
    weak_order = 2.0

    def __init__(self, drift):
        self.drift = drift  # b(u, t), here the score part of the reverse SDE

    def plan(self, intervals, like):
        # all host work once per grid: here just the times and step sizes as Python floats
        return MidpointPlan(self.drift, intervals.starts.tolist(), intervals.spans.tolist())


class MidpointPlan(Plan):
    def __init__(self, drift, times, spans):
        self.drift, self.times, self.spans, self.n = drift, times, spans, len(times)
        self.evaluations = 0

    def __call__(self, u, i, generator=None):
        t, h = self.times[i], self.spans[i]
        self.evaluations += 2
        return u + h * self.drift(u + 0.5 * h * self.drift(u, t), t + 0.5 * h)

    def gaussian_moments(self, mean, covariance, i):
        # exact for a map affine in u: the mean goes through the map, the covariance through
        # its Jacobian
        shape, n = mean.shape, mean.numel()

        def flat_map(x):
            return self(x.reshape(shape), i).reshape(n)

        J = torch.func.jacrev(flat_map)(mean.reshape(n))
        return flat_map(mean.reshape(n)).reshape(shape), J @ covariance @ J.T


# --- the problem and the samplers ---------------------------------------------------------------
def setup():
    cld = CLD()
    data = GaussianMixture([[DATA_MEAN]], DATA_STD)  # one component: a Gaussian
    oracle = DiffusedGaussianMixture(data, cld, initial_covariance=[[cld.gamma * cld.mass]])
    reverse = cld.reverse(oracle.score_fn([1]))  # the reverse SDE needs the velocity score only
    return cld, reverse


def samplers(cld, reverse) -> dict:
    A = ExactLinearFlow(cld.reverse_linear_part())  # exact Gaussian flow of the linear part
    return {
        "SSCS (Euler S)": strang(A, EulerDrift(reverse.score_part())),
        "Strang, midpoint S": strang(A, MidpointDrift(reverse.score_part())),
        "Euler-Maruyama": EulerMaruyama(reverse),
    }


def exact_moments(cld, t):
    """Mean (1, 2, 1) and covariance (2, 2) of u_t for the Gaussian data."""
    Phi, Q = cld.kernel(t)
    S0 = torch.tensor([[DATA_STD**2, 0.0], [0.0, cld.gamma * cld.mass]], dtype=torch.float64)
    mean = Phi @ torch.tensor([DATA_MEAN, 0.0], dtype=torch.float64)
    return mean.reshape(1, 2, 1), Phi @ S0 @ Phi.T + Q


def weak_error(step, cld, n_steps: int, grid: str = "quadratic") -> float:
    """Largest error in the mean and covariance at forward time EPS, from the exact law at T."""
    mean, cov = exact_moments(cld, cld.T)
    times = make_grid(grid, n_steps, cld.T, EPS).tolist()  # reverse time tau = T - t
    for tau, next_tau in zip(times[:-1], times[1:], strict=True):
        mean, cov = step.gaussian_moments(mean, cov, tau, next_tau - tau)
    exact_mean, exact_cov = exact_moments(cld, EPS)
    return max((mean - exact_mean).abs().max().item(), (cov - exact_cov).abs().max().item())


def order_table(steps=(10, 20, 40, 80, 160, 320), grid: str = "quadratic") -> dict:
    """``{sampler: [(n_steps, weak error), ...]}``."""
    cld, reverse = setup()
    return {name: [(n, weak_error(step, cld, n, grid)) for n in steps]
            for name, step in samplers(cld, reverse).items()}


def observed_orders(rows) -> list[float]:
    return [math.log2(a[1] / b[1]) / math.log2(b[0] / a[0]) for a, b in zip(rows[:-1], rows[1:], strict=True)]


# --- Monte Carlo: the samples themselves, and torchsde's Euler-Maruyama --------------------------
def monte_carlo(n_samples=20_000, n_steps=50, reference_steps=1000, grid="quadratic", seed=0):
    """Mean and variance of x at forward time EPS: exact, each sampler, and torchsde."""
    cld, reverse = setup()
    mean, cov = exact_moments(cld, cld.T)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_samples, 2, 1, generator=generator, dtype=torch.float64)
    u0 = mean + torch.einsum("ij,bjd->bid", torch.linalg.cholesky(cov), noise)
    exact_mean, exact_cov = exact_moments(cld, EPS)
    variance = exact_cov[0, 0].item()
    results = {"exact": (exact_mean[0, 0, 0].item(), variance)}
    for name, step in samplers(cld, reverse).items():
        times = make_grid(grid, n_steps, cld.T, EPS)
        x = integrate(step, u0, times, generator=generator).state[:, 0, 0]
        results[f"{name}, {n_steps} steps"] = (x.mean().item(), x.var().item())
    times = make_grid("uniform", reference_steps, cld.T, EPS)
    x = splitdyn.sample(cld, reverse.score, u0, times, step="torchsde-euler",  # torchsde.sdeint, "euler"
                        denoise=False).state[:, 0, 0]
    results[f"torchsde Euler, {reference_steps} steps"] = (x.mean().item(), x.var().item())
    results["Monte Carlo standard errors"] = (math.sqrt(variance / n_samples),
                                              variance * math.sqrt(2.0 / n_samples))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80, 160, 320])
    parser.add_argument("--grid", choices=["quadratic", "uniform"], default="quadratic")
    parser.add_argument("--samples", type=int, default=20_000, help="Monte Carlo samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = order_table(args.steps, args.grid)
    print(f"largest error in the mean and covariance at t = eps (exact moments, {args.grid} grid)")
    print(("steps  " + "".join(f"{name:21s}" for name in table)).rstrip())
    for i, n in enumerate(args.steps):
        print((f"{n:<7d}" + "".join(f"{rows[i][1]:<21.2e}" for rows in table.values())).rstrip())
    orders = "".join(f"{observed_orders(rows)[-1]:<21.2f}" for rows in table.values())
    print(f"order  {orders}(from the last two rows)")
    print(f"\nmean and variance of x at t = eps, {args.samples} samples ({args.grid} grid)")
    for name, (m, v) in monte_carlo(args.samples, grid=args.grid).items():
        print(f"{name:32s} {m:.4f}  {v:.4f}")


if __name__ == "__main__":
    main()
