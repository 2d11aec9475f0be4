r"""Maps through the probability-flow ODE: encode data into latents, decode latents, interpolate between them.

The probability-flow ODE (eq. 58, :class:`~splitdyn.reverse.ProbabilityFlowODE`)
:math:`\dot u = f(u, t) - \tfrac12 GG^\top(t)\,s(u, t)` moves the marginal :math:`p_t` of the forward process
deterministically. Integrated forward from the cutoff :math:`\epsilon` to :math:`T` it maps a state to a latent
(:func:`encode`, an approximately prior-distributed code), and backward it maps a latent to a state
(:func:`decode`); with an exact solver the two are inverse bijections. :func:`interpolate` decodes the
spherical interpolation (:func:`slerp`) of two latents: the latent traversals of the CLD project page. All
solves use ``torchdiffeq.odeint`` (adaptive ``dopri5`` by default, ``rtol = atol = 1e-5`` as in the paper).

For CLD a state is :math:`u = (x, v)`: encode data by pairing it with a velocity, e.g.
:math:`v \sim \mathcal N(0, \gamma M I)` (the :math:`t = 0` marginal), and read the data channel of a decoded
state.

Examples
--------
>>> import torch
>>> from splitdyn import VPSDE
>>> from splitdyn.flow_maps import decode, encode
>>> vp = VPSDE()
>>> score = lambda u, t: -u  # the score of N(0, I), a fixed point of the VP flow
>>> u = torch.randn(4, 1, 2, dtype=torch.float64)
>>> z = encode(vp, score, u)
>>> bool(torch.allclose(decode(vp, score, z), u, atol=1e-6))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import as_float64, check_count, check_ode_method, check_positive
from .reverse import ProbabilityFlowODE, ScoreFunction

__all__ = ["flow", "encode", "decode", "slerp", "interpolate"]


def _check_state(u, name: str) -> torch.Tensor:
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor state (batch, k, *event), got {type(u).__name__}")
    if not u.is_floating_point() or u.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name} must be a float32 or float64 tensor, got dtype {u.dtype}")
    if u.ndim < 2 or u.shape[0] == 0:
        raise ValueError(f"{name} must have shape (batch >= 1, k, *event), got {tuple(u.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return u


def _check_process(process):
    if not hasattr(process, "T") or not hasattr(process, "num_components"):
        raise TypeError(f"process must be a forward SDE (with T and num_components, e.g. splitdyn.VPSDE() or "
                        f"splitdyn_cld.CLD()), got {type(process).__name__}")
    return process


def flow(process, score: ScoreFunction, u: torch.Tensor, times: Sequence[float], *,
         score_components: Sequence[int] | None = None, rtol: float = 1e-5, atol: float = 1e-5,
         method: str = "dopri5") -> torch.Tensor:
    r"""Integrate the probability-flow ODE of ``process`` through the forward ``times``, starting at ``times[0]``.

    Parameters
    ----------
    process:
        The forward SDE (any :class:`~splitdyn.linear_sde.LinearSDEBase`, e.g. CLD or the VPSDE).
    score:
        ``score(u, t)`` in forward time, returning ``score_components``.
    u:
        The state at ``times[0]``, ``(batch, k, *event)``, float32 or float64.
    times:
        Strictly monotone forward times in :math:`[0, T]` (increasing: towards the prior; decreasing: towards
        the data); at least two.
    score_components:
        The components ``score`` returns; default ``process.score_components`` if defined, else all.
    rtol, atol, method:
        ``torchdiffeq.odeint`` settings; ``method`` an adaptive solver (``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
        ``"fehlberg2"``, ``"adaptive_heun"``) or a fixed-step one (``"euler"``, ``"midpoint"``, ``"heun2"``,
        ``"heun3"``, ``"rk4"``, ``"explicit_adams"``, ``"implicit_adams"``), which takes one step per interval
        of ``times``.

    Returns
    -------
    torch.Tensor
        The states at ``times``, shape ``(len(times), *u.shape)`` (the first is ``u``).

    Raises
    ------
    ValueError
        Also during the solve, when the vector field (i.e. the score) returns NaN or infinity.
    """
    import torchdiffeq

    u = _check_state(u, "u")
    _check_process(process)
    if u.shape[1] != process.num_components:
        raise ValueError(f"u must have shape (batch, {process.num_components}, *event) with the process's "
                         f"{process.num_components} components on dim 1, got {tuple(u.shape)}")
    if not callable(score):
        raise TypeError(f"score must be callable score(u, t), got {type(score).__name__}")
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    check_ode_method("method", method)
    grid = as_float64("times", times, "a sequence of forward times")
    if grid.ndim > 1:
        raise ValueError(f"times must be a 1-D sequence of at least two forward times, got shape {tuple(grid.shape)}")
    grid = grid.reshape(-1)
    if grid.numel() < 2:
        raise ValueError(f"times must hold at least two forward times, got {grid.tolist()}")
    steps = grid[1:] - grid[:-1]
    if not (bool((steps > 0).all()) or bool((steps < 0).all())):
        raise ValueError(f"times must be strictly monotone, got {grid.tolist()}")
    T = float(process.T)
    if float(grid.min()) < 0 or float(grid.max()) > T * (1 + 1e-12):
        raise ValueError(f"times must lie in [0, T = {T}], got [{float(grid.min())}, {float(grid.max())}]")
    if score_components is None:
        score_components = getattr(process, "score_components", None)
    ode = ProbabilityFlowODE(process, score, score_components)

    def field(t, y):
        v = ode(t, y)
        # one host sync per evaluation, as the adaptive step control makes anyway: a NaN score would otherwise
        # surface deep inside the solver (a NaN time, or "underflow in dt")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"the probability-flow vector field is non-finite (NaN or inf) at forward time t = "
                             f"{float(t):.6g}: the score returned NaN/inf there (check score), or the solve diverged")
        return v

    with torch.no_grad():
        return torchdiffeq.odeint(field, u, grid.to(u.device), rtol=rtol, atol=atol, method=method)


def encode(process, score: ScoreFunction, u: torch.Tensor, *, eps: float = 1e-3, **options) -> torch.Tensor:
    r"""The latent of the state ``u`` at forward time ``eps``: the probability flow from ``eps`` to ``T``.

    ``options`` go to :func:`flow` (``score_components``, ``rtol``, ``atol``, ``method``).
    """
    _check_process(process)
    eps = check_positive("eps", eps)
    if not eps < float(process.T):
        raise ValueError(f"eps must be smaller than T = {float(process.T)}, got {eps}")
    return flow(process, score, u, [eps, float(process.T)], **options)[-1]


def decode(process, score: ScoreFunction, z: torch.Tensor, *, eps: float = 1e-3, **options) -> torch.Tensor:
    r"""The state at forward time ``eps`` of the latent ``z`` (at ``T``): the probability flow from ``T`` to ``eps``.

    The inverse of :func:`encode` up to the solver's tolerance. ``options`` go to :func:`flow`.
    """
    _check_process(process)
    eps = check_positive("eps", eps)
    if not eps < float(process.T):
        raise ValueError(f"eps must be smaller than T = {float(process.T)}, got {eps}")
    return flow(process, score, z, [float(process.T), eps], **options)[-1]


def slerp(z0: torch.Tensor, z1: torch.Tensor, weights) -> torch.Tensor:
    r"""Spherical interpolation of latents, per sample: :math:`\frac{\sin((1-w)\Omega)}{\sin\Omega} z_0 +
    \frac{\sin(w\Omega)}{\sin\Omega} z_1`, :math:`\Omega` the angle between the flattened ``z0[i]`` and ``z1[i]``
    (linear interpolation where they are parallel).

    Parameters
    ----------
    z0, z1:
        Latents of the same shape ``(batch, ...)``.
    weights:
        Interpolation weights, a number or a 1-D sequence (0 gives ``z0``, 1 gives ``z1``).

    Returns
    -------
    torch.Tensor
        ``(len(weights), *z0.shape)``.
    """
    z0, z1 = _check_state(z0, "z0"), _check_state(z1, "z1")
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    w = as_float64("weights", weights, "a number or a 1-D sequence of interpolation weights")
    if w.ndim > 1:
        raise ValueError(f"weights must be a number or a 1-D sequence of interpolation weights, got shape "
                         f"{tuple(w.shape)} (one weight per output: pass a flat sequence)")
    w = w.reshape(-1)
    if w.numel() == 0:
        raise ValueError("weights must hold at least one interpolation weight, got an empty sequence")
    a, b = z0.reshape(z0.shape[0], -1).double(), z1.reshape(z1.shape[0], -1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))[None, :, None]
    w = w[:, None, None]
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-8
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    c0 = torch.where(parallel, 1.0 - w, torch.sin((1.0 - w) * omega) / safe)
    c1 = torch.where(parallel, w, torch.sin(w * omega) / safe)
    out = c0 * a[None] + c1 * b[None]
    return out.reshape(w.shape[0], *z0.shape).to(z0.dtype)


def interpolate(process, score: ScoreFunction, z0: torch.Tensor, z1: torch.Tensor, n: int = 8, *,
                eps: float = 1e-3, **options) -> torch.Tensor:
    r"""Decode ``n`` spherically interpolated latents between ``z0`` and ``z1`` (weights ``linspace(0, 1, n)``).

    Returns the decoded states at forward time ``eps``, ``(n, *z0.shape)``. ``options`` go to :func:`flow`.
    """
    n = check_count("n", n, minimum=2)
    path = slerp(z0, z1, torch.linspace(0.0, 1.0, n, dtype=torch.float64))
    decoded = decode(process, score, path.reshape(-1, *z0.shape[1:]), eps=eps, **options)
    return decoded.reshape(n, *z0.shape)
