r"""Noise schedules: a rate :math:`\beta(t) \ge 0`, its integral :math:`B(t) = \int_0^t \beta(r)\,dr` and the
inverse :math:`t(B)`.

A linear SDE :math:`du = \beta(t) F u\,dt + \sqrt{\beta(t)} G\,dw` with a constant pair ``(F, G)`` only sees
time through :math:`B`: its transition matrix is :math:`\exp((B(t) - B(s)) F)` (paper eq. 28 uses
:math:`B(t)` in the same way). One :class:`Schedule` therefore drives every process of
:mod:`splitdyn.processes` (``VPSDE(schedule=...)``, ``SubVPSDE(schedule=...)``, ``VESDE(schedule=...)``) and
:class:`~splitdyn.linear_sde.LinearSDE`: the process turns :math:`B` into its marginal coefficients and its
log-SNR :math:`\lambda(t)`, and inverts :math:`\lambda` through :meth:`Schedule.inverse_integral`.

For a variance-preserving process :math:`B(t) = -\log\bar\alpha(t)`, where :math:`\bar\alpha = \alpha^2` is the
squared signal coefficient (diffusers' ``alphas_cumprod``); for the VE process :math:`B(t)` is the kernel's
variance.

* :class:`ConstantBeta`: :math:`B = \beta t` (CLD's setting);
* :class:`LinearBeta`: the linear rate of the VP SDE (Song et al. 2021; DDPM's linear betas);
* :class:`CosineSchedule`: Nichol & Dhariwal's (2021) :math:`\bar\alpha(t) = \cos^2` schedule;
* :class:`DiscreteSchedule`: a table :math:`\bar\alpha_n` (DDPM, diffusers), interpolated linearly in the
  log-SNR;
* :class:`GeometricSigma` and :class:`LinearSigma`: VE noise scales :math:`\sigma(t)` (Song et al.'s geometric
  one; :math:`\sigma \propto t`, the EDM/k-diffusion parameterisation);
* :class:`CustomBeta`: a user-given pair, inverted by monotone bisection.

Every built-in schedule has a closed-form :meth:`~Schedule.inverse_integral`; the base class inverts any
schedule by bisection. Schedules validate their parameters at construction (a ``ValueError`` naming the
argument). All values are float64. :class:`TimeRescaling` is the older name of :class:`Schedule` (the same
class).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from .checks import (
    as_float64,
    as_float64_time,
    check_callable,
    check_nonnegative,
    check_positive,
)

__all__ = [
    "ConstantBeta",
    "CosineSchedule",
    "CustomBeta",
    "DiscreteSchedule",
    "GeometricSigma",
    "LinearBeta",
    "LinearSigma",
    "ReversedRescaling",
    "Schedule",
    "TimeRescaling",
    "softplus",
]

_BISECTION_STEPS = 1100  # enough halvings to reach adjacent float64 numbers, even near t = 0


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` to full precision for every float64 ``x`` (torch's softplus is linear past 20)."""
    return torch.where(x > 0, x + torch.log1p(torch.exp(-x.abs())), torch.log1p(torch.exp(-x.abs())))


class Schedule(ABC):
    r"""A non-negative rate :math:`\beta(t)` with its integral :math:`B(t)` and the inverse of :math:`B`.

    Subclasses implement :meth:`beta` and :meth:`integral` (both take and return float64 tensors) and may
    override :meth:`increment` (cancellation-free differences) and :meth:`inverse_integral` (closed forms).
    """

    @abstractmethod
    def beta(self, t: torch.Tensor) -> torch.Tensor:
        r"""The rate :math:`\beta(t)`."""

    @abstractmethod
    def integral(self, t: torch.Tensor) -> torch.Tensor:
        r"""The integral :math:`B(t) = \int_0^t \beta(r)\,dr`."""

    def increment(self, t, s) -> torch.Tensor:
        r""":math:`B(t) - B(s)`, the integrated rate over ``[s, t]`` (float64, broadcast over ``t`` and ``s``)."""
        t = as_float64_time("t", t)
        s = as_float64_time("s", s)
        return self.integral(t) - self.integral(s)

    def inverse_integral(self, B) -> torch.Tensor:
        r"""The time :math:`t \ge 0` with :math:`B(t) = B` (float64, the shape of ``B``).

        This generic version brackets the root by doubling from ``1`` (or the schedule's horizon ``T``) and
        bisects the non-decreasing :math:`B` until the bracket is two adjacent float64 numbers; the built-in
        schedules override it with closed forms. ``B`` must be finite and non-negative.
        """
        B = as_float64("B", B, "a non-negative number or tensor of integrated rates")
        if B.numel() and (not bool(torch.isfinite(B).all()) or bool((B < 0).any())):
            raise ValueError(f"B must be finite and non-negative, got min {float(B.min())}, max {float(B.max())}")
        hi = torch.full_like(B, float(getattr(self, "T", 1.0)))
        for _ in range(2000):
            short = self.integral(hi) < B
            if not bool(short.any()):
                break
            hi = torch.where(short, 2.0 * hi, hi)
        else:  # pragma: no cover - a rate that integrates to a bounded B never reaches it
            raise ValueError("B is beyond the schedule's total integrated rate (no time reaches it)")
        lo = torch.zeros_like(B)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            if bool(((mid == lo) | (mid == hi)).all()):
                break
            below = self.integral(mid) < B
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return hi


#: The older name of :class:`Schedule` (the same class).
TimeRescaling = Schedule


class ConstantBeta(Schedule):
    r"""Constant rate :math:`\beta(t) = \beta`, so :math:`B(t) = \beta t` (the CLD paper's setting, :math:`\beta = 4`).

    Parameters
    ----------
    value:
        The rate :math:`\beta > 0`.
    """

    def __init__(self, value: float) -> None:
        self.value = check_positive("beta", value)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(as_float64_time("t", t), self.value)

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.value * as_float64_time("t", t)

    def increment(self, t, s) -> torch.Tensor:
        # B(t) - B(s) = beta (t - s), computed without cancellation in B.
        return self.value * (as_float64_time("t", t) - as_float64_time("s", s))

    def inverse_integral(self, B) -> torch.Tensor:
        r"""Closed form :math:`t = B / \beta`."""
        return as_float64_time("B", B) / self.value

    def __repr__(self) -> str:
        return f"ConstantBeta({self.value})"


class LinearBeta(Schedule):
    r"""VP-style linear rate :math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min})\,t/T`.

    :math:`B(t) = \beta_{\min} t + (\beta_{\max} - \beta_{\min})\,t^2 / (2T)`. With ``beta_min = 0.1``,
    ``beta_max = 20`` and ``T = 1`` this is the VPSDE of Song et al. (2021), the continuous limit of DDPM's
    linear betas.

    Parameters
    ----------
    beta_min, beta_max:
        :math:`0 \le \beta_{\min} \le \beta_{\max}`, :math:`\beta_{\max} > 0`.
    T:
        Time horizon.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> None:
        self.beta_min = check_nonnegative("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be at least beta_min = {self.beta_min} (an increasing rate), got "
                             f"{self.beta_max}")
        self.T = check_positive("T", T)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        t = as_float64_time("t", t)
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        t = as_float64_time("t", t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t / self.T

    def increment(self, t, s) -> torch.Tensor:
        t = as_float64_time("t", t)
        s = as_float64_time("s", s)
        # (t^2 - s^2) = (t - s)(t + s): no cancellation for nearby t, s.
        return (t - s) * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * (t + s) / self.T)

    def inverse_integral(self, B) -> torch.Tensor:
        r"""The time :math:`t` with :math:`B(t) = B` (float64): the positive root of the quadratic,
        :math:`t = 2B / (\beta_{\min} + \sqrt{\beta_{\min}^2 + 2(\beta_{\max} - \beta_{\min}) B / T})`,
        written without cancellation for small :math:`B`."""
        B = as_float64_time("B", B)
        root = torch.sqrt((self.beta_min**2 + 2.0 * (self.beta_max - self.beta_min) * B / self.T).clamp_min(0.0))
        denominator = self.beta_min + root
        return torch.where(denominator > 0, 2.0 * B / torch.where(denominator > 0, denominator, 1.0),
                           torch.zeros_like(B))

    def __repr__(self) -> str:
        return f"LinearBeta(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"


class CosineSchedule(Schedule):
    r"""Nichol & Dhariwal's (2021) cosine schedule :math:`\bar\alpha(t) = \cos^2\theta(t) / \cos^2\theta(0)`,
    :math:`\theta(t) = \frac{\pi}{2}\,\frac{e\,t/T + s}{1 + s}`.

    So :math:`B(t) = -\log\bar\alpha(t) = 2\log(\cos\theta(0)/\cos\theta(t))` and
    :math:`\beta(t) = 2\theta'\tan\theta(t)` with :math:`\theta' = \pi e / (2T(1 + s))`. The paper's schedule
    reaches :math:`\bar\alpha = 0` (an infinite rate) at its end; ``end`` :math:`= e < 1` stops before it, so
    that every coefficient is finite on :math:`[0, T]`. The default ``0.9946`` is the end point DPM-Solver
    (Lu et al. 2022) uses for this schedule (VP log-SNR :math:`\lambda(T) \approx -4.78`).

    Parameters
    ----------
    s:
        The offset :math:`s > 0` (paper: ``0.008``).
    T:
        Time horizon.
    end:
        The fraction :math:`0 < e < 1` of the cosine's quarter period covered at :math:`t = T`.
    """

    def __init__(self, s: float = 0.008, T: float = 1.0, end: float = 0.9946) -> None:
        self.s = check_positive("s", s)
        self.T = check_positive("T", T)
        self.end = check_positive("end", end)
        if not self.end < 1.0:
            raise ValueError(f"end must be below 1 (alpha_bar reaches 0 and the rate diverges at 1), got {end}")
        self.theta0 = 0.5 * math.pi * self.s / (1.0 + self.s)
        #: :math:`\theta'(t)`, the constant growth rate of the angle.
        self.rate = 0.5 * math.pi * self.end / (self.T * (1.0 + self.s))

    def _theta(self, t: torch.Tensor) -> torch.Tensor:
        return self.theta0 + self.rate * t

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.rate * torch.tan(self._theta(as_float64_time("t", t)))

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.increment(as_float64_time("t", t), 0.0)

    def increment(self, t, s) -> torch.Tensor:
        # 2 log(cos a / cos b) = 2 log1p((cos a - cos b) / cos b), cos a - cos b = 2 sin((a+b)/2) sin((b-a)/2)
        t = as_float64_time("t", t)
        s = as_float64_time("s", s)
        a, b = self._theta(s), self._theta(t)
        difference = 2.0 * torch.sin(0.5 * (a + b)) * torch.sin(0.5 * self.rate * (t - s))
        return 2.0 * torch.log1p(difference / torch.cos(b))

    def inverse_integral(self, B) -> torch.Tensor:
        r"""Closed form: :math:`\cos\theta = \cos\theta_0\,e^{-B/2}`, and
        :math:`\theta - \theta_0 = \mathrm{atan2}(\sin\theta\cos\theta_0 - \cos\theta\sin\theta_0,
        \cos\theta\cos\theta_0 + \sin\theta\sin\theta_0)` with the numerator written as
        :math:`-\cos\theta_0\,\mathrm{expm1}(-B)/(\sin\theta + e^{-B/2}\sin\theta_0)` (no cancellation at small
        :math:`B`)."""
        B = as_float64_time("B", B).clamp_min(0.0)
        c0, s0 = math.cos(self.theta0), math.sin(self.theta0)
        decay = torch.exp(-0.5 * B)
        cos_theta = c0 * decay
        sin_theta = torch.sqrt(s0 * s0 - c0 * c0 * torch.expm1(-B))
        numerator = -c0 * torch.expm1(-B) / (sin_theta + decay * s0)
        angle = torch.atan2(numerator, cos_theta * c0 + sin_theta * s0)
        return angle / self.rate

    def __repr__(self) -> str:
        return f"CosineSchedule(s={self.s}, T={self.T}, end={self.end})"


class DiscreteSchedule(Schedule):
    r"""A tabulated variance-preserving schedule :math:`\bar\alpha_0 > \bar\alpha_1 > \dots > \bar\alpha_{N-1}`
    (DDPM's ``alphas_cumprod``), interpolated linearly in the log-SNR.

    Table entry :math:`n` sits at :math:`t_n = (n + 1)\,T/N`, so that :math:`t = 0` is the clean data
    (:math:`\bar\alpha = 1`, "step :math:`-1`") and :math:`t = T` the last entry. Between knots the VP log-SNR
    :math:`\lambda = \tfrac12\log(\bar\alpha/(1 - \bar\alpha))` is linear in :math:`t`, and
    :math:`B(t) = -\log\bar\alpha(t) = \log(1 + e^{-2\lambda(t)})`; on the first interval :math:`[0, t_0]`,
    where :math:`\lambda` runs to :math:`+\infty`, :math:`B` is linear (a constant rate, as DDPM's first
    :math:`\beta_0`). :math:`\beta(t) = -2\lambda'(t)(1 - \bar\alpha(t))` is piecewise smooth (it jumps at the
    knots), and the inverse is closed form on each piece.

    Because the rate jumps at the knots, samplers whose coefficients are quadratures over time (the
    exponential integrators of :mod:`splitdyn.steps.exponential`) carry a small error floor with this
    schedule (about ``4e-3`` on a 1000-entry DDPM table at 80 steps); a smooth schedule through the same
    table (e.g. :class:`ConstantBeta` with the time map :math:`t_n \propto -\log\bar\alpha_n`, as
    :mod:`splitdyn.pretrained` uses) has none.

    Parameters
    ----------
    alphas_cumprod:
        The table (1-D, at least two entries, strictly decreasing, in ``(0, 1)``).
    T:
        Time horizon.
    """

    def __init__(self, alphas_cumprod, T: float = 1.0) -> None:
        table = as_float64("alphas_cumprod", alphas_cumprod, "a 1-D table of cumulative products of alphas")
        if table.ndim != 1 or table.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with at least 2 entries, got shape {tuple(table.shape)}")
        if not bool(((table > 0) & (table < 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1) (a finite log-SNR at every entry)")
        if not bool((table[1:] < table[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (a strictly decreasing log-SNR)")
        self.T = check_positive("T", T)
        self.alphas_cumprod = table.clone()
        self.N = table.numel()
        #: Knot times :math:`t_n = (n + 1)T/N`.
        self.knots = (torch.arange(1, self.N + 1, dtype=torch.float64) * self.T) / self.N
        #: VP log-SNR at the knots.
        self.knot_log_snr = 0.5 * (torch.log(table) - torch.log1p(-table))
        self._B0 = float(-torch.log(table[0]))
        self._slopes = (self.knot_log_snr[1:] - self.knot_log_snr[:-1]) / (self.knots[1:] - self.knots[:-1])

    def log_snr(self, t) -> torch.Tensor:
        r"""The interpolated VP log-SNR :math:`\lambda(t)` (:math:`+\infty` at 0; float64)."""
        t = as_float64_time("t", t)
        return 0.5 * (-torch.log(torch.expm1(self.integral(t))))

    def _piece(self, t: torch.Tensor) -> torch.Tensor:
        index = torch.searchsorted(self.knots, t.reshape(-1).contiguous(), right=True) - 1
        return index.clamp(0, self.N - 2).reshape(t.shape)

    def _knot_lambda(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        j = self._piece(t)
        return self.knot_log_snr[j] + self._slopes[j] * (t - self.knots[j]), self._slopes[j]

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        t = as_float64_time("t", t)
        lam, _ = self._knot_lambda(t)
        first = t < self.knots[0]
        return torch.where(first, self._B0 * t / float(self.knots[0]), softplus(-2.0 * lam))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        t = as_float64_time("t", t)
        lam, slope = self._knot_lambda(t)
        first = t < self.knots[0]
        one_minus_abar = torch.sigmoid(-2.0 * lam)
        return torch.where(first, torch.full_like(t, self._B0 / float(self.knots[0])), -2.0 * slope * one_minus_abar)

    def inverse_integral(self, B) -> torch.Tensor:
        r"""Closed form per piece: :math:`t = t_0 B/B_0` below the first knot, else
        :math:`\lambda = -\tfrac12\log\mathrm{expm1}(B)` and the linear piece of :math:`\lambda` inverted."""
        B = as_float64_time("B", B).clamp_min(0.0)
        lam = -0.5 * torch.log(torch.expm1(B.clamp_min(1e-300)))
        # the knot log-SNRs decrease: find the piece with knot_log_snr[j] >= lam > knot_log_snr[j + 1]
        descending = -self.knot_log_snr
        j = (torch.searchsorted(descending, (-lam).reshape(-1).contiguous(), right=True) - 1).clamp(0, self.N - 2).reshape(B.shape)
        t = self.knots[j] + (lam - self.knot_log_snr[j]) / self._slopes[j]
        return torch.where(B < self._B0, float(self.knots[0]) * B / self._B0, t)

    def __repr__(self) -> str:
        return f"DiscreteSchedule(N={self.N}, alphas_cumprod[-1]={float(self.alphas_cumprod[-1]):.4g}, T={self.T})"


class GeometricSigma(Schedule):
    r"""The VE SDE's rate for a geometric noise scale :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t/T}`.

    With :math:`F = 0` and :math:`G = 1` the SDE :math:`dx = \sqrt{\beta(t)}\,dw` is the VE SDE of Song et al.
    (2021) when :math:`\beta(t) = d\sigma^2/dt = 2c\,\sigma(t)^2`, :math:`c = \log(\sigma_{\max}/\sigma_{\min})/T`.
    Then :math:`B(t) = \sigma(t)^2 - \sigma_{\min}^2 = \sigma_{\min}^2\,\mathrm{expm1}(2ct)` and
    :math:`B(t) - B(s) = \sigma(s)^2\,\mathrm{expm1}(2c(t - s))`, both free of cancellation near
    :math:`t = s` and :math:`t = 0`.

    Parameters
    ----------
    sigma_min, sigma_max:
        :math:`0 < \sigma_{\min} < \sigma_{\max}` (defaults ``0.01`` and ``50``).
    T:
        Time horizon.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0) -> None:
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be larger than sigma_min = {self.sigma_min}, got {self.sigma_max}")
        self.T = check_positive("T", T)
        #: :math:`c = \log(\sigma_{\max}/\sigma_{\min}) / T`, the growth rate of :math:`\log\sigma(t)`.
        self.rate = math.log(self.sigma_max / self.sigma_min) / self.T

    def sigma(self, t) -> torch.Tensor:
        r"""The noise scale :math:`\sigma(t) = \sigma_{\min} e^{ct}` (float64)."""
        return self.sigma_min * torch.exp(self.rate * as_float64_time("t", t))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.rate * self.sigma(t) ** 2

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min**2 * torch.expm1(2.0 * self.rate * as_float64_time("t", t))

    def increment(self, t, s) -> torch.Tensor:
        t = as_float64_time("t", t)
        s = as_float64_time("s", s)
        return self.sigma(s) ** 2 * torch.expm1(2.0 * self.rate * (t - s))

    def inverse_integral(self, B) -> torch.Tensor:
        r"""The time :math:`t = \mathrm{log1p}(B/\sigma_{\min}^2)/(2c)` with :math:`B(t) = B` (float64)."""
        return torch.log1p(as_float64_time("B", B) / self.sigma_min**2) / (2.0 * self.rate)

    def __repr__(self) -> str:
        return f"GeometricSigma(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"


class LinearSigma(Schedule):
    r"""A VE noise scale growing linearly from zero, :math:`\sigma(t) = \sigma_{\max}\,t/T`: :math:`B = \sigma^2`.

    With ``T = sigma_max`` the time *is* the noise level, :math:`\sigma(t) = t`: the parameterisation of
    Karras et al. (2022, EDM) and k-diffusion, whose probability-flow ODE is
    :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma`. The VE log-SNR is :math:`-\log\sigma(t)`.

    Parameters
    ----------
    sigma_max:
        :math:`\sigma(T) > 0`.
    T:
        Time horizon.
    """

    def __init__(self, sigma_max: float = 80.0, T: float = 1.0) -> None:
        self.sigma_max = check_positive("sigma_max", sigma_max)
        self.T = check_positive("T", T)
        self.rate = self.sigma_max / self.T

    def sigma(self, t) -> torch.Tensor:
        r"""The noise scale :math:`\sigma(t) = \sigma_{\max}t/T` (float64)."""
        return self.rate * as_float64_time("t", t)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.rate * self.sigma(t)

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma(t) ** 2

    def increment(self, t, s) -> torch.Tensor:
        t = as_float64_time("t", t)
        s = as_float64_time("s", s)
        return self.rate**2 * (t - s) * (t + s)

    def inverse_integral(self, B) -> torch.Tensor:
        r"""Closed form :math:`t = \sqrt B\,T/\sigma_{\max}`."""
        return torch.sqrt(as_float64_time("B", B).clamp_min(0.0)) / self.rate

    def __repr__(self) -> str:
        return f"LinearSigma(sigma_max={self.sigma_max}, T={self.T})"


class CustomBeta(Schedule):
    r"""A user-given rate and its integral; the inverse is the base class's monotone bisection.

    Parameters
    ----------
    beta:
        Callable mapping a float64 tensor of times to :math:`\beta(t) \ge 0`.
    integral:
        Callable mapping times to :math:`B(t) = \int_0^t \beta`. It is the user's responsibility that it is
        the integral of ``beta``; :func:`splitdyn.moments.moment_kernels` gives an independent check.
    """

    def __init__(self, beta: Callable[[torch.Tensor], torch.Tensor], integral: Callable[[torch.Tensor], torch.Tensor]):
        self._beta = check_callable("beta", beta, "a callable mapping a tensor of times to a tensor of rates")
        self._integral = check_callable("integral", integral, "a callable mapping a tensor of times to a tensor")

    @staticmethod
    def _call(name: str, fn, t) -> torch.Tensor:
        t = as_float64_time("t", t)
        value = fn(t)
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must return a tensor of the shape of t, got {type(value).__name__}")
        value = as_float64(f"the value of {name}(t)", value, "a real tensor")
        if value.shape != t.shape:
            try:
                value = value.expand(t.shape)
            except RuntimeError as exc:
                raise ValueError(f"{name} must return a tensor of the shape of t {tuple(t.shape)}, got "
                                 f"{tuple(value.shape)}") from exc
        return value

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        value = self._call("beta", self._beta, t)
        if bool((value < 0).any()):
            raise ValueError(f"beta must return non-negative rates, got a minimum of {float(value.min())}")
        return value

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        return self._call("integral", self._integral, t)


class ReversedRescaling(Schedule):
    r"""The rate seen in reverse time :math:`\tau = T - t`: :math:`\tilde\beta(\tau) = \beta(T - \tau)`.

    Its integral is :math:`\tilde B(\tau) = B(T) - B(T - \tau)`, so a step over :math:`[\tau, \tau + h]`
    integrates :math:`\beta` over exactly the forward interval :math:`[T - \tau - h, T - \tau]`.
    """

    def __init__(self, base: Schedule, T: float) -> None:
        if not isinstance(base, Schedule):
            raise TypeError(f"base must be a splitdyn.schedules.Schedule, got {type(base).__name__}")
        self.base = base
        self.T = check_positive("T", T)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.base.beta(self.T - as_float64_time("t", t))

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.base.increment(self.T, self.T - as_float64_time("t", t))

    def increment(self, t, s) -> torch.Tensor:
        t = as_float64_time("t", t)
        s = as_float64_time("s", s)
        return self.base.increment(self.T - s, self.T - t)

    def __repr__(self) -> str:
        return f"ReversedRescaling({self.base!r}, T={self.T})"
