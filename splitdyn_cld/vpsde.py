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

from splitdyn import LinearBeta, LinearSDE

__all__ = ["vpsde"]


def vpsde(beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> LinearSDE:
    r"""The VPSDE as a ``k = 1`` linear SDE, :math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min}) t / T`."""
    return LinearSDE([[-0.5]], [[1.0]], LinearBeta(beta_min, beta_max, T), T)
