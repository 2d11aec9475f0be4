r"""Gaussian-mixture data: :class:`GaussianMixture` and the standard test mixtures.

The law of :math:`x_0` for the exact oracles of :mod:`splitdyn.oracles` (see
:class:`~splitdyn.oracles.diffused.DiffusedGaussianMixture` for its diffusion by a linear SDE). Densities, scores
and samples are computed in float64.
"""

from __future__ import annotations

import math

import torch

from ..checks import as_float64, check_count, check_finite_tensor, check_flag, check_floating_dtype, check_positive
from .small_matrices import LOG_2PI, chunk_size, draw_device

__all__ = ["GaussianMixture", "diamond_mixture", "random_mixture"]


class GaussianMixture:
    r"""A mixture of diagonal Gaussians :math:`p(x) = \sum_i w_i\,\mathcal{N}(x; m_i, \mathrm{diag}(s_i^2))`.

    Parameters
    ----------
    means:
        Component means :math:`m_i`, shape ``(K, d)`` or more generally ``(K, *event_shape)`` (an image-shaped
        mixture); internally flattened to ``(K, d)`` with :math:`d = \prod` ``event_shape``.
    stds:
        Standard deviations :math:`s_{ij} > 0`: a scalar (shared), ``(K,)`` (isotropic per component), or
        ``(K, d)`` / ``(K, *event_shape)`` (per coordinate).
    weights:
        ``(K,)`` positive mixture weights, normalised to sum to one; default equal weights.

    Attributes
    ----------
    means, stds:
        float64 CPU tensors of shape ``(K, d)``.
    weights:
        float64 ``(K,)``, normalised.
    num_components:
        ``K``.
    dimension:
        ``d``.
    event_shape:
        Shape of one sample (``(d,)`` unless ``means`` had more trailing dimensions).
    isotropic:
        Whether every component has one standard deviation for all coordinates (enables faster oracles).

    Notes
    -----
    Functions of ``x`` accept a floating tensor of shape ``(n, *event_shape)`` or ``(n, d)``, on any device;
    they compute in float64.

    Examples
    --------
    >>> import torch
    >>> from splitdyn.oracles import GaussianMixture
    >>> mix = GaussianMixture([[-1.0], [1.0]], 0.5, weights=[1, 3])
    >>> mix.weights
    tensor([0.2500, 0.7500], dtype=torch.float64)
    >>> mix.responsibilities(torch.tensor([[0.0]]))
    tensor([[0.2500, 0.7500]], dtype=torch.float64)
    >>> mix.score(torch.tensor([[0.0]]))  # -(0.25 * (0 + 1) + 0.75 * (0 - 1)) / 0.5**2
    tensor([[2.]])
    """

    def __init__(self, means, stds, weights=None) -> None:
        means = as_float64("means", means)
        if means.ndim < 2 or means.shape[0] < 1 or means[0].numel() < 1:
            raise ValueError(
                f"means must have shape (K, d) (or (K, *event_shape)) with K >= 1 components, got shape "
                f"{tuple(means.shape)}"
            )
        K = means.shape[0]
        self.event_shape: tuple[int, ...] = tuple(means.shape[1:])
        d = int(means[0].numel())
        self.num_components = K
        self.dimension = d
        self.means = means.reshape(K, d).contiguous()

        stds = as_float64("stds", stds)
        if stds.ndim == 0:
            stds = stds.expand(K, d)
        elif stds.ndim == 1 and stds.shape[0] == K:
            stds = stds[:, None].expand(K, d)
        elif tuple(stds.shape) in ((K, d), (K, *self.event_shape)):
            stds = stds.reshape(K, d)
        else:
            raise ValueError(
                f"stds must be a scalar, or have shape (K,) = ({K},) or (K, d) = ({K}, {d}), got shape "
                f"{tuple(stds.shape)}"
            )
        if not bool((stds > 0).all()):
            raise ValueError(
                f"stds must be positive (the data component needs a density), got minimum {stds.min().item()}"
            )
        self.stds = stds.contiguous()
        self.isotropic = bool((self.stds == self.stds[:, :1]).all())

        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = as_float64("weights", weights)
        if tuple(weights.shape) != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(weights.shape)}")
        if not bool((weights > 0).all()):
            raise ValueError(f"weights must be positive, got minimum {weights.min().item()}")
        self.weights = weights / weights.sum()
        self.log_weights = torch.log(self.weights)
        self._device_cache: dict[str, tuple[torch.Tensor, ...]] = {}

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(num_components={self.num_components}, event_shape={self.event_shape}, "
            f"isotropic={self.isotropic})"
        )

    # -- internals -----------------------------------------------------------------------------------
    def device_params(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(means, stds, log_weights)`` as float64 tensors on ``device`` (cached per device)."""
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = (
                self.means.to(device),
                self.stds.to(device),
                self.log_weights.to(device),
            )
        return self._device_cache[key]

    def _flatten(self, name: str, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        if x.ndim < 1 or (tuple(x.shape[1:]) != self.event_shape and tuple(x.shape[1:]) != (self.dimension,)):
            raise ValueError(
                f"{name} must have shape (n, *event_shape) = (n, {', '.join(map(str, self.event_shape))}), got "
                f"shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one sample (a non-empty batch on dim 0), got shape {tuple(x.shape)}")
        check_finite_tensor(name, x)
        return x.reshape(x.shape[0], self.dimension)

    def _component_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per chunk-able rows: (log w_i + log N_i(x)) of shape (n, K) and z = (x - m_i)/s_i of shape (n, K, d)."""
        means, stds, log_w = self.device_params(x.device)
        z = (x[:, None, :] - means[None]) / stds[None]
        log_norm = torch.log(stds).sum(-1) + 0.5 * self.dimension * LOG_2PI
        return log_w[None] - 0.5 * (z * z).sum(-1) - log_norm[None], z

    # -- densities -----------------------------------------------------------------------------------
    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""Weighted component log densities :math:`\log w_i + \log\mathcal{N}(x; m_i, \mathrm{diag}(s_i^2))`.

        Returns a float64 tensor of shape ``(n, K)`` (the log joint density of ``x`` and the label ``i``).
        """
        flat = self._flatten("x", x).to(torch.float64)
        step = chunk_size(self.num_components * self.dimension)
        return torch.cat([self._component_terms(flat[s : s + step])[0] for s in range(0, len(flat), step)])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""Log density :math:`\log p(x)` (log-sum-exp over components), float64 of shape ``(n,)``."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        r"""Posterior component probabilities :math:`P(i \mid x) = w_i \mathcal{N}_i(x) / p(x)`, float64 ``(n, K)``."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        r"""Analytic score :math:`\nabla_x \log p(x) = -\sum_i P(i \mid x)\,(x - m_i) / s_i^2`.

        Returns a tensor of the shape, dtype and device of ``x``.
        """
        flat = self._flatten("x", x).to(torch.float64)
        _, stds, _ = self.device_params(flat.device)
        step = chunk_size(self.num_components * self.dimension)
        out = []
        for s in range(0, len(flat), step):
            terms, z = self._component_terms(flat[s : s + step])
            resp = torch.softmax(terms, dim=1)
            out.append(-torch.einsum("nk,nkd->nd", resp, z / stds[None]))
        return torch.cat(out).reshape(x.shape).to(x.dtype)

    # -- moments and samples -------------------------------------------------------------------------
    def mean(self) -> torch.Tensor:
        r"""The mixture mean :math:`\sum_i w_i m_i`, float64 of shape ``event_shape``."""
        return (self.weights @ self.means).reshape(self.event_shape)

    def covariance(self) -> torch.Tensor:
        r"""The mixture covariance :math:`\sum_i w_i(\mathrm{diag}(s_i^2) + m_i m_i^\top) - \bar m\bar m^\top`,
        float64 ``(d, d)`` (coordinates flattened)."""
        centred = self.means - self.weights @ self.means
        between = centred.T @ (self.weights[:, None] * centred)
        return between + torch.diag(self.weights @ self.stds**2)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        return_labels: bool = False,
    ):
        """``n`` independent samples, shape ``(n, *event_shape)``, drawn in float64 and cast to ``dtype``.

        Randomness is drawn on ``generator``'s device (CPU without a generator) and the result moved to
        ``device``. With ``return_labels=True`` also returns the ``(n,)`` int64 component labels.
        """
        n = check_count("n", n)
        dtype = check_floating_dtype("dtype", dtype)
        return_labels = check_flag("return_labels", return_labels)
        where = draw_device(generator)
        labels = torch.multinomial(self.weights.to(where), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dimension, generator=generator, dtype=torch.float64, device=where)
        means, stds, _ = self.device_params(where)
        x = (means[labels] + stds[labels] * z).reshape(n, *self.event_shape).to(dtype=dtype, device=device)
        if return_labels:
            return x, labels.to(device=x.device)
        return x



def diamond_mixture(std: float = 0.04) -> GaussianMixture:
    r"""The paper's 2-D toy mixture of nine Normals (App. E.1, eq. 97): equal weights, standard deviation
    ``std`` (paper: ``0.04``) and means, with :math:`a = 2^{-1/2}`,

    .. math::

        \mu_{1..9} = (-a, 0),\ (-\tfrac a2, \tfrac a2),\ (0, a),\ (-\tfrac a2, -\tfrac a2),\ (0, 0),\
        (\tfrac a2, \tfrac a2),\ (0, -a),\ (\tfrac a2, -\tfrac a2),\ (a, 0).

    This is the 3 x 3 grid :math:`\{-\frac12, 0, \frac12\}^2` rotated by 45 degrees (the reference
    implementation's layout): a diamond with its vertices at distance :math:`a = 2^{-1/2}` from the origin and
    neighbouring modes :math:`0.5` apart (12.5 standard deviations for ``std = 0.04``). The means are listed
    in the paper's order.
    """
    std = check_positive("std", std)
    a = 2.0**-0.5
    means = [
        [-a, 0.0],
        [-a / 2, a / 2],
        [0.0, a],
        [-a / 2, -a / 2],
        [0.0, 0.0],
        [a / 2, a / 2],
        [0.0, -a],
        [a / 2, -a / 2],
        [a, 0.0],
    ]
    return GaussianMixture(means, std)


def random_mixture(
    d: int = 64,
    K: int = 16,
    generator: torch.Generator | None = None,
    std: float = 0.1,
    scale: float = 1.0,
    random_weights: bool = False,
) -> GaussianMixture:
    r"""A random higher-dimensional test/benchmark mixture of ``K`` isotropic Gaussians in :math:`\mathbb{R}^d`.

    The means are drawn :math:`m_i \sim \mathcal{N}(0, \mathrm{scale}^2 I_d / d)`, so
    :math:`\|m_i\| \approx \mathrm{scale}` and, for large ``d``, :math:`\|m_i - m_l\| \approx \sqrt2\,
    \mathrm{scale}`: with the defaults (``d = 64, K = 16, std = 0.1, scale = 1``) neighbouring modes are about
    14 standard deviations apart, i.e. well separated. For small ``d`` random means may come close; check
    :meth:`GaussianMixture.responsibilities` if separation matters. Weights are equal, or with
    ``random_weights=True`` proportional to :math:`0.5 + U(0, 1)`. Draws are float64 from ``generator``
    (CPU).
    """
    d = check_count("d", d)
    K = check_count("K", K)
    std = check_positive("std", std)
    scale = check_positive("scale", scale)
    means = torch.randn(K, d, generator=generator, dtype=torch.float64) * (scale / math.sqrt(d))
    weights = None
    if check_flag("random_weights", random_weights):
        weights = 0.5 + torch.rand(K, generator=generator, dtype=torch.float64)
    return GaussianMixture(means, std, weights)
