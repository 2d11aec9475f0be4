r"""Exact score oracles: Gaussian-mixture data diffused by a linear SDE.

If :math:`x_0 \sim \sum_i w_i \mathcal{N}(m_i, \mathrm{diag}(s_i^2))` and the other ``k - 1`` components of
:math:`u_0` are independent :math:`\mathcal{N}(0, C)` per coordinate, then under a linear SDE

.. math::

    p_t(u) = \sum_i w_i \prod_j \mathcal{N}\big(u_{\cdot j};\ \Phi(t)\,(m_{ij}, 0, \dots, 0)^\top,\
    \Phi(t) S_{ij} \Phi(t)^\top + Q(t)\big),\qquad S_{ij} = \mathrm{blockdiag}(s_{ij}^2, C),

with :math:`u_{\cdot j}` the ``k`` components of coordinate ``j``. Log-densities and scores are exact (computed
in float64 with a log-sum-exp over components), so samplers can be tested and benchmarked without training.
"""

from __future__ import annotations

import math

import torch

from ._validation import check_finite_tensor, check_state, check_time

__all__ = ["GaussianMixture", "DiffusedGaussianMixture", "diamond_mixture", "random_mixture"]


class GaussianMixture:
    r"""A mixture of diagonal Gaussians in :math:`\mathbb{R}^d`.

    Parameters
    ----------
    means:
        ``(K, d)`` component means.
    stds:
        Standard deviations: a scalar, ``(K,)`` or ``(K, d)``; all positive.
    weights:
        ``(K,)`` positive weights (normalised); default equal.
    """

    def __init__(self, means, stds, weights=None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 0:
            stds = stds.expand(K, d)
        elif stds.ndim == 1:
            if stds.shape[0] != K:
                raise ValueError(f"stds of shape (K,) must have K = {K} entries, got {stds.shape[0]}")
            stds = stds[:, None].expand(K, d)
        elif stds.shape != (K, d):
            raise ValueError(f"stds must be a scalar, (K,) or (K, d) = ({K}, {d}), got {tuple(stds.shape)}")
        if not bool((stds > 0).all()) or not bool(torch.isfinite(stds).all()):
            raise ValueError("stds must be finite and positive")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be {K} positive numbers")
        self.means = means
        self.stds = stds.contiguous()
        self.weights = weights / weights.sum()
        self.num_components = K
        self.dimension = d

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32, device=None) -> torch.Tensor:
        """``n`` samples, shape ``(n, d)``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dimension, generator=generator, dtype=torch.float64)
        x = self.means[idx] + self.stds[idx] * z
        return x.to(dtype=dtype, device=device)

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64).cpu() if x.device.type == "cpu" else x.to(torch.float64)
        means, stds = self.means.to(x.device), self.stds.to(x.device)
        z = (x[:, None, :] - means[None]) / stds[None]
        return (-0.5 * z * z - torch.log(stds)[None] - 0.5 * math.log(2 * math.pi)).sum(-1) + torch.log(self.weights.to(x.device))[None]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density, float64 of shape ``(n,)``."""
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"x must have shape (n, {self.dimension}), got {tuple(x.shape)}")
        return torch.logsumexp(self._component_log_probs(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``(n, K)``."""
        return torch.softmax(self._component_log_probs(x), dim=1)


class DiffusedGaussianMixture:
    r"""The exact marginal :math:`p_t(u)` of a Gaussian mixture diffused by a linear SDE.

    Parameters
    ----------
    mixture:
        The data distribution of :math:`x_0` (component 0 of the state).
    sde:
        A linear SDE with ``k`` components (``sde.kernel(t)`` gives :math:`\Phi, Q`).
    initial_covariance:
        ``(k-1) x (k-1)`` covariance :math:`C` of the other initial components (CLD: ``[[gamma * M]]``);
        default zero.
    """

    def __init__(self, mixture: GaussianMixture, sde, initial_covariance=None) -> None:
        k = sde.num_components
        C = torch.zeros(k - 1, k - 1, dtype=torch.float64) if initial_covariance is None else torch.as_tensor(
            initial_covariance, dtype=torch.float64
        )
        if C.shape != (k - 1, k - 1):
            raise ValueError(f"initial_covariance must have shape ({k - 1}, {k - 1}), got {tuple(C.shape)}")
        self.mixture = mixture
        self.sde = sde
        self.k = k
        self.initial_covariance = C

    def _moments(self, t: torch.Tensor):
        """Per time: component means (T, K, k, d) and Cholesky factors (T, K, d, k, k)."""
        Phi, Q = self.sde.kernel(t)  # (T, k, k)
        mix = self.mixture
        K, d, k = mix.num_components, mix.dimension, self.k
        S = torch.zeros(K, d, k, k, dtype=torch.float64)
        S[..., 0, 0] = mix.stds**2
        S[..., 1:, 1:] = self.initial_covariance
        cov = Phi[:, None, None] @ S[None] @ Phi.transpose(-1, -2)[:, None, None] + Q[:, None, None]
        means = Phi[:, None, :, 0:1] * mix.means[None, :, None, :]  # (T, K, k, d)
        return means, torch.linalg.cholesky(cov)

    def _prepare(self, u: torch.Tensor, t):
        check_state("u", u, self.k)
        if u.reshape(u.shape[0], self.k, -1).shape[-1] != self.mixture.dimension:
            raise ValueError(f"u must have {self.mixture.dimension} coordinates per component, got shape {tuple(u.shape)}")
        t = check_time("t", t, self.sde.T)
        if t.ndim == 0:
            t = t.reshape(1)
        elif t.shape != (u.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({u.shape[0]},), got {tuple(t.shape)}")
        return t

    def _log_terms(self, u: torch.Tensor, t):
        """Per-component log terms (B, K) and whitened residual solves for the score."""
        t = self._prepare(u, t)
        means, L = self._moments(t)
        dev = u.device
        means, L = means.to(dev), L.to(dev)
        x = u.reshape(u.shape[0], self.k, -1).to(torch.float64)  # (B, k, d)
        if t.shape[0] == 1:
            means = means.expand(u.shape[0], *means.shape[1:])
            L = L.expand(u.shape[0], *L.shape[1:])
        r = (x[:, None] - means).permute(0, 1, 3, 2)  # (B, K, d, k)
        z = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)  # (B, K, d, k)
        log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum((-1, -2))  # (B, K)
        log_w = torch.log(self.mixture.weights.to(dev))
        log_terms = log_w[None] - 0.5 * (z * z).sum((-1, -2)) - log_det - 0.5 * self.k * x.shape[-1] * math.log(2 * math.pi)
        return log_terms, L, z

    def log_prob(self, u: torch.Tensor, t) -> torch.Tensor:
        """Exact :math:`\\log p_t(u)`, float64 of shape ``(batch,)``."""
        log_terms, _, _ = self._log_terms(u, t)
        return torch.logsumexp(log_terms, dim=1)

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""Exact :math:`\nabla_u \log p_t(u)`, shape and dtype of ``u``."""
        log_terms, L, z = self._log_terms(u, t)
        resp = torch.softmax(log_terms, dim=1)  # (B, K)
        # component score: -Sigma^{-1} r = -L^{-T} z
        comp = -torch.linalg.solve_triangular(L.transpose(-1, -2), z.unsqueeze(-1), upper=True).squeeze(-1)
        s = (resp[:, :, None, None] * comp).sum(1)  # (B, d, k)
        return s.permute(0, 2, 1).reshape(u.shape).to(u.dtype)

    def component_score(self, u: torch.Tensor, t, components) -> torch.Tensor:
        """The score for a block of components (e.g. ``[1]``: CLD's velocity score), shape ``(batch, len, *event)``."""
        return self.score(u, t)[:, list(components)]

    def score_fn(self, components=None):
        """A callable ``score(u, t)`` (full, or for ``components``) to hand to samplers."""
        if components is None:
            return self.score
        return lambda u, t: self.component_score(u, t, components)

    def sample(self, n: int, t, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Exact samples of :math:`u_t`, shape ``(n, k, d)``."""
        x0 = self.mixture.sample(n, generator, dtype=torch.float64)
        u0 = torch.zeros(n, self.k, self.mixture.dimension, dtype=torch.float64)
        u0[:, 0] = x0
        if self.k > 1:
            Lc = torch.linalg.cholesky(self.initial_covariance) if bool(self.initial_covariance.any()) else self.initial_covariance
            u0[:, 1:] = torch.einsum("ij,bjd->bid", Lc, torch.randn(n, self.k - 1, self.mixture.dimension, generator=generator, dtype=torch.float64))
        Phi, Q = self.sde.kernel(t)
        Lq = torch.linalg.cholesky(Q + 1e-300 * torch.eye(self.k, dtype=torch.float64)) if float(t) > 0 else torch.zeros_like(Q)
        noise = torch.randn(u0.shape, generator=generator, dtype=torch.float64)
        return (torch.einsum("ij,bjd->bid", Phi, u0) + torch.einsum("ij,bjd->bid", Lq, noise)).to(dtype)


def diamond_mixture(std: float = 0.04) -> GaussianMixture:
    r"""The paper's 9-mode toy mixture (App. E.1): means on the 3 x 3 grid :math:`\{-\frac12, 0, \frac12\}^2`
    rotated by 45 degrees (a diamond; neighbouring modes :math:`2^{-1/2}` apart), std ``0.04``, equal weights."""
    g = torch.linspace(-0.5, 0.5, 3, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    c = math.cos(math.pi / 4)
    rotation = torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    return GaussianMixture(grid @ rotation.T, std)


def random_mixture(d: int = 64, K: int = 16, generator: torch.Generator | None = None, std: float = 0.1, scale: float = 1.0) -> GaussianMixture:
    r"""A higher-dimensional test mixture: ``K`` means drawn :math:`\mathcal{N}(0, \mathrm{scale}^2/d\,I_d)`
    (so :math:`\|m_i\| \approx \mathrm{scale}`, modes well separated relative to ``std``), equal weights."""
    means = torch.randn(K, d, generator=generator, dtype=torch.float64) * scale / math.sqrt(d)
    return GaussianMixture(means, std)
