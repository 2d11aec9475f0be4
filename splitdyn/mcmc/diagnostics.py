r"""Chain diagnostics: effective sample size and :math:`\hat R` per coordinate (arviz-stats), trace plots.

:func:`effective_sample_size` (bulk ESS) and :func:`rhat` (rank-normalised split :math:`\hat R`, Vehtari et
al. 2021) wrap ``arviz_stats``, an optional dependency (``pip install "splitdyn[mcmc]"``, imported only when
called). Samples have shape ``(draws, chains, *event)`` as kept by :func:`splitdyn.mcmc.run_chain`; results
have the event shape. :func:`plot_chains` draws traces and histograms with matplotlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..checks import check_count

__all__ = ["effective_sample_size", "rhat", "summarize", "plot_chains"]


def _array_stats():
    try:
        from arviz_stats.base import array_stats
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "splitdyn.mcmc diagnostics need the optional package arviz-stats: pip install 'splitdyn[mcmc]' "
            "(or pip install arviz-stats)"
        ) from exc
    return array_stats


def _as_array(samples):
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor (draws, chains, *event), got {type(samples).__name__}")
    if samples.ndim < 2 or samples.shape[0] < 4:
        raise ValueError(f"samples must have shape (draws >= 4, chains, *event), got {tuple(samples.shape)}")
    x = samples.detach().to("cpu", torch.float64)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 1, 0)  # (coordinates, chains, draws)
    return x.numpy(), samples.shape[2:]


def effective_sample_size(samples: torch.Tensor) -> torch.Tensor:
    """Bulk effective sample size per coordinate (all chains together), float64 of the event shape."""
    array, event = _as_array(samples)
    return torch.as_tensor(_array_stats().ess(array, chain_axis=-2, draw_axis=-1), dtype=torch.float64).reshape(event)


def rhat(samples: torch.Tensor) -> torch.Tensor:
    r"""Rank-normalised split :math:`\hat R` per coordinate (needs 2+ chains or 4+ draws), float64 of the event shape."""
    array, event = _as_array(samples)
    return torch.as_tensor(_array_stats().rhat(array, chain_axis=-2, draw_axis=-1), dtype=torch.float64).reshape(event)


def summarize(result: Any) -> dict:
    """Acceptance rate, ESS and R-hat per coordinate, and ESS per gradient evaluation and per second.

    Parameters
    ----------
    result:
        A :class:`~splitdyn.mcmc.run.ChainResult` that kept draws.
    """
    if getattr(result, "samples", None) is None:
        raise ValueError("result must be a ChainResult with kept draws (run_chain(..., keep=True))")
    ess = effective_sample_size(result.samples)
    r_hat = rhat(result.samples)
    out = {
        "ess": ess,
        "rhat": r_hat,
        "min_ess": float(ess.min()),
        "max_rhat": float(r_hat.max()),
        "ess_per_gradient": float(ess.min()) / max(result.nfe, 1),
        "ess_per_second": float(ess.min()) / result.seconds if result.seconds > 0 else math.inf,
    }
    if result.acceptance_rate is not None:
        out["acceptance_rate"] = float(result.acceptance_rate.mean())
        out["min_acceptance_rate"] = float(result.acceptance_rate.min())
    return out


def plot_chains(samples: torch.Tensor, coordinates: Sequence[int] = (0,),
                density: Callable[[torch.Tensor], Any] | None = None, bins: int = 60,
                path: str | os.PathLike | None = None, title: str = ""):
    """Trace (first chains) and histogram of the pooled draws for some flat coordinates; returns the figure.

    Parameters
    ----------
    samples:
        ``(draws, chains, *event)``.
    coordinates:
        Flat coordinate indices to show (one row each).
    density:
        Optional ``density(x) -> values`` of a 1-D marginal (NumPy or torch in, array out) drawn over the
        histogram.
    bins:
        Histogram bins.
    path:
        Save the figure there if given.
    title:
        Figure title.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(samples, torch.Tensor) or samples.ndim < 2:
        raise TypeError("samples must be a torch.Tensor of shape (draws, chains, *event)")
    x = samples.detach().to("cpu", torch.float64)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    coordinates = [int(c) for c in coordinates]
    if not coordinates or any(not 0 <= c < x.shape[2] for c in coordinates):
        raise ValueError(f"coordinates must be flat indices in [0, {x.shape[2]}), got {coordinates}")
    bins = check_count("bins", bins)
    if density is not None and not callable(density):
        raise TypeError(f"density must be callable(x) -> values, got {type(density).__name__}")
    fig, axes = plt.subplots(len(coordinates), 2, figsize=(9, 2.6 * len(coordinates)), squeeze=False)
    for row, c in enumerate(coordinates):
        trace, hist = axes[row]
        for chain in range(min(3, x.shape[1])):
            trace.plot(x[:, chain, c].numpy(), lw=0.5)
        trace.set_ylabel(f"x[{c}]")
        trace.set_xlabel("draw")
        values = x[:, :, c].reshape(-1)
        hist.hist(values.numpy(), bins=bins, density=True, alpha=0.6)
        if density is not None:
            grid = torch.linspace(float(values.min()), float(values.max()), 400, dtype=torch.float64)
            hist.plot(grid.numpy(), [float(v) for v in density(grid)], "k-", lw=1)
        hist.set_xlabel(f"x[{c}]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
