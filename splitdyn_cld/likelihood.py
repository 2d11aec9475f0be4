r"""The CLD negative log-likelihood bound (paper eq. 60).

CLD's probability-flow ODE gives the density of the joint state :math:`u_0 = (x_0, v_0)`, not of the data.
With :math:`q(v_0) = \mathcal{N}(0, \gamma M I_d)`, Jensen's inequality gives (eq. 60)

.. math::

    -\log p(x_0) \le \mathbb{E}_{v_0 \sim q}\big[-\log p(x_0, v_0)\big] - H[q],
    \qquad H[q] = \tfrac d2 \log(2\pi e\,\gamma M),

with gap :math:`\mathrm{KL}\big(q(v_0)\,\|\,p(v_0 \mid x_0)\big)`. :func:`nll_bound` estimates the right-hand
side with one :math:`v_0` per data point and :math:`\log p(x_0, v_0)` from the probability-flow ODE
(:func:`splitdyn.likelihood.log_likelihood`, started at :math:`t_0 = 10^{-5}`).

**With an exact score** of data diffused from :math:`p_{\rm data}(x_0)\,q(v_0)` (the law the model is trained
on: :math:`v_0` independent of :math:`x_0`), the model's :math:`p(v_0 \mid x_0)` *is* :math:`q`, so the gap
vanishes: the ODE likelihood is :math:`\log p_{\rm data}(x_0) + \log q(v_0)` (up to the :math:`O(t_0)` start,
the solver tolerance and the equilibrium prior standing for :math:`p_T`), and the per-sample bound is
:math:`-\log p_{\rm data}(x_0) - \log q(v_0) - H[q]`, unbiased for :math:`-\log p_{\rm data}(x_0)` with
variance :math:`d/2` from the single :math:`v_0` (``tests/test_cld_likelihood.py`` checks both). A learnt
score makes :math:`p(v_0 \mid x_0)` differ from :math:`q` and the gap positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from splitdyn import ProbabilityFlowODE
from splitdyn.checks import (check_callable, check_count, check_finite_tensor, check_generator, check_ode_method,
                             check_real)
from splitdyn.likelihood import log_likelihood

from .process import CLD

__all__ = ["NLLBound", "nll_bound", "velocity_entropy"]


@dataclass
class NLLBound:
    """Result of :func:`nll_bound` (per-sample tensors of shape ``(batch,)``, float64).

    Attributes
    ----------
    nats:
        The bound :math:`-\\log p(x_0, v_0) - H[q]` in nats.
    bits_per_dim:
        ``nats / (D ln 2) + bits_offset``.
    nfe:
        Vector-field evaluations of the ODE solver.
    joint_log_prob:
        :math:`\\log p(x_0, v_0)` from the probability-flow ODE.
    v0:
        The velocities used, ``(batch, *event)``.
    """

    nats: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int
    joint_log_prob: torch.Tensor | None = None
    v0: torch.Tensor | None = None


def velocity_entropy(cld: CLD, dimension: int) -> float:
    r"""Entropy :math:`H[\mathcal N(0, \gamma M I_d)] = \frac d2 \log(2\pi e\,\gamma M)` in nats."""
    if not isinstance(cld, CLD):
        raise TypeError(f"cld must be a splitdyn_cld.CLD, got {type(cld).__name__}")
    dimension = check_count("dimension", dimension)
    return 0.5 * dimension * (1.0 + math.log(2.0 * math.pi * cld.gamma * cld.mass))


def nll_bound(cld: CLD, velocity_score, x0: torch.Tensor, *, t0: float = 1e-5, trace: str = "hutchinson",
              rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", bits_offset: float = 0.0,
              v0: torch.Tensor | None = None, prior_covariance: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> NLLBound:
    r"""The NLL bound of eq. 60 for data ``x0`` of shape ``(batch, *event)``, one velocity sample per point.

    Parameters
    ----------
    cld:
        The process.
    velocity_score:
        ``score(u, t) -> (batch, 1, *event)``.
    x0:
        Data (for images: dequantised and scaled, e.g. to :math:`[-1, 1]`).
    t0:
        Where the ODE starts (paper: ``1e-5``); :math:`\log p_{t_0}(x_0, v_0)` stands for
        :math:`\log p_0(x_0, v_0)`.
    trace:
        ``"hutchinson"`` (one Rademacher probe per solve, unbiased; the paper's) or ``"exact"`` (``2 D``
        backward passes per evaluation: small problems).
    rtol, atol, method:
        ``torchdiffeq`` settings (paper: RK45, ``1e-5``).
    bits_offset:
        Added to bits/dim; ``7`` for 8-bit images dequantised to :math:`[0, 256)` and scaled to
        :math:`[-1, 1]`: that scaling divides by 128, so a density on :math:`[0, 256)^D` is :math:`128^{-D}`
        times the scaled one, i.e. :math:`\log_2 128 = 7` more bits per dimension.
    v0:
        Velocities ``(batch, *event)``; default drawn from :math:`\mathcal{N}(0, \gamma M I)` with ``generator``.
    prior_covariance:
        Per-coordinate ``2 x 2`` covariance of the Gaussian that stands for :math:`p_T`; default the
        equilibrium :math:`\mathrm{diag}(1, M)` (the paper's; the true :math:`p_1` differs from it by
        :math:`O(e^{-8})` with the default :math:`\beta = 4`).
    generator:
        For ``v0`` and the Hutchinson probe: ``None`` or a ``torch.Generator`` on ``x0``'s device type.

    Returns
    -------
    NLLBound
        ``bits_per_dim = nats / (D ln 2) + bits_offset`` with ``D`` the number of data dimensions (the
        velocity's are not counted).
    """
    if not isinstance(cld, CLD):
        raise TypeError(f"cld must be a splitdyn_cld.CLD, got {type(cld).__name__}")
    check_callable("velocity_score", velocity_score, "a callable score(u, t)")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating tensor of shape (batch, *event), got "
                        f"{x0.dtype if isinstance(x0, torch.Tensor) else type(x0).__name__}")
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must have shape (batch, *event) with batch >= 1, got {tuple(x0.shape)}")
    check_finite_tensor("x0", x0)
    bits_offset = check_real("bits_offset", bits_offset)
    check_generator("generator", generator)
    if generator is not None and generator.device.type != x0.device.type:
        raise ValueError(f"generator is on {generator.device} but x0 is on {x0.device}: pass a torch.Generator on "
                         "x0's device")
    check_ode_method("method", method, adaptive_only=True)
    if v0 is None:
        u0 = cld.sample_initial_velocity(x0, generator)
    else:
        if not isinstance(v0, torch.Tensor) or not v0.is_floating_point():
            raise TypeError(f"v0 must be a floating torch.Tensor, got {v0.dtype if isinstance(v0, torch.Tensor) else type(v0).__name__}")
        if v0.shape != x0.shape:
            raise ValueError(f"v0 must be a tensor of x0's shape {tuple(x0.shape)}, got {tuple(v0.shape)}")
        u0 = torch.stack([x0, check_finite_tensor("v0", v0).to(x0)], dim=1)
    ode = ProbabilityFlowODE(cld, velocity_score, score_components=[1])
    result = log_likelihood(ode, u0, t0=t0, prior_covariance=prior_covariance, trace=trace, rtol=rtol, atol=atol,
                            method=method, generator=generator)
    D = x0[0].numel()
    nats = -result.log_prob - velocity_entropy(cld, D)
    return NLLBound(nats=nats, bits_per_dim=nats / (D * math.log(2.0)) + bits_offset, nfe=result.nfe,
                    joint_log_prob=result.log_prob, v0=u0[:, 1])
