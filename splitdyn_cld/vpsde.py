r"""The VPSDE baseline (Song et al. 2021): :math:`dx = -\frac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw` with
:math:`\beta(t) = 0.1 + 19.9\,t`, as a one-component :class:`splitdyn.LinearSDE`; its EM sampler with the
denoising step of eq. 108 uses the generic samplers."""

from __future__ import annotations

import torch

from splitdyn import LinearBeta, LinearSDE
from splitdyn.grids import make_grid
from splitdyn.samplers import sample_euler_maruyama

__all__ = ["vpsde", "vpsde_em"]


def vpsde(beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> LinearSDE:
    """The VPSDE as a ``k = 1`` linear SDE (states ``(batch, 1, *event)``)."""
    return LinearSDE([[-0.5]], [[1.0]], LinearBeta(beta_min, beta_max, T), T)


def vpsde_em(sde: LinearSDE, score, shape, n_steps: int, *, grid: str = "uniform", eps: float = 1e-3,
             denoise: bool = True, generator=None, dtype=torch.float32, device=None, progress: bool = False):
    """EM on the VPSDE's reverse SDE from :math:`\\mathcal{N}(0, I)`, with denoising; returns ``(x, nfe)``.

    ``score(u, t)`` takes states ``(batch, 1, *event)`` and returns the same shape.
    """
    from splitdyn import ReverseSDE

    shape = tuple(shape)
    u = torch.randn((shape[0], 1, *shape[1:]), generator=generator, dtype=dtype, device=device)
    sol = sample_euler_maruyama(ReverseSDE(sde, score), u, make_grid(grid, n_steps, sde.T, eps),
                                denoise_eps=eps if denoise else None, generator=generator, progress=progress)
    return sol.state[:, 0], sol.nfe
