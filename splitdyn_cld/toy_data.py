r"""Toy 2-D datasets of the CLD paper, as samplers ``f(n, generator) -> (n, 2)`` float tensors.

- ``"diamond"``: the mixture of nine Normals of App. E.1 (:func:`splitdyn.oracles.diamond_mixture`, std 0.04,
  equal weights), whose diffused score is known exactly (:class:`splitdyn.oracles.DiffusedGaussianMixture`).
- ``"swissroll"``: the multi-scale dataset of App. F.1.2 / Fig. 13: five equal-weight small swiss rolls, one
  at the origin and four at :math:`(\pm 0.8, \pm 0.8)`.

Use :func:`get_toy_dataset` to look a sampler up by name (as the training scripts do).
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Callable

import torch

from splitdyn.oracles import diamond_mixture

__all__ = [
    "SWISS_ROLL_CENTRES",
    "SWISS_ROLL_SCALE",
    "SWISS_ROLL_NOISE",
    "sample_diamond",
    "sample_multimodal_swiss_roll",
    "TOY_DATASETS",
    "get_toy_dataset",
]

#: Centres of the five swiss rolls of the multi-scale dataset.
SWISS_ROLL_CENTRES = torch.tensor([[0.0, 0.0], [0.8, 0.8], [0.8, -0.8], [-0.8, 0.8], [-0.8, -0.8]])
#: Scale applied to each unit swiss roll (its radius goes up to :math:`4.5\pi \times 0.01 \approx 0.14`).
SWISS_ROLL_SCALE = 0.01
#: Standard deviation of the Gaussian noise added to each unit roll before scaling.
SWISS_ROLL_NOISE = 0.2

_DIAMOND = diamond_mixture()


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"n must be a positive int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be a positive int, got {n}")
    return int(n)


def sample_diamond(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``n`` samples of the paper's 9-mode diamond mixture (App. E.1; std 0.04, equal weights), shape ``(n, 2)``.

    Drawn in float64 from ``generator`` (CPU) and cast to ``dtype``.
    """
    return _DIAMOND.sample(_check_n(n), generator, dtype=dtype)


def sample_multimodal_swiss_roll(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""``n`` samples of the multi-scale dataset (Fig. 13): five equal-weight small swiss rolls.

    Each point picks one of the :data:`SWISS_ROLL_CENTRES` uniformly and adds a scaled 2-D swiss roll point
    (the ``(x, z)`` columns of the usual 3-D swiss roll):

    .. math::

        s = \tfrac{3\pi}{2}(1 + 2U),\quad U \sim \mathcal{U}(0, 1),\qquad
        x = c + 0.01\,\big((s\cos s,\ s\sin s) + 0.2\,\varepsilon\big),\quad \varepsilon \sim \mathcal{N}(0, I_2).

    Drawn in float64 from ``generator`` (CPU) and cast to ``dtype``; shape ``(n, 2)``.
    """
    n = _check_n(n)
    s = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, dtype=torch.float64))
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    roll = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1) + SWISS_ROLL_NOISE * noise
    which = torch.randint(0, len(SWISS_ROLL_CENTRES), (n,), generator=generator)
    x = SWISS_ROLL_CENTRES.to(torch.float64)[which] + SWISS_ROLL_SCALE * roll
    return x.to(dtype)


#: Toy datasets by name: samplers ``f(n, generator=None, dtype=torch.float32) -> (n, 2)``.
TOY_DATASETS: dict[str, Callable[..., torch.Tensor]] = {
    "diamond": sample_diamond,
    "swissroll": sample_multimodal_swiss_roll,
}


def get_toy_dataset(name: str) -> Callable[..., torch.Tensor]:
    """The sampler ``f(n, generator=None, dtype=torch.float32) -> (n, 2)`` of the toy dataset ``name``.

    Raises ``ValueError`` listing the valid names (:data:`TOY_DATASETS`) for an unknown one.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {sorted(TOY_DATASETS)}; got {type(name).__name__}")
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; valid names: {', '.join(sorted(TOY_DATASETS))}")
    return TOY_DATASETS[name]
