"""Toy 2-D datasets of the paper: the 9-mode diamond mixture (App. E.1) and the multi-scale swiss rolls (Fig. 13)."""

from __future__ import annotations

import math

import torch

from splitdyn.oracles import diamond_mixture

__all__ = ["sample_diamond", "sample_multimodal_swiss_roll", "TOY_DATASETS", "get_toy_dataset"]


def sample_diamond(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of the 9-mode diamond mixture (std 0.04), shape ``(n, 2)``."""
    return diamond_mixture().sample(n, generator)


def sample_multimodal_swiss_roll(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Five equal-weight small swiss rolls: one at the origin and four offset by :math:`(\pm 0.8, \pm 0.8)`.

    Each roll: :math:`s \sim 1.5\pi(1 + 2U)`, points :math:`(s\cos s, s\sin s) + 0.2\,\mathcal{N}(0, I)`,
    scaled by 0.01 (a multi-scale dataset: small structure far apart)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    s = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    roll = torch.stack([s * torch.cos(s), s * torch.sin(s)], 1) + 0.2 * torch.randn(n, 2, generator=generator)
    offsets = torch.tensor([[0.0, 0.0], [0.8, 0.8], [0.8, -0.8], [-0.8, 0.8], [-0.8, -0.8]])
    which = torch.randint(0, 5, (n,), generator=generator)
    return 0.01 * roll + offsets[which]


TOY_DATASETS = {"diamond": sample_diamond, "swissroll": sample_multimodal_swiss_roll}


def get_toy_dataset(name: str):
    """The sampler ``f(n, generator) -> (n, 2)`` of a toy dataset by name."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name]
