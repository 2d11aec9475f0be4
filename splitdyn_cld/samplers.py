r"""CLD sampling presets: the paper's settings over the one entry point :func:`splitdyn.sample`.

:func:`sample` draws :math:`u_T` from the CLD prior :math:`\mathcal{N}(0, \mathrm{diag}(1, M))` (or takes a given
state), integrates reverse time over a uniform or quadratic-striding grid (App. E.2.3) to the cutoff
:math:`\epsilon = 10^{-3}` and takes the denoising step of eq. 107. The result is a
:class:`splitdyn.Solution`; ``x, v = result.components()`` gives the data and velocity.

**NFE** counts score evaluations (see :mod:`splitdyn.integrate`): ``n_steps`` for SSCS and EM, plus one for
the denoising step. For CLD the denoising step's data update needs no score (eq. 109:
:math:`x_0 = x_\epsilon - \epsilon\beta M^{-1} v_\epsilon`, :math:`GG^\top` vanishes on :math:`x`); only the
velocity uses it. The step is taken in full (so the returned velocity is correct too) and counted, following
the reference implementation, so ``n`` evaluations mean ``n - 1`` steps plus denoising.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch

import splitdyn
from splitdyn.checks import check_count
from splitdyn.grids import Grid, make_grid

from .process import CLD

__all__ = ["sample", "SAMPLER_NAMES"]

#: The sampler names :func:`sample` accepts (those of :data:`splitdyn.SAMPLERS`).
SAMPLER_NAMES = tuple(sorted(splitdyn.SAMPLERS))


def sample(cld: CLD, velocity_score, shape_or_u, n_steps: int | None = None, sampler="sscs", *,
           grid: str | Grid = "uniform", eps: float = 1e-3, rtol: float = 1e-5, atol: float = 1e-5,
           method: str = "dopri5", dtype: torch.dtype = torch.float32, **options: Any) -> splitdyn.Solution:
    r"""Sample a CLD model with the paper's settings: a preset over :func:`splitdyn.sample`.

    Parameters
    ----------
    cld:
        The process.
    velocity_score:
        ``score(u, t) -> (batch, 1, *event)``, the velocity score :math:`\nabla_v \log p_t(u)` in forward time.
    shape_or_u:
        ``(batch, *event)`` (Python or numpy integers) to draw :math:`u_T` from the prior, or an initial state
        ``(batch, 2, *event)``.
    n_steps:
        Number of steps of a fixed-grid sampler with a named ``grid``; ``None`` for ``"ode"`` (which picks its
        own) and with a grid object.
    sampler:
        ``"sscs"`` (Algorithm 1), ``"em"``, ``"ode"`` (adaptive probability flow), ``"torchsde-euler"``, ...
        (any name in :data:`splitdyn.SAMPLERS`), or anything :func:`splitdyn.sample` takes as ``step``.
    grid:
        ``"uniform"`` or ``"quadratic"`` (quadratic striding) from :math:`\tau = 0` to :math:`T - \epsilon`, or a
        grid object (:mod:`splitdyn.grids`).
    eps:
        The cutoff :math:`\epsilon` of a named grid and of ``"ode"`` (paper: ``1e-3``).
    rtol, atol, method:
        Settings of the ``"ode"`` sampler (paper: ``dopri5``, ``1e-5``).
    dtype:
        As for :func:`splitdyn.sample`.
    **options:
        Every other argument of :func:`splitdyn.sample` (``denoise``, ``generator``, ``device``, ``progress``,
        ``callback``, ``save_at``, ``fuse``, ``differentiable``, ``compile``, ``divergence_factor``,
        ``noise``...), forwarded as is (``save_at`` in reverse time :math:`\tau = T - t`).
    """
    if not isinstance(cld, CLD):
        raise TypeError(f"cld must be a splitdyn_cld.CLD, got {type(cld).__name__}")
    if isinstance(shape_or_u, (tuple, list)):  # a shape: numpy integers are integers too
        shape_or_u = tuple(int(s) if isinstance(s, Integral) and not isinstance(s, bool) else s for s in shape_or_u)
    for name in ("step", "grid"):
        if name in options:  # pragma: no cover - Python already refuses a duplicate of a named parameter
            raise TypeError(f"pass the sampler as sampler=..., not {name}=...")
    times: Grid | torch.Tensor | None
    if isinstance(sampler, str) and sampler == "ode":
        if n_steps is not None:
            raise ValueError("the 'ode' sampler picks its own steps: pass n_steps=None (tune rtol/atol instead)")
        step, times = splitdyn.AdaptiveProbabilityFlow(rtol, atol, method, eps), None
    elif isinstance(grid, Grid):
        if n_steps is not None:
            raise ValueError(f"n_steps must be None with a grid object (it has its own number of steps), got {n_steps}")
        step, times = sampler, grid
    else:  # a named grid
        if n_steps is None:
            raise ValueError(f"n_steps is required for the {sampler!r} sampler")
        step, times = sampler, make_grid(grid, check_count("n_steps", n_steps), cld.T, eps)
    return splitdyn.sample(cld, velocity_score, shape_or_u, times, step=step, dtype=dtype, **options)
