r"""Chain diagnostics: effective sample size and :math:`\hat R` per coordinate (arviz-stats), trace plots.

:func:`effective_sample_size` (bulk ESS) and :func:`rhat` (rank-normalised split :math:`\hat R`, Vehtari et
al. 2021) wrap ``arviz_stats``, an optional dependency (``pip install "splitdyn[mcmc]"``, imported only when
called). Samples have shape ``(draws, chains, *event)`` as kept by :func:`splitdyn.mcmc.run_chain`; results
have the event shape. Draws containing NaN or infinity are refused (the estimators would return NaN
silently), and :func:`rhat` needs at least 2 chains. :func:`summarize` collects the warnings of a run
(:class:`~splitdyn.mcmc.diagnostics.MCMCWarning`) and adds those of R-hat and ESS. :func:`plot_chains` draws traces
and histograms, :func:`plot_ranks` rank histograms per chain (Vehtari et al. 2021), with matplotlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..checks import check_count

__all__ = ["effective_sample_size", "rhat", "summarize", "plot_chains", "plot_ranks", "MCMCWarning", "THRESHOLDS"]

#: Default limits of the post-run checks: mean acceptance rate below ``"acceptance"``, R-hat above ``"rhat"``,
#: bulk ESS below ``"ess"`` raise an :class:`MCMCWarning`.
THRESHOLDS = {"acceptance": 0.1, "rhat": 1.01, "ess": 400.0}


class MCMCWarning(UserWarning):
    """A run finished but its draws are suspect (low acceptance, divergences, R-hat, ESS, left the support)."""


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
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"samples contain {bad} NaN or infinite values: ESS and R-hat are undefined (did a chain "
                         "diverge, or were draws not filled?)")
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 1, 0)  # (coordinates, chains, draws)
    return x.numpy(), samples.shape[2:]


def effective_sample_size(samples: torch.Tensor) -> torch.Tensor:
    """Bulk effective sample size per coordinate (all chains together), float64 of the event shape."""
    array, event = _as_array(samples)
    return torch.as_tensor(_array_stats().ess(array, chain_axis=-2, draw_axis=-1), dtype=torch.float64).reshape(event)


def rhat(samples: torch.Tensor) -> torch.Tensor:
    r"""Rank-normalised split :math:`\hat R` per coordinate (needs 2+ chains and 4+ draws), float64 of the event shape."""
    if isinstance(samples, torch.Tensor) and samples.ndim >= 2 and samples.shape[1] < 2:
        raise ValueError(f"rhat compares chains: samples must have at least 2 chains, got shape {tuple(samples.shape)} "
                         "(draws, chains, *event); run several chains")
    array, event = _as_array(samples)
    return torch.as_tensor(_array_stats().rhat(array, chain_axis=-2, draw_axis=-1), dtype=torch.float64).reshape(event)


def summarize(result: Any, thresholds: dict | None = None) -> dict:
    """Acceptance, divergences, ESS and R-hat per coordinate, ESS per gradient and per second, and warnings.

    Parameters
    ----------
    result:
        A :class:`~splitdyn.mcmc.run.ChainResult` that kept draws.
    thresholds:
        Overrides of :data:`splitdyn.mcmc.diagnostics.THRESHOLDS` (``acceptance``, ``rhat``, ``ess``).

    Returns
    -------
    dict
        ``ess``, ``rhat`` (NaN for one chain), ``min_ess``, ``max_rhat``, ``ess_per_gradient``,
        ``ess_per_second``, acceptance and divergence figures when the kernel has them, and ``warnings``: the
        run's warnings plus non-finite or large R-hat and low ESS (also issued as
        :class:`~splitdyn.mcmc.diagnostics.MCMCWarning`).
    """
    import warnings


    limits = {**THRESHOLDS, **(thresholds or {})}
    if getattr(result, "samples", None) is None:
        raise ValueError("result must be a ChainResult with kept draws (run_chain(..., keep=True))")
    ess = effective_sample_size(result.samples)
    messages = list(getattr(result, "warnings", []) or [])
    new = []
    if result.samples.shape[1] >= 2:
        r_hat = rhat(result.samples)
        max_rhat = float(r_hat.max()) if bool(torch.isfinite(r_hat).all()) else math.inf
        if not math.isfinite(max_rhat):
            new.append("R-hat is not finite for some coordinates (a chain that never moved, or constant draws)")
        elif max_rhat > limits["rhat"]:
            new.append(f"max R-hat {max_rhat:.4g} is above {limits['rhat']}: the chains disagree (not mixed, or "
                       "too short); run longer or warm up")
    else:
        r_hat = torch.full(ess.shape, math.nan, dtype=torch.float64)
        max_rhat = math.nan
        new.append("R-hat needs at least 2 chains; this run has 1, so convergence is not checked")
    if float(ess.min()) < limits["ess"]:
        new.append(f"min bulk ESS {float(ess.min()):.1f} is below {limits['ess']:g}: estimates are noisy; run longer "
                   "or more chains")
    for message in new:
        warnings.warn(message, MCMCWarning, stacklevel=2)
    out = {
        "ess": ess,
        "rhat": r_hat,
        "min_ess": float(ess.min()),
        "max_rhat": max_rhat,
        "ess_per_gradient": float(ess.min()) / max(result.nfe, 1),
        "ess_per_second": float(ess.min()) / result.seconds if result.seconds > 0 else math.inf,
    }
    if result.acceptance_rate is not None:
        out["acceptance_rate"] = float(result.acceptance_rate.mean())
        out["min_acceptance_rate"] = float(result.acceptance_rate.min())
    if getattr(result, "divergences", None) is not None:
        out["divergences"] = int(result.divergences.sum())
        out["divergent_chains"] = int((result.divergences > 0).sum())
    out["warnings"] = messages + new
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


def plot_ranks(samples: torch.Tensor, coordinates: Sequence[int] = (0,), bins: int = 20,
               path: str | os.PathLike | None = None, title: str = ""):
    """Rank plots: per coordinate, the histogram per chain of the ranks of its draws among all chains' draws.

    Uniform histograms mean the chains sample the same law (Vehtari et al. 2021); returns the figure.

    Parameters
    ----------
    samples:
        ``(draws, chains, *event)``.
    coordinates:
        Flat coordinate indices (one panel each).
    bins:
        Rank bins.
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
    fig, axes = plt.subplots(1, len(coordinates), figsize=(3.2 * len(coordinates), 2.6), squeeze=False)
    draws, chains = x.shape[0], x.shape[1]
    for ax, c in zip(axes[0], coordinates):
        ranks = x[:, :, c].reshape(-1).argsort().argsort().reshape(draws, chains).to(torch.float64)
        for chain in range(min(chains, 8)):
            counts = torch.histc(ranks[:, chain], bins=bins, min=0, max=draws * chains - 1)
            ax.step(range(bins), counts.numpy(), where="mid", lw=0.8)
        ax.axhline(draws / bins, color="k", lw=0.8, ls="--")
        ax.set_xlabel(f"rank bin, x[{c}]")
    axes[0][0].set_ylabel("draws")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
