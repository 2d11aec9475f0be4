"""Small residual MLP score networks for low-dimensional toy data (< 100k parameters)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ToyResNet"]


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.time = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(torch.nn.functional.silu(self.norm(h))) + self.time(emb)
        return h + self.fc2(torch.nn.functional.silu(z))


class ToyResNet(nn.Module):
    """Residual MLP: input the state flattened ``(batch, in_components * d)`` and ``t``; output
    ``(batch, out_components, d)``. Time enters through sinusoidal features of ``log t``.

    Parameters
    ----------
    dimension:
        Data dimension ``d``.
    in_components, out_components:
        Components read and produced (CLD: 2 in, 1 out = the velocity; VPSDE: 1 and 1).
    width, blocks:
        Hidden width and number of residual blocks (defaults: ~70k parameters).
    """

    def __init__(self, dimension: int = 2, in_components: int = 2, out_components: int = 1, width: int = 64,
                 blocks: int = 4, time_features: int = 16) -> None:
        super().__init__()
        self.dimension = dimension
        self.out_components = out_components
        self.register_buffer("frequencies", torch.exp(torch.linspace(0.0, math.log(100.0), time_features // 2)))
        self.embed = nn.Sequential(nn.Linear(time_features, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(in_components * dimension, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(blocks))
        self.out = nn.Linear(width, out_components * dimension)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = torch.log(t.clamp_min(1e-8))[:, None] * self.frequencies[None]
        emb = self.embed(torch.cat([angles.sin(), angles.cos()], dim=1))
        h = self.inp(u.reshape(u.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(u.shape[0], self.out_components, self.dimension)
