"""Bayesian logistic regression on scikit-learn's breast-cancer data (569 rows, 30 features + intercept).

The model: standardised features, coefficients and intercept with independent N(0, 1) priors, Bernoulli
likelihood; 31 parameters, written as a plain torch ``log_prob``. Every sampler is warmed up
(``splitdyn.mcmc.warmup``: step size by dual averaging or energy-error tuning, diagonal mass matrix from
windowed variances), then run; the report gives acceptance, divergences, ESS, R-hat and warnings, and with
the shipped reference (a long NUTS run, ``benchmarks/results/mcmc_reference_breast_cancer.json``, when
present) the largest |z| of posterior means and variances. The data ship with scikit-learn (no download).

Examples
--------
python examples/mcmc_logistic_breast_cancer.py
python examples/mcmc_logistic_breast_cancer.py --chains 1000 --samplers HMC MALA
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mcmc_cli import tuned_parser, warm_and_run  # noqa: E402
from splitdyn.mcmc import LogDensity  # noqa: E402

REFERENCE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "mcmc_reference_breast_cancer.json"


def design(dtype=torch.float64):
    """(X with an intercept column, y) of the standardised breast-cancer data."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = torch.as_tensor(data.data, dtype=dtype)
    X = (X - X.mean(0)) / X.std(0)
    X = torch.cat([torch.ones(X.shape[0], 1, dtype=dtype), X], 1)
    return X, torch.as_tensor(data.target, dtype=dtype)


def log_prob_factory(dtype=torch.float64):
    X, y = design(dtype)

    def log_prob(beta):  # (chains, 31) -> (chains,)
        logits = beta @ X.T
        return (y * logits - torch.nn.functional.softplus(logits)).sum(-1) - 0.5 * (beta**2).sum(-1)

    return log_prob


def reference():
    """The shipped reference posterior means and sds, or None."""
    if not REFERENCE.exists():
        return None
    data = json.loads(REFERENCE.read_text())
    return {"mean": torch.tensor(data["mean"], dtype=torch.float64), "sd": torch.tensor(data["sd"], dtype=torch.float64)}


def main(argv=None) -> dict:
    args = tuned_parser(__doc__, steps=1000, warmup_steps=500, chains=8,
                        samplers=("MALA", "HMC", "GHMC", "BAOAB")).parse_args(argv)
    args.example = "breast_cancer"
    x0 = 0.1 * torch.randn(args.chains, 31, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    return warm_and_run(LogDensity(log_prob_factory()), x0, args, reference=reference(), coordinates=(0, 1, 2),
                        names=["intercept", "beta_1", "beta_2"])


if __name__ == "__main__":
    main()
