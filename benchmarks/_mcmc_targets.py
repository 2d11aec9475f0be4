"""Targets of the MCMC benchmark (closed-form gradients, torch and JAX versions) and an expert's hand loops.

The hand loops are what someone fluent in PyTorch writes for one sampler and one target: separate position
and momentum tensors updated in place, the energy and gradient of the current state carried along, no
bookkeeping beyond what the algorithm needs. They are the floor the library's per-step cost is held to.
"""

from __future__ import annotations

import math

import torch

#: name -> dimension, step sizes (ULA and MALA h, HMC epsilon, BAOAB h), HMC leapfrog steps, initial scale
SETTINGS = {
    "double_well": {"dim": 1, "ula": 0.01, "mala": 0.1, "hmc": 0.1, "baoab": 0.1, "leapfrog": 10, "init": 0.5},
    "banana": {"dim": 2, "ula": 0.01, "mala": 0.05, "hmc": 0.1, "baoab": 0.1, "leapfrog": 10, "init": 0.5},
    "gaussian_100d": {"dim": 100, "ula": 0.002, "mala": 0.002, "hmc": 0.05, "baoab": 0.05, "leapfrog": 10,
                      "init": 0.3},
}
STDS_100D = torch.logspace(-1, 0, 100, dtype=torch.float64)  # standard deviations 0.1 .. 1: condition number 100


def torch_target(name: str, dtype=torch.float32):
    """``(energy, gradient)`` for positions ``(chains, dim)``."""
    if name == "double_well":
        return (lambda x: ((x * x - 1.0) ** 2).sum(-1)), (lambda x: 4.0 * x * (x * x - 1.0))
    if name == "banana":
        def energy(x):
            r = x[:, 1] - 0.5 * x[:, 0] ** 2
            return x[:, 0] ** 2 / 8.0 + 2.0 * r * r

        def gradient(x):
            r = x[:, 1] - 0.5 * x[:, 0] ** 2
            return torch.stack((x[:, 0] / 4.0 - 4.0 * r * x[:, 0], 4.0 * r), 1)

        return energy, gradient
    precision = (1.0 / STDS_100D**2).to(dtype)
    return (lambda x: 0.5 * (x * x * precision).sum(-1)), (lambda x: x * precision)


def jax_logdensity(name: str):
    import jax.numpy as jnp

    if name == "double_well":
        return lambda x: -jnp.sum((x * x - 1.0) ** 2)
    if name == "banana":
        return lambda x: -(x[0] ** 2 / 8.0 + 2.0 * (x[1] - 0.5 * x[0] ** 2) ** 2)
    precision = jnp.asarray((1.0 / STDS_100D**2).numpy(), dtype=jnp.float32)
    return lambda x: -0.5 * jnp.sum(x * x * precision)


def hand_ula(grad, x, n, h, g):
    x = x.clone()
    s = math.sqrt(2 * h)
    for _ in range(n):
        x.add_(grad(x), alpha=-h).add_(torch.randn(x.shape, generator=g, dtype=x.dtype), alpha=s)
    return x


def hand_mala(energy, grad, x, n, h, g):
    s = math.sqrt(2 * h)
    U, gx = energy(x), grad(x)
    for _ in range(n):
        xi = torch.randn(x.shape, generator=g, dtype=x.dtype)
        y = torch.add(x, gx, alpha=-h).add_(xi, alpha=s)
        Uy, gy = energy(y), grad(y)
        back = torch.add(x - y, gy, alpha=h)
        log_alpha = U - Uy - (back * back).sum(1) / (4 * h) + 0.5 * (xi * xi).sum(1)
        accept = torch.rand(log_alpha.shape, generator=g, dtype=x.dtype).log() < log_alpha
        x = torch.where(accept[:, None], y, x)
        U = torch.where(accept, Uy, U)
        gx = torch.where(accept[:, None], gy, gx)
    return x


def hand_hmc(energy, grad, x, n, eps, L, g):
    U, gx = energy(x), grad(x)
    for _ in range(n):
        p = torch.randn(x.shape, generator=g, dtype=x.dtype)
        H0 = U + 0.5 * (p * p).sum(1)
        q = x.clone()
        p1 = torch.add(p, gx, alpha=-0.5 * eps)
        for step in range(L):
            q.add_(p1, alpha=eps)
            gq = grad(q)
            p1.add_(gq, alpha=-0.5 * eps if step == L - 1 else -eps)
        Uq = energy(q)
        accept = torch.rand(U.shape, generator=g, dtype=x.dtype).log() < H0 - Uq - 0.5 * (p1 * p1).sum(1)
        x = torch.where(accept[:, None], q, x)
        U = torch.where(accept, Uq, U)
        gx = torch.where(accept[:, None], gq, gx)
    return x


def hand_baoab(grad, q, p, n, h, g, friction=1.0):
    q, p = q.clone(), p.clone()
    c1 = math.exp(-friction * h)
    c2 = math.sqrt(1 - c1 * c1)
    f = grad(q)
    for _ in range(n):
        p.add_(f, alpha=-0.5 * h)
        q.add_(p, alpha=0.5 * h)
        p.mul_(c1).add_(torch.randn(p.shape, generator=g, dtype=p.dtype), alpha=c2)
        q.add_(p, alpha=0.5 * h)
        f = grad(q)
        p.add_(f, alpha=-0.5 * h)
    return q, p


# --- real posteriors (the models of examples/mcmc_logistic_breast_cancer.py and examples/mcmc_eight_schools.py) ---
EIGHT_SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SCHOOLS_SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def breast_cancer_design():
    """(X with an intercept column, y) of scikit-learn's breast-cancer data, features standardised (float64)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = torch.as_tensor(data.data, dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0)
    return torch.cat([torch.ones(X.shape[0], 1, dtype=torch.float64), X], 1), torch.as_tensor(data.target,
                                                                                              dtype=torch.float64)


def jax_posterior(name: str):
    """``(log density of one position, dimension)`` in JAX for ``breast_cancer`` or ``eight_schools``."""
    import jax
    import jax.numpy as jnp

    if name == "breast_cancer":
        X, y = breast_cancer_design()
        X, y = jnp.asarray(X.numpy()), jnp.asarray(y.numpy())

        def logdensity(beta):
            logits = X @ beta
            return jnp.sum(y * logits - jax.nn.softplus(logits)) - 0.5 * jnp.sum(beta**2)

        return logdensity, X.shape[1]
    Y, S = jnp.asarray(EIGHT_SCHOOLS_Y), jnp.asarray(EIGHT_SCHOOLS_SIGMA)

    def logdensity(z):
        mu, log_tau, eta = z[0], z[1], z[2:]
        tau = jnp.exp(log_tau)
        theta = mu + tau * eta
        return (jnp.sum(-0.5 * ((Y - theta) / S) ** 2) - 0.5 * (mu / 5.0) ** 2 - jnp.log1p((tau / 5.0) ** 2)
                + log_tau - 0.5 * jnp.sum(eta**2))

    return logdensity, 10
