r"""Time grids for samplers, in reverse time :math:`\tau = T - t`.

Samplers integrate the reverse-time dynamics from :math:`\tau = 0` (the prior, forward time ``T``) to
:math:`\tau = T - \epsilon` (forward time :math:`\epsilon`, the cutoff), usually followed by a denoising step
of size :math:`\epsilon`. Grids are float64 CPU tensors of ``n + 1`` increasing times (``n`` steps): keeping
them on the CPU means no device synchronisation per step.
"""

from __future__ import annotations

import torch

from .checks import check_nonnegative, check_positive

__all__ = ["uniform_grid", "quadratic_grid", "make_grid", "forward_times", "check_grid"]


def _check(n: int, T: float, eps: float) -> tuple[float, float]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of steps) must be a positive int, got {n!r}")
    T = check_positive("T", T)
    eps = check_nonnegative("eps", eps)
    if eps >= T:
        raise ValueError(f"eps must be smaller than T = {T}, got {eps}")
    return T, eps


def uniform_grid(n: int, T: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    r"""``n`` equal steps :math:`\tau_k = (T - \epsilon)\,k/n`, ``k = 0..n``."""
    T, eps = _check(n, T, eps)
    return torch.linspace(0.0, T - eps, n + 1, dtype=torch.float64)


def quadratic_grid(n: int, T: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    r"""Quadratic striding (paper App. E.2.3): :math:`\tau_k = (T - \epsilon)\,(1 - (1 - k/n)^2)`.

    Steps shrink linearly towards the data end (:math:`\tau \to T - \epsilon`), where the score changes fastest.
    """
    T, eps = _check(n, T, eps)
    k = torch.arange(n + 1, dtype=torch.float64)
    return (T - eps) * (1.0 - (1.0 - k / n) ** 2)


def make_grid(kind: str, n: int, T: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    """``uniform_grid`` or ``quadratic_grid`` by name (``"uniform"`` / ``"quadratic"``)."""
    grids = {"uniform": uniform_grid, "quadratic": quadratic_grid}
    if kind not in grids:
        raise ValueError(f"grid must be one of {sorted(grids)}, got {kind!r}")
    return grids[kind](n, T, eps)


def forward_times(grid: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    r"""Map reverse times :math:`\tau` to forward times :math:`t = T - \tau`."""
    return T - grid


def check_grid(grid, name: str = "grid") -> list[float]:
    """Validate a 1-D strictly increasing finite grid; return it as a list of Python floats."""
    g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    if g.ndim != 1 or g.numel() < 2:
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 times, got shape {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise ValueError(f"{name} must be finite")
    steps = g[1:] - g[:-1]
    if bool((steps <= 0).any()):
        i = int((steps <= 0).nonzero()[0])
        raise ValueError(
            f"{name} must be strictly increasing (step sizes must be positive); step {i} is {steps[i].item()}"
        )
    return g.tolist()
