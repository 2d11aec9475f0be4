"""The eight-schools hierarchical model (Rubin 1981; Gelman et al., BDA3 Sec. 5.5) in its non-centred form.

Data: the estimated coaching effects y_j and their standard errors sigma_j of eight schools (shipped below).
Model: mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j = mu + tau * eta_j with eta_j ~ N(0, 1), y_j ~ N(theta_j,
sigma_j). Sampled in the unconstrained coordinates (mu, log tau, eta_1..eta_8) with the Jacobian of
tau = exp(log tau); the non-centred form removes the funnel that makes the centred one diverge. Every sampler is
warmed up, then run; the report gives acceptance, divergences, ESS, R-hat, and with the shipped reference
(``benchmarks/results/mcmc_reference_eight_schools.json``, when present) the largest |z| against it.

Examples
--------
python examples/mcmc_eight_schools.py
python examples/mcmc_eight_schools.py --chains 1000 --samplers HMC
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mcmc_cli import tuned_parser, warm_and_run  # noqa: E402
from splitdyn.mcmc import LogDensity  # noqa: E402

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)
NAMES = ["mu", "log_tau"] + [f"eta_{j}" for j in range(1, 9)]
REFERENCE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "mcmc_reference_eight_schools.json"


def log_prob(z):
    """log p(mu, log tau, eta | y) up to a constant; ``z`` is (chains, 10)."""
    mu, log_tau, eta = z[:, 0], z[:, 1], z[:, 2:]
    tau = log_tau.exp()
    theta = mu[:, None] + tau[:, None] * eta
    log_lik = (-0.5 * ((Y - theta) / SIGMA) ** 2).sum(-1)
    log_prior_mu = -0.5 * (mu / 5.0) ** 2
    log_prior_tau = -torch.log1p((tau / 5.0) ** 2) + log_tau  # HalfCauchy(5) density times the Jacobian dtau/dlog tau
    log_prior_eta = -0.5 * (eta**2).sum(-1)
    return log_lik + log_prior_mu + log_prior_tau + log_prior_eta


def reference():
    """The shipped reference posterior means and sds of (mu, log tau, eta), or None."""
    if not REFERENCE.exists():
        return None
    data = json.loads(REFERENCE.read_text())
    return {"mean": torch.tensor(data["mean"], dtype=torch.float64), "sd": torch.tensor(data["sd"], dtype=torch.float64)}


def main(argv=None) -> dict:
    args = tuned_parser(__doc__, steps=1000, warmup_steps=500, chains=8,
                        samplers=("MALA", "HMC", "GHMC", "BAOAB")).parse_args(argv)
    args.example = "eight_schools"
    x0 = torch.randn(args.chains, 10, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    x0[:, 1] = math.log(5.0) + 0.5 * x0[:, 1]
    return warm_and_run(LogDensity(log_prob), x0, args, reference=reference(), coordinates=(0, 1, 2), names=NAMES)


if __name__ == "__main__":
    main()
