"""Argument checks shared by the whole library (public: both packages and users' extensions use them).

Every public entry point validates its inputs through these helpers so that bad input fails early with
an error that names the argument and says what was expected.
"""

from __future__ import annotations

import inspect
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
    "check_components",
    "check_floating_dtype",
    "check_device",
    "check_progress",
    "check_compile",
    "check_arity",
    "check_tolerance",
    "check_nonempty_batch",
    "as_float64_matrix",
    "check_real",
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
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
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


def check_components(name: str, components: Any, num_components: int) -> list[int]:
    """Return ``components`` as a non-empty list of distinct integer indices in ``[0, num_components)``.

    A single integer stands for a one-element list. Bools, floats and strings are refused with a ``TypeError``,
    an empty list, an index out of range or a repeated index with a ``ValueError``, each naming ``name``.
    """
    if isinstance(components, torch.Tensor):
        if components.is_floating_point() or components.is_complex() or components.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer component indices, got a {components.dtype} tensor")
        components = components.reshape(-1).tolist()
    if isinstance(components, Integral) and not isinstance(components, bool):
        components = [components]
    if isinstance(components, (str, bytes)) or not hasattr(components, "__iter__"):
        raise TypeError(
            f"{name} must be a sequence of integer component indices, got {type(components).__name__} {components!r}"
        )
    rows = list(components)
    for c in rows:
        if isinstance(c, bool) or not isinstance(c, Integral):
            raise TypeError(f"{name} must hold integer component indices, got {type(c).__name__} {c!r} in {rows!r}")
    rows = [int(c) for c in rows]
    if not rows:
        raise ValueError(f"{name} must not be empty: pass at least one component index in [0, {num_components})")
    if any(c < 0 or c >= num_components for c in rows):
        raise ValueError(f"{name} must be component indices in [0, {num_components}), got {rows}")
    if len(set(rows)) != len(rows):
        raise ValueError(f"{name} must not repeat a component, got {rows}")
    return rows


def check_floating_dtype(name: str, dtype: Any) -> torch.dtype:
    """Return ``dtype`` if it is a floating ``torch.dtype`` (e.g. ``torch.float64``); otherwise raise a
    ``TypeError`` naming ``name``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return dtype


def check_progress(name: str, value: Any) -> bool | str:
    """A progress-bar switch: ``True``/``False`` or a string (the bar's label); else a ``TypeError``."""
    if isinstance(value, str):
        return value
    try:
        return check_flag(name, value)
    except TypeError:
        raise TypeError(f"{name} must be True, False or a label string, got {type(value).__name__} {value!r}") from None


def check_compile(name: str, value: Any) -> bool | dict:
    """``torch.compile`` switch: ``True``/``False`` or a dict of ``torch.compile`` options; else a ``TypeError``."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{name} options must have string keys (torch.compile's arguments), got {list(value)!r}")
        return value
    try:
        return check_flag(name, value)
    except TypeError:
        raise TypeError(f"{name} must be True, False or a dict of torch.compile options, got "
                        f"{type(value).__name__} {value!r}") from None


def check_arity(name: str, fn: Any, n: int, call: str) -> Any:
    """Refuse (``TypeError`` naming ``name``) a callable that cannot be called with ``n`` positional arguments.

    ``call`` shows the expected call, e.g. ``"score(u, t)"``. Callables whose signature Python cannot read
    (some builtins) are accepted as they are.
    """
    check_callable(name, fn, f"a callable {call}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    try:
        signature.bind(*([None] * n))
    except TypeError as exc:
        raise TypeError(f"{name} must be callable as {call} ({n} positional arguments), but its signature "
                        f"{signature} does not accept that: {exc}") from None
    return fn


def check_tolerance(name: str, value: Any) -> float:
    """A solver tolerance: a finite positive real number (``float(value)``), refused with an explanation.

    A zero tolerance asks an adaptive solver for an exact solution (it would shrink its steps until it fails);
    tolerances below the state's machine epsilon (about ``1e-3`` in float16, ``1e-7`` in float32) cannot be met
    either, so pass float64 states for tight tolerances.
    """
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a positive real number (a solver tolerance), got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        why = " (zero asks an adaptive solver for an exact solution, which it cannot reach)" if value == 0 else ""
        raise ValueError(f"{name} must be a finite positive tolerance, got {value}{why}")
    return value


def check_nonempty_batch(name: str, u: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` naming ``name`` if the tensor ``u`` holds no sample (``u.shape[0] == 0``)."""
    if u.ndim == 0 or u.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample (a non-empty batch on dim 0), got shape {tuple(u.shape)}")
    return u


def as_float64_matrix(
    name: str,
    value: Any,
    shape: tuple[int, int] | None = None,
    *,
    square: bool = False,
    symmetric: bool = False,
    psd: bool = False,
) -> torch.Tensor:
    """``value`` as a finite float64 CPU matrix, checked, with errors naming ``name``.

    Parameters
    ----------
    name:
        The argument's name, for the messages.
    value:
        A matrix: a tensor (any real dtype, any device) or a nested sequence of numbers.
    shape:
        The required ``(rows, columns)``; default any non-empty 2-D shape.
    square, symmetric, psd:
        Also require a square, a symmetric (to a relative ``1e-10``) or a symmetric positive semi-definite
        (eigenvalues above ``-1e-10`` times the largest magnitude) matrix.
    """
    M = as_float64(name, value, "a real matrix")
    if M.ndim != 2 or M.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {tuple(M.shape)}")
    if shape is not None and tuple(M.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(M.shape)}")
    if (square or symmetric or psd) and M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(M.shape)}")
    if symmetric or psd:
        scale = float(M.abs().max())
        if not torch.allclose(M, M.T, rtol=0.0, atol=1e-10 * max(scale, 1e-300)):
            raise ValueError(f"{name} must be symmetric, got {M.tolist() if M.numel() <= 16 else 'an asymmetric matrix'}")
    if psd:
        eig = torch.linalg.eigvalsh(0.5 * (M + M.T))
        if float(eig.min()) < -1e-10 * max(float(eig.abs().max()), 1e-300):
            raise ValueError(
                f"{name} must be positive semi-definite (a covariance), got an eigenvalue {float(eig.min()):.3e}"
            )
    return M


def check_real(name: str, value: Any) -> float:
    """Return ``float(value)`` for a finite real number (a 1-element tensor is accepted); refuse bools, strings
    and other types with a ``TypeError`` and NaN or infinity with a ``ValueError``, each naming ``name``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_generator(name: str, value: Any) -> torch.Generator | None:
    """Return ``value`` if it is ``None`` or a ``torch.Generator``; otherwise raise a ``TypeError`` naming ``name``.

    Integers (seeds), strings and numpy generators are refused: seed a generator with
    ``torch.Generator(device).manual_seed(seed)`` and pass that.
    """
    if value is None or isinstance(value, torch.Generator):
        return value
    hint = ""
    if isinstance(value, Integral) and not isinstance(value, bool):
        hint = f" (to use the seed {int(value)}, pass torch.Generator().manual_seed({int(value)}))"
    elif type(value).__module__.startswith("numpy"):
        hint = " (a numpy generator cannot drive torch's sampling; pass a torch.Generator)"
    raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__} {value!r}{hint}")


def check_device(name: str, value: Any) -> torch.device | None:
    """Return ``value`` as a ``torch.device`` (``None`` stays ``None``) after checking it exists on this machine.

    A string that names no device type (``"nonsense"``) gets a ``ValueError`` listing the usual ones; a device
    whose backend is not available here (``"cuda"`` without CUDA, ``"cuda:3"`` on a one-GPU machine, ``"mps"``
    off Apple silicon) gets a ``ValueError`` saying so; other types get a ``TypeError``. Each names ``name``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, torch.device, Integral)):
        raise TypeError(
            f"{name} must be a torch.device or a string such as 'cpu', 'cuda' or 'cuda:0', "
            f"got {type(value).__name__} {value!r}"
        )
    shown = repr(value) if isinstance(value, Integral) else repr(str(value))
    if isinstance(value, Integral):
        value = f"cuda:{int(value)}"  # torch's convention: a bare index is a CUDA device
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"{name} must name a device such as 'cpu', 'cuda', 'cuda:0' or 'mps', got {value!r}"
        ) from None
    kind = device.type
    if kind == "cpu" or kind == "meta":
        return device
    backend = getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{name}={shown} asks for the {kind} backend, which is not available on this "
                         f"machine (use 'cpu'{', or check the CUDA installation' if kind == 'cuda' else ''})")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise ValueError(f"{name}={shown} asks for {kind} device {device.index}, but this machine has "
                         f"{count()} (indices 0 to {count() - 1})")
    return device


__all__ += ["check_device", "check_generator"]


#: The adaptive (error-controlled) solvers of ``torchdiffeq.odeint``: the ones whose ``rtol``/``atol`` matter.
ODE_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: The fixed-step solvers of ``torchdiffeq.odeint``: one step per interval of the output times.
ODE_FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


def check_ode_method(name: str, value: Any, *, adaptive_only: bool = False) -> str:
    """Return ``value`` if it names a ``torchdiffeq`` solver (:data:`ODE_ADAPTIVE_METHODS`, and unless
    ``adaptive_only`` :data:`ODE_FIXED_METHODS`); otherwise a ``TypeError`` (not a string) or a ``ValueError``
    listing the valid names, each naming ``name``.

    ``adaptive_only`` is for solves between two times only (a fixed-step method would take a single step).
    """
    valid = ODE_ADAPTIVE_METHODS if adaptive_only else ODE_ADAPTIVE_METHODS + ODE_FIXED_METHODS
    if not isinstance(value, str):
        raise TypeError(f"{name} must be the name of a torchdiffeq solver (a str), got {type(value).__name__} {value!r}")
    if value not in valid:
        why = (" (a fixed-step method would take one step over the whole interval)"
               if adaptive_only and value in ODE_FIXED_METHODS else "")
        raise ValueError(f"{name} must be one of {', '.join(valid)}, got {value!r}{why}")
    return value


def _format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def memory_capacity(device: Any = None) -> int | None:
    """Total memory in bytes of ``device`` (``None``/CPU: this machine's physical memory; CUDA: the GPU's), or
    ``None`` where it cannot be read (other backends, platforms without ``os.sysconf``)."""
    import os

    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cpu":
        try:
            return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        except (AttributeError, ValueError, OSError):
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[1])
    return None


def check_allocation(name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: Any = None, *,
                     requested: Any = None) -> int:
    """Refuse, with a ``ValueError`` naming ``name``, a tensor of ``shape`` and ``dtype`` larger than the memory of
    ``device`` (:func:`memory_capacity`); return its size in bytes. ``requested`` is the value the user passed as
    ``name`` (default ``shape``), shown in the message.

    This catches requests that cannot possibly fit (a batch of ``10**10``) before the allocator fails with an
    internal message; a request that fits the device's total memory may still fail if the memory is in use.
    """
    numel = math.prod(int(s) for s in shape)
    size = numel * torch.empty((), dtype=dtype).element_size()
    capacity = memory_capacity(device)
    if capacity is not None and size > capacity:
        where = "this machine's memory" if device is None or torch.device(device).type == "cpu" else f"{device}'s memory"
        asked = tuple(shape) if requested is None else requested
        tensor = "" if requested is None else f" (a tensor of shape {tuple(shape)})"
        raise ValueError(
            f"{name} = {asked} asks for {numel:.3g} {dtype} values{tensor}, {_format_bytes(size)}, more than "
            f"{where} ({_format_bytes(capacity)}): use a smaller batch (at most about "
            f"{max(capacity * shape[0] // size, 0):,} here) or draw in chunks"
        )
    return size


def check_sample_shape(name: str, shape: Any, *, components: int = 1, dtype: Any = torch.float32, device: Any = None,
                       generator: Any = None) -> tuple[int, ...]:
    """Check the arguments of a draw of ``(batch, components, *event)`` states and return ``shape`` as a tuple of
    ints ``(batch, *event)``.

    ``shape`` must be a non-empty sequence of integers >= 1 (Python or numpy integers; an int alone is refused
    with a ``TypeError`` saying to pass ``(batch, *event)``); ``dtype`` a floating ``torch.dtype``; ``device`` a
    device of this machine (:func:`check_device`); ``generator`` ``None`` or a ``torch.Generator`` on that
    device's type; and the draw must fit the device's memory (:func:`check_allocation`). Each error names
    its argument (``name`` for the shape).
    """
    if isinstance(shape, torch.Tensor):
        if shape.ndim != 1 or shape.is_floating_point() or shape.is_complex() or shape.dtype == torch.bool:
            raise TypeError(f"{name} must be a sequence (batch, *event_shape) of positive integers, got a "
                            f"{shape.dtype} tensor of shape {tuple(shape.shape)}")
        shape = shape.tolist()
    if isinstance(shape, (Integral, str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name} must be a sequence (batch, *event_shape) of positive integers, got "
                        f"{type(shape).__name__} {shape!r}" + (f" (for a batch of {shape} scalars pass ({shape},))"
                                                              if isinstance(shape, Integral) else ""))
    dims = tuple(shape)
    if not dims:
        raise ValueError(f"{name} must be (batch, *event_shape) with at least the batch size, got ()")
    dims = tuple(check_count(f"{name}[{i}]", s) for i, s in enumerate(dims))
    check_floating_dtype("dtype", dtype)
    target = check_device("device", device)
    check_generator("generator", generator)
    if generator is not None and generator.device.type != (target.type if target is not None else "cpu"):
        raise ValueError(f"generator is on {generator.device} but the draw is on {target or 'cpu'}: pass a "
                         f"torch.Generator on the same device type")
    check_allocation(name, (dims[0], check_count("components", components), *dims[1:]), dtype, target, requested=dims)
    return dims


__all__ += ["ODE_ADAPTIVE_METHODS", "ODE_FIXED_METHODS", "check_allocation", "check_ode_method", "check_sample_shape",
            "memory_capacity"]


def check_data_batch(name: str, x: Any) -> torch.Tensor:
    """Return ``x`` if it is a floating tensor of data ``(batch, *event_shape)`` with ``batch >= 1``; otherwise a
    ``TypeError`` (not a floating tensor) or a ``ValueError`` (0-d, empty batch), each naming ``name``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating torch.Tensor of data (batch, *event_shape), got {got}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (batch, *event_shape) with batch >= 1, got "
                         f"{'a 0-d tensor' if x.ndim == 0 else tuple(x.shape)}")
    return x


__all__ += ["check_data_batch"]
