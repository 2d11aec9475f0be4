r"""Denoising score matching against a Gaussian perturbation kernel.

For a kernel :math:`p_t(u_t \mid \cdot) = \mathcal{N}(\mu_t, L_tL_t^\top)` and a sample
:math:`u_t = \mu_t + L_t\varepsilon`, the regression target for the score of a block of components is
:math:`[-L_t^{-\top}\varepsilon]_{\text{block}}`, and the loss is
:math:`\lambda(t)\,\|s_\theta(u_t, t) - [-L_t^{-\top}\varepsilon]_{\text{block}}\|^2` summed over dimensions
(paper eq. 9 and 53 for CLD's hybrid score matching, eq. 54 for DSM).

For one-component processes (:mod:`splitdyn.processes`) a network is often trained to predict the noise
:math:`\varepsilon` instead; :func:`score_from_noise_prediction` turns such a predictor into a score,
:math:`s(x, t) = -\hat\varepsilon(x, t)/\sigma(t)`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .checks import as_float64, as_float64_time, check_callable, check_components, check_state
from .gaussian import PerturbationKernel
from .linear_sde import LinearSDEBase
from .processes import DiffusionProcess

__all__ = ["kernel_score_matching_loss", "NoisePredictionScore", "score_from_noise_prediction"]


def kernel_score_matching_loss(
    score,
    kernel: PerturbationKernel,
    *,
    components=None,
    weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Per-sample denoising score-matching loss against ``kernel`` (shape ``(batch,)``).

    Parameters
    ----------
    score:
        ``score(u, t)`` returning the score for ``components`` (all components if ``None``).
    kernel:
        The perturbation kernel at per-sample times ``kernel.t``.
    components:
        Component indices the score models (e.g. ``[1]`` for CLD's velocity).
    weight:
        :math:`\lambda(t)` per sample (float64 or any dtype, shape ``(batch,)``); default 1.
    generator:
        For the noise :math:`\varepsilon`.
    noise:
        The standard normal :math:`\varepsilon` (shape of ``kernel.mean``, finite) for common random numbers;
        default drawn from ``generator``.
    """
    check_callable("score", score, "a callable score(u, t)")
    if not isinstance(kernel, PerturbationKernel):
        raise TypeError(f"kernel must be a splitdyn.PerturbationKernel, got {type(kernel).__name__}")
    if components is not None:
        components = check_components("components", components, kernel.sde.num_components)
    batch = kernel.mean.shape[0]
    if weight is not None:
        weight = as_float64("weight", weight, "a number or a (batch,) tensor of weights")
        if weight.ndim > 1 or (weight.ndim == 1 and weight.shape[0] != batch):
            raise ValueError(f"weight must be a number or have shape (batch,) = ({batch},), got {tuple(weight.shape)}")
    u, noise = kernel.sample(generator, noise)
    target = kernel.score_from_noise(noise, components)
    s = score(u, kernel.t.to(u.device) if kernel.t.ndim else float(kernel.t))
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"score must return a torch.Tensor, got {type(s).__name__}")
    if s.shape != target.shape:
        raise ValueError(f"score returned shape {tuple(s.shape)}, expected {tuple(target.shape)}")
    loss = (s - target).pow(2).reshape(u.shape[0], -1).sum(1)
    if weight is not None:
        loss = loss * weight.to(dtype=loss.dtype, device=loss.device)
    return loss


class NoisePredictionScore(nn.Module):
    r"""Score of a one-component process from a noise predictor: :math:`s(x, t) = -\hat\varepsilon(x, t)/\sigma(t)`.

    :math:`\sigma(t)` is the perturbation kernel's standard deviation given :math:`x_0`
    (:meth:`splitdyn.processes.DiffusionProcess.sigma`, or :math:`Q(t, 0)^{1/2}` for any other ``k = 1``
    linear SDE), computed in float64 and cast at use. Training :math:`\hat\varepsilon` with
    :func:`kernel_score_matching_loss` and the weight :math:`\lambda(t) = \sigma(t)^2` gives the standard
    loss :math:`\|\hat\varepsilon - \varepsilon\|^2` (Ho et al. 2020; Song et al. 2021).

    Parameters
    ----------
    net:
        ``net(x, t) -> (batch, 1, *event)`` for states ``(batch, 1, *event)`` and times ``(batch,)`` in the
        states' dtype; an ``nn.Module`` (registered as a submodule) or any callable.
    sde:
        The forward process, a :class:`~splitdyn.linear_sde.LinearSDEBase` with one component.
    """

    def __init__(self, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sde: LinearSDEBase) -> None:
        super().__init__()
        check_callable("net", net, "a noise predictor net(x, t)")
        if not isinstance(sde, LinearSDEBase):
            raise TypeError(f"sde must be a LinearSDEBase (e.g. splitdyn.processes.VPSDE), got {type(sde).__name__}")
        if sde.num_components != 1:
            raise ValueError(f"sde must have one component (a VP/VE-like process), got {sde.num_components}")
        self.net = net
        self.sde = sde

    def _times(self, u: torch.Tensor, t) -> torch.Tensor:
        times = as_float64_time("t", t)
        if times.ndim == 0:
            return times.expand(u.shape[0])
        if times.shape != (u.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({u.shape[0]},), got {tuple(times.shape)}")
        return times

    def sigma(self, t) -> torch.Tensor:
        r""":math:`\sigma(t)`, float64 of the shape of ``t``."""
        if isinstance(self.sde, DiffusionProcess):
            return self.sde.sigma(t)
        t = as_float64_time("t", t)
        return self.sde.noise_covariance(t.reshape(-1))[:, 0, 0].sqrt().reshape(t.shape)

    def network_output(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The noise prediction :math:`\hat\varepsilon(u, t)`."""
        check_state("u", u, 1)
        times = self._times(u, t)
        return self.net(u, times.to(dtype=u.dtype, device=u.device))

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The score :math:`-\hat\varepsilon(u, t)/\sigma(t)` for states ``(batch, 1, *event)``."""
        check_state("u", u, 1)
        times = self._times(u, t)
        sigma = self.sigma(times).to(dtype=u.dtype, device=u.device).reshape(-1, *([1] * (u.ndim - 1)))
        return -self.net(u, times.to(dtype=u.dtype, device=u.device)) / sigma


def score_from_noise_prediction(eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                                process: LinearSDEBase) -> NoisePredictionScore:
    r"""The score :math:`s(u, t) = -\hat\varepsilon(u, t)/\sigma(t)` of a noise predictor ``eps_model`` for a
    one-component ``process`` (e.g. :class:`~splitdyn.processes.VPSDE`), as a :class:`NoisePredictionScore`.

    Examples
    --------
    >>> import torch
    >>> from splitdyn.processes import VPSDE
    >>> from splitdyn.score_matching import score_from_noise_prediction
    >>> score = score_from_noise_prediction(lambda u, t: torch.ones_like(u), VPSDE())
    >>> score(torch.zeros(2, 1, 3), 0.5).shape
    torch.Size([2, 1, 3])
    """
    return NoisePredictionScore(eps_model, process)
