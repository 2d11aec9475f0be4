r"""Moment ODEs of a linear SDE, integrated with torchdiffeq: the reference path for every exact kernel.

For :math:`du = F(t)u\,dt + G(t)\,dw` the transition matrix and noise covariance solve

.. math::

    \frac{d}{dt}\Phi(t, s) = F(t)\,\Phi(t, s),\qquad
    \frac{d}{dt}Q(t, s) = F(t) Q + Q F(t)^\top + G(t)G(t)^\top,\qquad \Phi(s, s) = I,\ Q(s, s) = 0

(Särkkä & Solin 2019, Sec. 6.1; the CLD paper's eq. 26-27).
"""

from __future__ import annotations

import torch

from .checks import as_float64_time, check_tolerance
from .protocols import LinearProcess, require

__all__ = ["moment_kernels"]


def moment_kernels(sde, t, s=0.0, *, rtol: float = 1e-11, atol: float = 1e-13, method: str = "dopri5"):
    r"""Integrate the moment ODEs of ``sde`` from ``s`` to ``t`` with ``torchdiffeq.odeint`` (float64).

    Parameters
    ----------
    sde:
        Any :class:`~splitdyn.protocols.LinearProcess` (e.g. a :class:`~splitdyn.linear_sde.LinearSDEBase`;
        only ``drift_matrix`` and ``diffusion_matrix`` are used).
    t, s:
        Times (broadcastable); every ``t >= s``.
    rtol, atol, method:
        Passed to ``torchdiffeq.odeint``.

    Returns
    -------
    (Phi, Q):
        float64 tensors of shape ``broadcast(t, s).shape + (k, k)``.
    """
    import torchdiffeq

    require("sde", sde, LinearProcess)
    rtol = check_tolerance("rtol", rtol)
    atol = check_tolerance("atol", atol)
    if not isinstance(method, str):
        raise TypeError(f"method must be the name of a torchdiffeq solver (a str), got {type(method).__name__}")
    t = as_float64_time("t", t)
    s = as_float64_time("s", s)
    try:
        t, s = torch.broadcast_tensors(t, s)
    except RuntimeError as exc:
        raise ValueError(f"t and s must be broadcastable, got shapes {tuple(t.shape)} and {tuple(s.shape)}") from exc
    if bool((t < s).any()):
        raise ValueError("moment_kernels needs t >= s (the moment ODEs run forward in time)")
    k = sde.num_components
    eye = torch.eye(k, dtype=torch.float64)

    def rhs(r, y):
        Phi, Q = y[:, :k], y[:, k:]
        F = sde.drift_matrix(r, check_range=False)
        G = sde.diffusion_matrix(r, check_range=False)
        GGt = G @ G.T
        return torch.cat([F @ Phi, F @ Q + Q @ F.T + GGt], dim=1)

    flat_t, flat_s = t.reshape(-1), s.reshape(-1)
    Phi_out = torch.empty(flat_t.numel(), k, k, dtype=torch.float64)
    Q_out = torch.empty_like(Phi_out)
    y0 = torch.cat([eye, torch.zeros(k, k, dtype=torch.float64)], dim=1)
    # One solve per distinct start time, saving at all its end times.
    for start in torch.unique(flat_s):
        idx = (flat_s == start).nonzero().reshape(-1)
        ends, inverse = torch.unique(flat_t[idx], return_inverse=True)
        grid = torch.cat([start.reshape(1), ends])
        keep_first = ends[0] == start
        if keep_first:
            grid = grid[1:]
        if grid.numel() == 1:
            ys = y0[None]
        else:
            ys = torchdiffeq.odeint(rhs, y0, grid, rtol=rtol, atol=atol, method=method)
        if not keep_first:
            ys = ys[1:]
        Phi_out[idx] = ys[inverse, :, :k]
        Q_out[idx] = ys[inverse, :, k:]
    Q_out = 0.5 * (Q_out + Q_out.transpose(-1, -2))
    return Phi_out.reshape(*t.shape, k, k), Q_out.reshape(*t.shape, k, k)
