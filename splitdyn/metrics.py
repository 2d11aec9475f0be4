"""Sample-based distances between distributions and the mode-weight error of a mixture fit."""

from __future__ import annotations

import torch

__all__ = ["wasserstein_sliced", "mmd_rbf", "mode_weight_error"]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have shapes (n, d) and (m, d) with the same d, got {tuple(x.shape)} and {tuple(y.shape)}")


def wasserstein_sliced(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    r"""Sliced Wasserstein-2 distance :math:`\big(\mathbb{E}_\theta W_2^2(\theta^\top x, \theta^\top y)\big)^{1/2}`
    over random unit directions :math:`\theta` (1-D optimal transport by sorting; unequal sizes via quantiles)."""
    _check_pair(x, y)
    x, y = x.to(torch.float64).cpu(), y.to(torch.float64).cpu()
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    n = min(len(px), len(py), 4096)
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qx = torch.quantile(px, q, dim=0) if len(px) != n else px
    qy = torch.quantile(py, q, dim=0) if len(py) != n else py
    return ((qx - qy) ** 2).mean().sqrt().item()


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.02, 0.05, 0.1, 0.2, 0.5), max_samples: int = 4000) -> float:
    """Unbiased squared MMD with a sum of Gaussian kernels of the given bandwidths (first ``max_samples`` rows)."""
    _check_pair(x, y)
    x, y = x[:max_samples].to(torch.float64).cpu(), y[:max_samples].to(torch.float64).cpu()

    def k(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return ((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) - 2 * kxy.mean()).item()


def mode_weight_error(samples: torch.Tensor, mixture) -> float:
    """Total-variation distance between the empirical mode frequencies (each sample assigned to its most
    responsible component) and the mixture's weights."""
    assignment = mixture.responsibilities(samples).argmax(1)
    freq = torch.bincount(assignment, minlength=mixture.num_components).to(torch.float64) / len(samples)
    return 0.5 * (freq - mixture.weights).abs().sum().item()
