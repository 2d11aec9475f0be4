r"""The CLD negative log-likelihood bound (paper eq. 60).

With :math:`v_0 \sim \mathcal{N}(0, \gamma M I_d)` drawn independently of :math:`x_0`,
:math:`-\log p(x_0) \le \mathbb{E}_{v_0}[-\log p(x_0, v_0)] - H[\mathcal{N}(0, \gamma M I_d)]`, where
:math:`\log p(x_0, v_0)` comes from the probability-flow ODE (:func:`splitdyn.likelihood.log_likelihood`).
With an exact score the gap is :math:`\mathbb{E}_{x_0}\,\mathrm{KL}(\mathcal N(0,\gamma M I)\,\|\,p(v_0\mid x_0))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from splitdyn import ProbabilityFlowODE
from splitdyn.likelihood import log_likelihood

from .process import CLD

__all__ = ["NLLBound", "nll_bound"]


@dataclass
class NLLBound:
    """Per-sample NLL bound in nats (``(batch,)`` float64), bits per dimension, and the solver's NFE."""

    nats: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int


def nll_bound(cld: CLD, velocity_score, x0: torch.Tensor, *, t0: float = 1e-5, trace: str = "hutchinson",
              rtol: float = 1e-5, atol: float = 1e-5, bits_offset: float = 0.0, generator=None) -> NLLBound:
    r"""NLL bound of eq. 60 for data ``x0`` of shape ``(batch, *event)``.

    ``bits_per_dim = nats / (D ln 2) + bits_offset`` with ``D`` the data dimensions (``bits_offset = 7`` for
    8-bit images dequantised and scaled to :math:`[-1, 1]`).
    """
    u0 = cld.sample_initial_velocity(x0, generator)
    ode = ProbabilityFlowODE(cld, velocity_score, score_components=[1])
    result = log_likelihood(ode, u0, t0=t0, trace=trace, rtol=rtol, atol=atol, generator=generator)
    D = x0[0].numel()
    entropy = 0.5 * D * (1.0 + math.log(2 * math.pi * cld.gamma * cld.mass))
    nats = -result.log_prob - entropy
    return NLLBound(nats=nats, bits_per_dim=nats / (D * math.log(2)) + bits_offset, nfe=result.nfe)
