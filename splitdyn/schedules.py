r"""Time rescalings :math:`\beta(t)` and their integrals :math:`B(t) = \int_0^t \beta(r)\,dr`.

A linear SDE :math:`du = \beta(t) F u\,dt + \sqrt{\beta(t)} G\,dw` with a constant pair ``(F, G)`` only sees
time through :math:`B`: its transition matrix is :math:`\exp((B(t) - B(s)) F)` (paper eq. 28 uses
:math:`B(t)` in the same way). All values are float64.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import math

import torch

from .checks import as_float64, as_float64_time, check_callable, check_nonnegative, check_positive

__all__ = ["TimeRescaling", "ConstantBeta", "LinearBeta", "GeometricSigma", "CustomBeta", "ReversedRescaling"]


class TimeRescaling(ABC):
    r"""A non-negative rate :math:`\beta(t)` with its integral :math:`B(t)`.

    Subclasses implement :meth:`beta` and :meth:`integral`; both take and return float64 tensors.
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


class ConstantBeta(TimeRescaling):
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

    def __repr__(self) -> str:
        return f"ConstantBeta({self.value})"


class LinearBeta(TimeRescaling):
    r"""VP-style linear rate :math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min})\,t/T`.

    :math:`B(t) = \beta_{\min} t + (\beta_{\max} - \beta_{\min})\,t^2 / (2T)`. With ``beta_min = 0.1``,
    ``beta_max = 20`` and ``T = 1`` this is the VPSDE of Song et al. (2021).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> None:
        self.beta_min = check_nonnegative("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
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


class GeometricSigma(TimeRescaling):
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


class CustomBeta(TimeRescaling):
    r"""A user-given rate and its integral.

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


class ReversedRescaling(TimeRescaling):
    r"""The rate seen in reverse time :math:`\tau = T - t`: :math:`\tilde\beta(\tau) = \beta(T - \tau)`.

    Its integral is :math:`\tilde B(\tau) = B(T) - B(T - \tau)`, so a step over :math:`[\tau, \tau + h]`
    integrates :math:`\beta` over exactly the forward interval :math:`[T - \tau - h, T - \tau]`.
    """

    def __init__(self, base: TimeRescaling, T: float) -> None:
        if not isinstance(base, TimeRescaling):
            raise TypeError(f"base must be a TimeRescaling, got {type(base).__name__}")
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
