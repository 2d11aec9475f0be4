"""Argument checks shared by the whole library (public: both packages and users' extensions use them).

Every public entry point validates its inputs through these helpers so that bad input fails early with
an error that names the argument and says what was expected.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

__all__ = [
    "check_positive",
    "check_nonnegative",
    "check_finite_tensor",
    "check_time",
    "check_state",
    "as_float64_time",
    "as_float64",
    "check_count",
    "check_flag",
    "check_callable",
]


def check_positive(name: str, value: Any) -> float:
    """Return ``float(value)`` or raise if it is not a finite, strictly positive real number."""
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a positive real number, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def check_nonnegative(name: str, value: Any) -> float:
    """Return ``float(value)`` or raise if it is not a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a non-negative real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    return value


def check_finite_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``value`` holds NaN or infinity (one device sync)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = (~torch.isfinite(value)).sum().item()
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return value


def as_float64(name: str, value: Any, what: str = "a real number or array") -> torch.Tensor:
    """``value`` (number, sequence or tensor) as a finite float64 CPU tensor, or a TypeError/ValueError naming
    ``name`` and saying it must be ``what``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got bool")
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor")
        out = value.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(value, Real):
        out = torch.tensor(float(value), dtype=torch.float64)
    else:
        try:
            out = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be {what}, got {type(value).__name__}") from exc
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got {out if out.numel() <= 8 else 'non-finite entries'}")
    return out


def as_float64_time(name: str, t: Any) -> torch.Tensor:
    """Convert a time (float, sequence or tensor) to a float64 tensor on the CPU.

    Kernel coefficients are always computed in float64 on the CPU (they are tiny ``k x k`` matrices) and
    cast to the state's dtype and device at use.
    """
    return as_float64(name, t, "a real number or a tensor of times")


def check_time(name: str, t: Any, T: float, *, lower: float = 0.0) -> torch.Tensor:
    """Float64 CPU tensor of times, checked to lie in ``[lower, T]`` (a 1e-12 relative slack is allowed)."""
    out = as_float64_time(name, t)
    slack = 1e-12 * max(1.0, abs(T))
    if out.numel() and (bool((out < lower - slack).any()) or bool((out > T + slack).any())):
        raise ValueError(
            f"{name} must lie in [{lower}, {T}], got values in [{out.min().item()}, {out.max().item()}]"
        )
    return out


def check_state(name: str, u: Any, num_components: int) -> torch.Tensor:
    """Check that ``u`` is a floating tensor of shape ``(batch, k, *event_shape)`` with ``k = num_components``."""
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
    if not u.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {u.dtype}")
    if u.ndim < 2 or u.shape[1] != num_components:
        raise ValueError(
            f"{name} must have shape (batch, {num_components}, *event_shape) with the {num_components} "
            f"components on dim 1, got shape {tuple(u.shape)}"
        )
    return u


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``int(value)`` for an integral number (Python or numpy integer, integral 0-d tensor) that is at
    least ``minimum``; refuse bools, floats and strings with a ``TypeError`` and smaller values with a
    ``ValueError``, each naming ``name``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {int(value)}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a ``bool`` (numpy bools included); otherwise raise a ``TypeError`` naming ``name``."""
    if isinstance(value, bool) or (type(value).__name__ in ("bool", "bool_") and type(value).__module__ == "numpy"):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_callable(name: str, value: Any, what: str = "a callable") -> Any:
    """Return ``value`` if it is callable; otherwise raise a ``TypeError`` naming ``name`` and ``what``."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value
