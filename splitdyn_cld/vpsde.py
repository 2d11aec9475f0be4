r"""The VPSDE baseline (Song et al. 2021), built from the generic pieces.

.. math::

    dx = -\tfrac12 \beta(t)\,x\,dt + \sqrt{\beta(t)}\,dw, \qquad \beta(t) = \beta_{\min} + (\beta_{\max} -
    \beta_{\min})\,t/T,

with :math:`\beta(t) = 0.1 + 19.9\,t` by default: a one-component (``k = 1``) :class:`splitdyn.LinearSDE` with
:math:`F = -\tfrac12`, :math:`G = 1` and a :class:`splitdyn.LinearBeta` rescaling. States are
``(batch, 1, *event)``; the prior is :math:`\mathcal{N}(0, I)`. :func:`vpsde_em` is Euler-Maruyama with the
denoising step of eq. 108, through :func:`splitdyn.samplers.sample_euler_maruyama`.
"""

from __future__ import annotations

import torch

from splitdyn import LinearBeta, LinearSDE, ReverseSDE
from splitdyn.checks import check_state
from splitdyn.grids import make_grid
from splitdyn.samplers import sample_euler_maruyama

__all__ = ["vpsde", "vpsde_em"]


def vpsde(beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> LinearSDE:
    r"""The VPSDE as a ``k = 1`` linear SDE, :math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min}) t / T`."""
    return LinearSDE([[-0.5]], [[1.0]], LinearBeta(beta_min, beta_max, T), T)


def vpsde_em(sde: LinearSDE, score, shape_or_u, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
             denoise: bool = True, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
             device=None, progress: bool = False, callback=None) -> tuple[torch.Tensor, int]:
    r"""Euler-Maruyama on the VPSDE's reverse SDE from :math:`\mathcal{N}(0, I)`, then denoising (eq. 108).

    Parameters
    ----------
    sde:
        The forward SDE (:func:`vpsde`; any one-component linear SDE with a standard normal prior).
    score:
        ``score(u, t)``: states ``(batch, 1, *event)`` in, the same shape out.
    shape_or_u:
        ``(batch, *event)`` to draw the prior, or an initial state ``(batch, 1, *event)``.
    n_steps, grid, eps, denoise, generator, dtype, device, progress, callback:
        As for :func:`splitdyn_cld.samplers.sscs`.

    Returns
    -------
    (x, nfe):
        Samples ``(batch, *event)`` and the score evaluations (``n_steps``, + 1 with denoising).
    """
    if not isinstance(sde, LinearSDE) or sde.num_components != 1:
        raise TypeError(f"sde must be a one-component splitdyn.LinearSDE (see vpsde()), got {sde!r}")
    if isinstance(shape_or_u, torch.Tensor):
        u = check_state("shape_or_u", shape_or_u, 1)
    else:
        try:
            shape = tuple(shape_or_u)
        except TypeError:
            raise TypeError(f"shape_or_u must be a shape or a state tensor, got {type(shape_or_u).__name__}") from None
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"shape_or_u must be a shape (batch, *event) of positive ints, got {shape_or_u!r}")
        u = torch.randn((shape[0], 1, *shape[1:]), generator=generator, dtype=dtype, device=device)
    sol = sample_euler_maruyama(ReverseSDE(sde, score), u, make_grid(grid, n_steps, sde.T, eps),
                                denoise_eps=eps if denoise else None, generator=generator, progress=progress,
                                callback=callback)
    return sol.state[:, 0], sol.nfe
