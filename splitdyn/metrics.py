r"""Sample-based distances between distributions, and the mode-weight error of samples from a mixture.

- :func:`wasserstein_sliced`: the sliced Wasserstein-2 distance, exact per projection (1-D optimal transport
  between empirical measures, also for unequal sample sizes).
- :func:`mmd_rbf`: the unbiased estimate of the squared maximum mean discrepancy with a sum of Gaussian kernels.
- :func:`mode_frequencies` / :func:`mode_weight_error`: how samples distribute over the modes of a known
  :class:`~splitdyn.oracles.GaussianMixture` (a sampler that drops or over-weights modes scores badly even
  when each mode is sharp).

Samples are tensors of shape ``(n, *event_shape)``, flattened to ``(n, D)``; all computations are float64 on
the CPU and every function returns a python ``float`` (or a float64 tensor for :func:`mode_frequencies`).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import torch

from .checks import check_count, check_finite_tensor, check_generator, check_positive
from .oracles import GaussianMixture

__all__ = ["wasserstein_sliced", "mmd_rbf", "mode_frequencies", "mode_weight_error"]

_BLOCK = 2048  # rows per block of the kernel matrices in mmd_rbf
_PROJECTION_CHUNK = 32  # projections per block in wasserstein_sliced


def _as_samples(name: str, x, min_rows: int = 1) -> torch.Tensor:
    """``x`` flattened to a float64 CPU tensor ``(n, D)``, with errors naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of samples, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (n, *event_shape) with n samples on dim 0, got {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {x.shape[0]}")
    check_finite_tensor(name, x)
    return x.detach().reshape(x.shape[0], -1).to(device="cpu", dtype=torch.float64)


def _check_pair(x, y, min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    a = _as_samples("x", x, min_rows)
    b = _as_samples("y", y, min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"x and y must have the same event size, got shapes {tuple(x.shape)} and {tuple(y.shape)} "
            f"({a.shape[1]} != {b.shape[1]} values per sample)"
        )
    return a, b


def wasserstein_sliced(
    x: torch.Tensor,
    y: torch.Tensor,
    num_projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    r"""Sliced Wasserstein-2 distance between the empirical measures of ``x`` and ``y``.

    .. math::

        SW_2(x, y) = \Big(\frac1P \sum_{p=1}^P W_2^2\big(\theta_p^\top x,\ \theta_p^\top y\big)\Big)^{1/2},

    over ``P = num_projections`` random directions :math:`\theta_p` uniform on the unit sphere (drawn from
    ``generator``, on the CPU). Each 1-D distance is exact:
    :math:`W_2^2 = \int_0^1 (F_x^{-1}(q) - F_y^{-1}(q))^2\,dq` with the empirical quantile functions, which
    reduces to pairing sorted values when ``n == m`` and merges the two step functions' breakpoints otherwise.

    Parameters
    ----------
    x, y:
        Samples of shape ``(n, *event_shape)`` and ``(m, *event_shape)`` (flattened to ``D`` values each).
    num_projections:
        Number of random directions ``P``.
    generator:
        Optional CPU generator for the directions (pass a seeded one for reproducible values).

    Returns
    -------
    float
        The distance (in the units of the data). Its Monte Carlo error over directions shrinks like
        :math:`P^{-1/2}`; its finite-sample bias like :math:`n^{-1/2}` for two samples of one law.
    """
    a, b = _check_pair(x, y)
    num_projections = check_count("num_projections", num_projections)
    check_generator("generator", generator)
    D = a.shape[1]
    draw = generator.device if generator is not None else torch.device("cpu")
    theta = torch.randn(D, int(num_projections), generator=generator, dtype=torch.float64, device=draw).cpu()
    theta = theta / theta.norm(dim=0, keepdim=True)
    n, m = a.shape[0], b.shape[0]
    # Breakpoints of both quantile step functions on the integer grid {0, ..., n m}: F_x^{-1} is constant on
    # (i m, (i + 1) m], F_y^{-1} on (j n, (j + 1) n]. On each merged interval (lo, hi]: x index lo // m, y index
    # lo // n, weight (hi - lo) / (n m).
    points = torch.unique(torch.cat([torch.arange(0, n + 1) * m, torch.arange(0, m + 1) * n]))
    lo, hi = points[:-1], points[1:]
    weight = (hi - lo).to(torch.float64) / float(n * m)
    ix, iy = lo // m, lo // n
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, theta.shape[1], _PROJECTION_CHUNK):
        directions = theta[:, start : start + _PROJECTION_CHUNK]
        px = torch.sort(a @ directions, dim=0).values
        py = torch.sort(b @ directions, dim=0).values
        if n == m:  # pair the sorted values
            total = total + (px - py).square_().sum() / n
        else:
            total = total + (weight[:, None] * (px[ix] - py[iy]).square_()).sum()
    return math.sqrt(total.item() / theta.shape[1])


def mmd_rbf(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: float | Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.5),
    max_samples: int = 4000,
) -> float:
    r"""Unbiased estimate of the squared maximum mean discrepancy with a sum of Gaussian kernels.

    With :math:`k(a, b) = \sum_s \exp(-\|a - b\|^2 / (2 s^2))` over the ``bandwidths`` :math:`s`,

    .. math::

        \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)}\sum_{i \ne i'} k(x_i, x_{i'})
        + \frac{1}{m(m-1)}\sum_{l \ne l'} k(y_l, y_{l'}) - \frac{2}{nm}\sum_{i, l} k(x_i, y_l).

    It is zero in expectation when ``x`` and ``y`` come from the same law (so it can be slightly negative)
    and positive otherwise. The default bandwidths suit the 2-D toy data (modes of width ~0.04, layout of
    size ~1); pass bandwidths on the scale of your data otherwise.

    Parameters
    ----------
    x, y:
        Samples ``(n, *event_shape)`` and ``(m, *event_shape)``, at least 2 each. Only the first
        ``max_samples`` rows of each are used (the cost is quadratic): pass samples in random order.
    bandwidths:
        One positive bandwidth or a sequence of them.
    max_samples:
        Cap on the number of rows used from each sample.
    """
    max_samples = check_count("max_samples", max_samples, minimum=2)
    if isinstance(bandwidths, (Real, str)) or (isinstance(bandwidths, torch.Tensor) and bandwidths.ndim == 0):
        bandwidths = [bandwidths]
    try:
        scales = [check_positive("bandwidths", s) for s in bandwidths]
    except TypeError as exc:
        raise TypeError(f"bandwidths must be a positive number or a sequence of them, got {bandwidths!r}") from exc
    if not scales:
        raise ValueError("bandwidths must not be empty")
    a, b = _check_pair(x, y, min_rows=2)
    a, b = a[:max_samples], b[:max_samples]

    def kernel_sum(p: torch.Tensor, q: torch.Tensor, drop_diagonal: bool) -> float:
        total = 0.0
        for start in range(0, p.shape[0], _BLOCK):
            block = p[start : start + _BLOCK]
            d2 = torch.addmm((q * q).sum(1)[None], block, q.T, alpha=-2.0).add_((block * block).sum(1)[:, None])
            d2.clamp_(min=0.0)
            for s in scales:
                total += torch.exp(d2 * (-0.5 / (s * s))).sum().item()
        if drop_diagonal:
            total -= len(scales) * p.shape[0]  # k(a, a) = number of kernels
        return total

    n, m = a.shape[0], b.shape[0]
    xx = kernel_sum(a, a, True) / (n * (n - 1))
    yy = kernel_sum(b, b, True) / (m * (m - 1))
    xy = kernel_sum(a, b, False) / (n * m)
    return xx + yy - 2.0 * xy


def mode_frequencies(samples: torch.Tensor, mixture: GaussianMixture) -> torch.Tensor:
    r"""Fraction of ``samples`` assigned to each mode of ``mixture`` (the most responsible component,
    :math:`\arg\max_i w_i\,\mathcal{N}(x; m_i, \mathrm{diag}(s_i^2))`), float64 of shape ``(K,)``."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a splitdyn.oracles.GaussianMixture, got {type(mixture).__name__}")
    x = _as_samples("samples", samples)
    if x.shape[1] != mixture.dimension:
        raise ValueError(
            f"samples must have shape (n, *event_shape) = (n, {', '.join(map(str, mixture.event_shape))}), got "
            f"{tuple(samples.shape)}"
        )
    assignment = mixture.component_log_prob(x).argmax(1)
    counts = torch.bincount(assignment, minlength=mixture.num_components)
    return counts.to(torch.float64) / x.shape[0]


def mode_weight_error(samples: torch.Tensor, mixture: GaussianMixture) -> float:
    r"""Total-variation distance between the mode frequencies of ``samples`` and the mixture weights.

    .. math::

        \mathrm{TV} = \frac12 \sum_{i=1}^K \big|\hat f_i - w_i\big| \in [0, 1],

    with :math:`\hat f` from :func:`mode_frequencies`. Exact samples give :math:`O(\sqrt{K/n})` (plus the
    rare samples closer to another mode); samples that all fall in one mode give :math:`1 - w_i`.
    """
    freq = mode_frequencies(samples, mixture)
    return 0.5 * (freq - mixture.weights).abs().sum().item()
