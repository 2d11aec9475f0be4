r"""Time grids for samplers, in reverse time :math:`\tau = T - t`.

Samplers integrate the reverse-time dynamics from :math:`\tau = 0` (the prior, forward time ``T``) to
:math:`\tau = T - \epsilon` (forward time :math:`\epsilon`, the cutoff), usually followed by a denoising step
of size :math:`\epsilon`. Grids are float64 CPU tensors of ``n + 1`` increasing times (``n`` steps): keeping
them on the CPU means no device synchronisation per step.

A grid is described by a :class:`Grid` object (:class:`UniformGrid`, :class:`QuadraticGrid`,
:class:`PowerGrid`, :class:`LogSNRGrid`, :class:`GivenGrid`) with the step count ``n`` and the cutoff ``eps``,
and materialised for a horizon ``T`` by :meth:`Grid.reverse_times`. The functions :func:`uniform_grid`,
:func:`quadratic_grid` and :func:`make_grid` return the tensors directly.

:class:`InformationLogSNR` gives any linear SDE (CLD included) a scalar log-SNR, so that :class:`LogSNRGrid`
applies to it; :mod:`splitdyn.grid_search` optimises a grid for a sampler and a budget and returns a
:class:`GivenGrid`, which :meth:`GivenGrid.to_dict` / :meth:`GivenGrid.from_dict` save and restore.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from .checks import as_float64, check_count, check_nonnegative, check_positive

__all__ = [
    "Grid",
    "UniformGrid",
    "QuadraticGrid",
    "PowerGrid",
    "LogSNRGrid",
    "GivenGrid",
    "InformationLogSNR",
    "uniform_grid",
    "quadratic_grid",
    "make_grid",
    "check_grid",
]


def _check_horizon(T: float, eps: float) -> float:
    T = check_positive("T", T)
    if eps >= T:
        raise ValueError(f"eps must be smaller than T = {T}, got {eps}")
    return T


class Grid(ABC):
    r"""A reverse-time grid :math:`0 = \tau_0 < \tau_1 < \dots < \tau_n = T - \epsilon`.

    Attributes
    ----------
    n:
        The number of steps.
    eps:
        The forward-time cutoff :math:`\epsilon \ge 0` where the grid stops.
    """

    n: int
    eps: float

    def __init__(self, n: int, eps: float = 1e-3) -> None:
        self.n = check_count("n (the number of steps)", n)
        self.eps = check_nonnegative("eps", eps)

    @abstractmethod
    def _fractions(self, T: float) -> torch.Tensor:
        """n + 1 increasing float64 values from 0 to T - eps (T already checked against eps)."""

    def reverse_times(self, T: float = 1.0) -> torch.Tensor:
        r"""The ``n + 1`` reverse times :math:`\tau_0 = 0 < \dots < \tau_n = T - \epsilon` (float64, CPU).

        Raises ``ValueError`` unless :math:`0 \le \epsilon < T`, or if the times would not be strictly increasing
        (e.g. more steps than float64 can separate).
        """
        T = _check_horizon(T, self.eps)
        tau = self._fractions(T)
        tau[0] = 0.0
        tau[-1] = T - self.eps
        check_grid(tau, f"the {type(self).__name__} times")
        return tau

    def __len__(self) -> int:
        return self.n + 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, eps={self.eps})"


class UniformGrid(Grid):
    r"""``n`` equal steps :math:`\tau_k = (T - \epsilon)\,k/n`, ``k = 0..n``.

    Parameters
    ----------
    n:
        Number of steps (a positive integer).
    eps:
        Forward-time cutoff :math:`\epsilon \ge 0`.
    """

    def _fractions(self, T: float) -> torch.Tensor:
        return torch.linspace(0.0, T - self.eps, self.n + 1, dtype=torch.float64)


class QuadraticGrid(Grid):
    r"""Quadratic striding (CLD paper App. E.2.3): :math:`\tau_k = (T - \epsilon)\,(1 - (1 - k/n)^2)`.

    Steps shrink linearly towards the data end (:math:`\tau \to T - \epsilon`), where the score changes fastest.

    Parameters
    ----------
    n:
        Number of steps (a positive integer).
    eps:
        Forward-time cutoff :math:`\epsilon \ge 0`.
    """

    def _fractions(self, T: float) -> torch.Tensor:
        k = torch.arange(self.n + 1, dtype=torch.float64)
        return (T - self.eps) * (1.0 - (1.0 - k / self.n) ** 2)


class PowerGrid(Grid):
    r"""Power-:math:`\rho` spacing in forward time (Karras et al. 2022, "EDM"):

    .. math::

        t_k = \left(T^{1/\rho} + \tfrac{k}{n}\,(\epsilon^{1/\rho} - T^{1/\rho})\right)^{\rho},\qquad
        \tau_k = T - t_k,

    so :math:`t_0 = T` and :math:`t_n = \epsilon`. :math:`\rho = 1` is :class:`UniformGrid`; larger
    :math:`\rho` concentrates the steps near the data end (EDM uses :math:`\rho = 7` on noise levels).

    Parameters
    ----------
    n:
        Number of steps (a positive integer).
    rho:
        The exponent :math:`\rho > 0`.
    eps:
        Forward-time cutoff :math:`\epsilon \ge 0`.
    """

    def __init__(self, n: int, rho: float, eps: float = 1e-3) -> None:
        super().__init__(n, eps)
        self.rho = check_positive("rho", rho)

    def _fractions(self, T: float) -> torch.Tensor:
        k = torch.arange(self.n + 1, dtype=torch.float64)
        top, bottom = T ** (1.0 / self.rho), self.eps ** (1.0 / self.rho)
        t = (top + k / self.n * (bottom - top)) ** self.rho
        return T - t

    def __repr__(self) -> str:
        return f"PowerGrid(n={self.n}, rho={self.rho}, eps={self.eps})"


class LogSNRGrid(Grid):
    r"""Steps uniform in the log signal-to-noise ratio :math:`\lambda(t)` of a process, from :math:`\lambda(T)` to
    :math:`\lambda(\epsilon)`: :math:`t_k = \lambda^{-1}(\lambda(T) + \tfrac{k}{n}(\lambda(\epsilon) - \lambda(T)))`,
    :math:`\tau_k = T - t_k`.

    Parameters
    ----------
    n:
        Number of steps (a positive integer).
    process:
        Any object with ``log_snr(t)`` and its inverse ``time_from_log_snr(lam)`` (e.g.
        :class:`~splitdyn.processes.VPSDE`) and the horizon ``T``.
    eps:
        Forward-time cutoff; must be positive, since :math:`\lambda(0) = +\infty`.

    Notes
    -----
    :meth:`reverse_times` takes ``T`` for the common interface; it must equal ``process.T``.
    """

    def __init__(self, n: int, process, eps: float = 1e-3) -> None:
        super().__init__(n, eps)
        if not (callable(getattr(process, "log_snr", None)) and callable(getattr(process, "time_from_log_snr", None))):
            raise TypeError(
                "process must have log_snr(t) and time_from_log_snr(lam) (e.g. splitdyn.processes.VPSDE), "
                f"got {type(process).__name__}"
            )
        if self.eps == 0:
            raise ValueError("eps must be positive for a LogSNRGrid: the log-SNR is infinite at t = 0")
        self.process = process

    def reverse_times(self, T: float | None = None) -> torch.Tensor:
        r"""As :meth:`Grid.reverse_times`; ``T`` defaults to (and must equal) ``process.T``."""
        if T is None:
            T = self.process.T
        if abs(check_positive("T", T) - float(self.process.T)) > 1e-12 * max(1.0, float(self.process.T)):
            raise ValueError(f"T must equal the process's horizon {self.process.T}, got {T}")
        return super().reverse_times(float(self.process.T))

    def _fractions(self, T: float) -> torch.Tensor:
        ends = self.process.log_snr(torch.tensor([T, self.eps], dtype=torch.float64))
        k = torch.arange(self.n + 1, dtype=torch.float64)
        lam = ends[0] + k / self.n * (ends[1] - ends[0])
        return T - torch.as_tensor(self.process.time_from_log_snr(lam), dtype=torch.float64)

    def __repr__(self) -> str:
        return f"LogSNRGrid(n={self.n}, process={self.process!r}, eps={self.eps})"


class GivenGrid(Grid):
    r"""A user-given grid of reverse times :math:`0 = \tau_0 < \dots < \tau_n \le T`: finite, strictly increasing,
    starting at 0; its cutoff is :math:`\epsilon = T - \tau_n`.

    Parameters
    ----------
    reverse_times:
        The times (a sequence or tensor of at least two entries).
    T:
        The horizon the times belong to (default ``1``).
    """

    def __init__(self, reverse_times, T: float = 1.0) -> None:
        times = as_float64("reverse_times", reverse_times, "a 1-D sequence of reverse times")
        check_grid(times, "reverse_times")
        if float(times[0]) != 0.0:
            raise ValueError(f"reverse_times must start at 0 (the prior), got {float(times[0])}")
        self.T = check_positive("T", T)
        last = float(times[-1])
        if last > self.T:
            raise ValueError(f"reverse_times must end at or before T = {self.T}, got last time {last}")
        self.times = times.clone()
        self.n = times.numel() - 1
        self.eps = self.T - last

    def reverse_times(self, T: float | None = None) -> torch.Tensor:
        r"""A copy of the given times; ``T`` defaults to (and must equal) the grid's horizon."""
        if T is not None and abs(check_positive("T", T) - self.T) > 1e-12 * max(1.0, self.T):
            raise ValueError(f"T must equal the grid's horizon {self.T}, got {T}")
        return self.times.clone()

    def _fractions(self, T: float) -> torch.Tensor:
        return self.times.clone()

    def to_dict(self) -> dict:
        """The grid as plain Python data (``{"reverse_times": [...], "T": T}``), for ``json.dump`` or
        ``torch.save``; :meth:`from_dict` restores it exactly (float64 round-trips through ``repr``)."""
        return {"reverse_times": self.times.tolist(), "T": self.T}

    @classmethod
    def from_dict(cls, data: dict) -> "GivenGrid":
        """The grid saved by :meth:`to_dict`."""
        if not isinstance(data, dict) or "reverse_times" not in data or "T" not in data:
            raise ValueError("data must be a dict with keys 'reverse_times' and 'T' (from GivenGrid.to_dict)")
        return cls(data["reverse_times"], data["T"])

    def __repr__(self) -> str:
        values = [f"{v:.6g}" for v in self.times.tolist()]
        shown = ", ".join(values if len(values) <= 5 else values[:3] + ["...", values[-1]])
        return f"GivenGrid([{shown}], T={self.T})"


class InformationLogSNR:
    r"""A scalar log signal-to-noise ratio for any linear SDE: half the log of the Fisher information that the
    state :math:`u_t` carries about the data :math:`x_0` (per coordinate),

    .. math::

        \lambda(t) = \tfrac12 \log\left(\varphi_t^\top \Sigma_t^{-1} \varphi_t\right),

    with :math:`p(u_t \mid x_0) = N(\varphi_t x_0, \Sigma_t)` (:math:`\varphi_t` the data column of the
    transition matrix, :math:`\Sigma_t` the perturbation covariance including the initial velocity law).
    For a one-component process :math:`\varphi_t = \alpha_t`, :math:`\Sigma_t = \sigma_t^2`, so
    :math:`\lambda = \log(\alpha_t/\sigma_t)`, the usual log-SNR. For CLD the velocity carries information
    about :math:`x_0` too, and :math:`\lambda` counts it. :math:`\lambda` is non-increasing in :math:`t`
    (:math:`u_t` is a Markov process, so information about :math:`x_0` can only be lost: data processing);
    this is checked on a table at construction. It is :math:`+\infty` at :math:`t = 0`.

    With ``log_snr`` and ``time_from_log_snr`` (bisection in :math:`\log t`), an instance is a ``process``
    for :class:`LogSNRGrid`.

    Parameters
    ----------
    process:
        A :class:`~splitdyn.linear_sde.LinearSDEBase` whose data is component 0.
    initial_covariance:
        :math:`\Sigma_0` (CLD: ``cld.initial_covariance()``); default the process's own, else zero.
    """

    def __init__(self, process, initial_covariance=None) -> None:
        from .steps.exponential_weights import DiffusionGeometry  # the Gaussian geometry of a linear SDE

        self.geometry = DiffusionGeometry(process, initial_covariance)
        self.process = process
        self.T = float(process.T)
        table = self.log_snr(torch.logspace(-6, 0, 200, dtype=torch.float64) * self.T)
        if bool((table[1:] > table[:-1] + 1e-9 * table[:-1].abs().clamp_min(1.0)).any()):
            raise ValueError(f"the information log-SNR of {type(process).__name__} is not decreasing in t")

    def log_snr(self, t) -> torch.Tensor:
        r""":math:`\lambda(t)` (float64, the shape of ``t``; ``t`` in :math:`(0, T]`)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()) or bool((t > self.T * (1 + 1e-12)).any()):
            raise ValueError(f"t must lie in (0, T = {self.T}]")
        phi, _, P = self.geometry.precision(t)
        info = (phi[..., None, :] @ P @ phi[..., :, None])[..., 0, 0]
        return 0.5 * torch.log(info)

    def time_from_log_snr(self, lam) -> torch.Tensor:
        r"""The time :math:`t` with :math:`\lambda(t) = \lambda` (bisection in :math:`\log t` on
        :math:`[10^{-12} T, T]`, float64; values outside the range give the end points)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        if not bool(torch.isfinite(lam).all()):
            raise ValueError("lam must be finite")
        lo = torch.full_like(lam, math.log(1e-12 * self.T))
        hi = torch.full_like(lam, math.log(self.T))
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(torch.exp(mid).clamp_max(self.T)) > lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return torch.exp(0.5 * (lo + hi)).clamp_max(self.T)

    def __repr__(self) -> str:
        return f"InformationLogSNR({type(self.process).__name__})"


def uniform_grid(n: int, T: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    r"""``n`` equal steps :math:`\tau_k = (T - \epsilon)\,k/n`, ``k = 0..n`` (:class:`UniformGrid` as a tensor)."""
    return UniformGrid(n, eps).reverse_times(T)


def quadratic_grid(n: int, T: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    r"""Quadratic striding (paper App. E.2.3): :math:`\tau_k = (T - \epsilon)\,(1 - (1 - k/n)^2)`.

    Steps shrink linearly towards the data end (:math:`\tau \to T - \epsilon`), where the score changes fastest
    (:class:`QuadraticGrid` as a tensor).
    """
    return QuadraticGrid(n, eps).reverse_times(T)


def make_grid(kind: str, n: int, T: float = 1.0, eps: float = 1e-3, *, rho: float = 7.0, process=None) -> torch.Tensor:
    r"""A grid by name, as a tensor: ``"uniform"``, ``"quadratic"``, ``"power"`` (with ``rho``) or ``"logsnr"``
    (with ``process``: its own ``log_snr`` when it has one, else :class:`InformationLogSNR` of it)."""
    kinds = ("logsnr", "power", "quadratic", "uniform")
    if kind not in kinds:
        raise ValueError(f"grid must be one of {list(kinds)}, got {kind!r}")
    if kind == "uniform":
        grid: Grid = UniformGrid(n, eps)
    elif kind == "quadratic":
        grid = QuadraticGrid(n, eps)
    elif kind == "power":
        grid = PowerGrid(n, rho, eps)
    else:
        if process is None:
            raise ValueError("grid 'logsnr' needs the process (with log_snr and time_from_log_snr): pass process=")
        if not callable(getattr(process, "log_snr", None)):
            process = InformationLogSNR(process)
        grid = LogSNRGrid(n, process, eps)
    return grid.reverse_times(T)


def check_grid(grid, name: str = "grid") -> list[float]:
    """Validate a 1-D strictly increasing finite grid; return it as a list of Python floats."""
    if isinstance(grid, Grid):
        raise TypeError(f"{name} must be a sequence of times; call {type(grid).__name__}.reverse_times(T) first")
    try:
        g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D sequence of times, got {type(grid).__name__}") from None
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
