r"""Small residual MLP score networks for low-dimensional toy data (App. E.1: "a small ResNet architecture
(less than 100k parameters)").

* :class:`ToyResNet` -- the network: the state's components flattened, plus a time embedding, through a few
  pre-norm residual MLP blocks with SiLU; outputs ``out_components`` channels of the event shape.
* the VPSDE baseline's score from a noise predictor, :math:`s_\theta(x, t) = -\varepsilon_\theta(x, t) / \sigma_t`,
  is :class:`splitdyn.score_matching.NoisePredictionScore`.
* :func:`cld_toy_score` / :func:`vpsde_toy_score` -- the two models of the toy experiments, same network size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitdyn import LinearSDE
from splitdyn.score_matching import NoisePredictionScore

from .process import CLD
from .score import MixedScore

__all__ = ["TimeEmbedding", "ToyResNet", "cld_toy_score", "vpsde_toy_score"]


def _event_shape(event_shape) -> tuple[int, ...]:
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"event_shape must be a positive int or a tuple of positive ints, got {event_shape!r}")
    return shape


class TimeEmbedding(nn.Module):
    r"""Sinusoidal features of :math:`\log t` and of :math:`t`, then a two-layer SiLU MLP.

    The diffusion's scales vary on a logarithmic time scale near :math:`t = 0` and on a linear one near
    :math:`t = T`, so half the features are :math:`\sin(\omega_i \log t), \cos(\omega_i \log t)` with
    :math:`\omega_i` geometric in ``[1/16, 2]`` (periods from about 3 to 100 units of :math:`\log t`) and half
    :math:`\sin(\pi k t), \cos(\pi k t)`, :math:`k = 1, 2, \dots`.
    """

    def __init__(self, width: int, features: int = 16) -> None:
        super().__init__()
        if features < 4 or features % 4:
            raise ValueError(f"features must be a positive multiple of 4, got {features}")
        self.register_buffer("log_frequencies", torch.exp(torch.linspace(math.log(1 / 16), math.log(2.0), features // 4)))
        self.register_buffer("frequencies", math.pi * torch.arange(1, features // 4 + 1, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = torch.log(t.clamp_min(1e-12))[:, None] * self.log_frequencies[None]
        b = t[:, None] * self.frequencies[None]
        return self.mlp(torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], dim=1))


class _Block(nn.Module):
    """Pre-norm residual block: ``h + W2 silu(W1 silu(norm(h)) + W_t emb)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.time = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(nn.functional.silu(self.norm(h))) + self.time(emb)
        return h + self.fc2(nn.functional.silu(z))


class ToyResNet(nn.Module):
    r"""Residual MLP for states ``(batch, in_components, *event_shape)`` and times ``t`` of shape ``(batch,)``;
    returns ``(batch, out_components, *event_shape)``.

    The components are flattened together (the network sees :math:`(x, v)` jointly for CLD). The output layer
    starts at zero, so a mixed score (:class:`~splitdyn_cld.score.MixedScore`) starts at its analytic Normal
    part and a noise predictor at :math:`\varepsilon_\theta = 0`.

    Parameters
    ----------
    event_shape:
        Data shape per component: ``d`` or a tuple (flattened inside).
    in_components, out_components:
        Components read and produced (CLD: 2 in, 1 out -- the velocity; VPSDE: 1 and 1).
    width, blocks:
        Hidden width and number of residual blocks (defaults: 56k parameters for ``d = 2``).
    time_features:
        Number of sinusoidal time features (a multiple of 4), see :class:`TimeEmbedding`.

    Examples
    --------
    >>> import torch
    >>> from splitdyn_cld.toy_models import ToyResNet
    >>> net = ToyResNet(2, in_components=2, out_components=1)
    >>> net(torch.zeros(5, 2, 2), torch.full((5,), 0.5)).shape
    torch.Size([5, 1, 2])
    >>> sum(p.numel() for p in net.parameters()) < 100_000
    True
    """

    def __init__(self, event_shape=2, in_components: int = 2, out_components: int = 1, width: int = 64,
                 blocks: int = 4, time_features: int = 16) -> None:
        super().__init__()
        self.event_shape = _event_shape(event_shape)
        for name, value in (("in_components", in_components), ("out_components", out_components), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks must be a non-negative int, got {blocks!r}")
        self.in_components = in_components
        self.out_components = out_components
        d = math.prod(self.event_shape)
        self.embed = TimeEmbedding(width, time_features)
        self.inp = nn.Linear(in_components * d, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_components * d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        expected = (self.in_components, *self.event_shape)
        if tuple(u.shape[1:]) != expected:
            raise ValueError(f"u must have shape (batch, {', '.join(map(str, expected))}), got {tuple(u.shape)}")
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device)
        if t.ndim == 0:
            t = t.expand(u.shape[0])
        h = self.inp(u.reshape(u.shape[0], -1))
        emb = self.embed(t.to(u.dtype))
        for block in self.blocks:
            h = block(h, emb)
        h = self.out(nn.functional.silu(self.norm(h)))
        return h.reshape(u.shape[0], self.out_components, *self.event_shape)


def cld_toy_score(cld: CLD, event_shape=2, width: int = 64, blocks: int = 4, mixed: bool = True) -> MixedScore:
    """The toy CLD velocity-score model: :class:`ToyResNet` (2 components in, the velocity out) in a
    :class:`~splitdyn_cld.score.MixedScore`."""
    return MixedScore(ToyResNet(event_shape, 2, 1, width, blocks), cld, mixed=mixed)


def vpsde_toy_score(sde: LinearSDE, event_shape=2, width: int = 64, blocks: int = 4) -> NoisePredictionScore:
    """The toy VPSDE baseline: a :class:`ToyResNet` noise predictor of the same size in a
    :class:`~splitdyn.score_matching.NoisePredictionScore`."""
    return NoisePredictionScore(ToyResNet(event_shape, 1, 1, width, blocks), sde)
