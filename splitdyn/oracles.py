r"""Exact score oracles: Gaussian-mixture data diffused by a linear SDE.

Let the data :math:`x_0 \in \mathbb{R}^d` follow a mixture of diagonal Gaussians

.. math::

    p_0(x) = \sum_{i=1}^K w_i\,\mathcal{N}\big(x;\ m_i,\ \mathrm{diag}(s_{i1}^2, \dots, s_{id}^2)\big),

and let the state :math:`u_0 \in \mathbb{R}^{k \times d}` carry :math:`x_0` in component 0 and, in components
:math:`1, \dots, k-1`, auxiliary variables that are independent of :math:`x_0` and :math:`\mathcal{N}(0, C)`
per coordinate (CLD: the velocity, :math:`C = \gamma M`). A linear SDE (:class:`~splitdyn.LinearSDE`) acts on
every coordinate :math:`j` with the same :math:`k \times k` kernel :math:`(\Phi(t), Q(t))`, so the law of
:math:`u_t` is again a mixture with the same weights (paper, App. E.1, eq. 98):

.. math::

    p_t(u) = \sum_{i=1}^K w_i \prod_{j=1}^d
    \mathcal{N}\big(u_{\cdot j};\ \mu_{ij}(t),\ \Sigma_{ij}(t)\big),\qquad
    \mu_{ij}(t) = \Phi(t)\,(m_{ij}, 0, \dots, 0)^\top = m_{ij}\,\Phi(t) e_0,

.. math::

    \Sigma_{ij}(t) = \Phi(t)\,S_{ij}\,\Phi(t)^\top + Q(t),\qquad
    S_{ij} = \mathrm{blockdiag}(s_{ij}^2, C),

where :math:`u_{\cdot j} \in \mathbb{R}^k` collects the ``k`` components of coordinate ``j``. With the
Cholesky factor :math:`\Sigma_{ij} = L_{ij} L_{ij}^\top`, whitened residuals
:math:`z_{ij} = L_{ij}^{-1}(u_{\cdot j} - \mu_{ij})` and responsibilities
:math:`r_i(u) = \mathrm{softmax}_i\big(\log w_i + \sum_j \log\mathcal{N}_{ij}\big)`, the score is

.. math::

    \nabla_{u_{\cdot j}} \log p_t(u) = -\sum_i r_i(u)\,L_{ij}^{-\top} z_{ij}.

Everything is evaluated in float64 with a log-sum-exp over the mixture components and per-coordinate
:math:`k \times k` Cholesky factorisations, vectorised over the batch (in chunks, to bound memory), so
samplers and likelihoods can be tested and benchmarked without training a network.

Examples
--------
>>> import torch
>>> from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
>>> from splitdyn_cld import CLD
>>> cld = CLD()
>>> oracle = DiffusedGaussianMixture(diamond_mixture(), cld, initial_covariance=[[cld.gamma * cld.mass]])
>>> u = oracle.sample(4, 0.5, torch.Generator().manual_seed(0))
>>> u.shape, oracle.score(u, 0.5).shape, oracle.component_score(u, 0.5, [1]).shape
(torch.Size([4, 2, 2]), torch.Size([4, 2, 2]), torch.Size([4, 1, 2]))
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Callable, Sequence

import torch

from .checks import as_float64, check_finite_tensor, check_positive, check_time
from .linear_sde import LinearSDEBase

__all__ = ["GaussianMixture", "DiffusedGaussianMixture", "diamond_mixture", "random_mixture"]

_LOG_2PI = math.log(2.0 * math.pi)
# Upper bound on the number of float64 entries of the largest temporary of one evaluation chunk (32 MiB).
_CHUNK_ELEMENTS = 2**22


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"{name} must be a positive int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be a positive int, got {n}")
    return int(n)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _chunk_size(per_row: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, per_row))


def _small_cholesky(S: torch.Tensor, semidefinite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Lower Cholesky factors of a batch ``(..., k, k)`` of tiny symmetric matrices (Cholesky-Banachiewicz).

    The recursion runs over the ``k`` rows with vectorised tensor operations over the batch, which is much
    faster than batched LAPACK calls on millions of ``2 x 2`` matrices. Returns ``(L, ok)`` where ``ok`` marks
    the positive-definite matrices. With ``semidefinite=True`` a non-positive pivot is set to zero together
    with the rest of its column (a valid factor :math:`LL^\top = S` of a positive semi-definite ``S``, used for
    sampling degenerate Gaussians); otherwise the factor of a failing matrix is meaningless (check ``ok``).
    """
    k = S.shape[-1]
    L = torch.zeros_like(S)
    ok = torch.ones(S.shape[:-2], dtype=torch.bool, device=S.device)
    for j in range(k):
        pivot = S[..., j, j] - (L[..., j, :j] ** 2).sum(-1)
        positive = pivot > 0
        ok &= positive
        diag = torch.sqrt(torch.where(positive, pivot, torch.ones_like(pivot)))
        L[..., j, j] = torch.where(positive, diag, torch.zeros_like(diag))
        for i in range(j + 1, k):
            off = (S[..., i, j] - (L[..., i, :j] * L[..., j, :j]).sum(-1)) / diag
            L[..., i, j] = torch.where(positive, off, torch.zeros_like(off)) if semidefinite else off
    return L, ok


def _small_tril_inverse(L: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch ``(..., k, k)`` of tiny lower-triangular matrices with positive diagonals."""
    k = L.shape[-1]
    inv = torch.zeros_like(L)
    for i in range(k):
        inv[..., i, i] = 1.0 / L[..., i, i]
        for j in range(i):
            acc = (L[..., i, j:i] * inv[..., j:i, j]).sum(-1)
            inv[..., i, j] = -acc / L[..., i, i]
    return inv


def _gram(x: torch.Tensor) -> torch.Tensor:
    """``G[b, a, c] = sum_j x[b, a, j] x[b, c, j]`` for ``x`` of shape ``(b, k, d)`` with small ``k``.

    Elementwise products: a batched ``bmm`` over ``b`` tiny matrices is much slower on the CPU.
    """
    k = x.shape[1]
    G = x.new_empty(x.shape[0], k, k)
    for a in range(k):
        for c in range(a, k):
            G[:, a, c] = (x[:, a] * x[:, c]).sum(-1)
            if c != a:
                G[:, c, a] = G[:, a, c]
    return G


def _small_bmm(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[b, c] = sum_a A[b, c, a] x[b, a]`` for ``A (b, c, k)`` and ``x (b, k, d)``, elementwise."""
    out = A[:, :, 0, None] * x[:, None, 0]
    for a in range(1, x.shape[1]):
        out = out + A[:, :, a, None] * x[:, None, a]
    return out


def _entries(M: torch.Tensor) -> list[list[torch.Tensor]]:
    """The entries ``M[..., a, c]`` of a batch of ``k x k`` matrices as a nested list of contiguous tensors.

    The oracles work component-major (one contiguous tensor per component) so that the tiny ``k x k``
    products become a few fast elementwise operations over the whole batch.
    """
    k = M.shape[-1]
    return [[M[..., a, c].contiguous() for c in range(k)] for a in range(k)]


def _tril_apply(A: list[list[torch.Tensor]], r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    r"""``z_a = sum_{c <= a} A[a][c] * r[c]`` for a lower-triangular ``A`` given by its entries (broadcasting)."""
    out = []
    for a in range(len(r)):
        acc = A[a][0] * r[0]
        for c in range(1, a + 1):
            acc = acc + A[a][c] * r[c]
        out.append(acc)
    return out


def _tril_t_apply(A: list[list[torch.Tensor]], z: Sequence[torch.Tensor], rows: Sequence[int]) -> list[torch.Tensor]:
    r"""Rows ``rows`` of :math:`A^\top z` for lower-triangular ``A``: ``sum_{a >= c} A[a][c] * z[a]``."""
    out = []
    for c in rows:
        acc = A[c][c] * z[c]
        for a in range(c + 1, len(z)):
            acc = acc + A[a][c] * z[a]
        out.append(acc)
    return out


# ----------------------------------------------------------------------------------------------------------
# the data distribution
# ----------------------------------------------------------------------------------------------------------
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
    def _params(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        check_finite_tensor(name, x)
        return x.reshape(x.shape[0], self.dimension)

    def _component_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per chunk-able rows: (log w_i + log N_i(x)) of shape (n, K) and z = (x - m_i)/s_i of shape (n, K, d)."""
        means, stds, log_w = self._params(x.device)
        z = (x[:, None, :] - means[None]) / stds[None]
        log_norm = torch.log(stds).sum(-1) + 0.5 * self.dimension * _LOG_2PI
        return log_w[None] - 0.5 * (z * z).sum(-1) - log_norm[None], z

    # -- densities -----------------------------------------------------------------------------------
    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""Weighted component log densities :math:`\log w_i + \log\mathcal{N}(x; m_i, \mathrm{diag}(s_i^2))`.

        Returns a float64 tensor of shape ``(n, K)`` (the log joint density of ``x`` and the label ``i``).
        """
        flat = self._flatten("x", x).to(torch.float64)
        step = _chunk_size(self.num_components * self.dimension)
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
        _, stds, _ = self._params(flat.device)
        step = _chunk_size(self.num_components * self.dimension)
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
        n = _check_count("n", n)
        where = _draw_device(generator)
        labels = torch.multinomial(self.weights.to(where), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dimension, generator=generator, dtype=torch.float64, device=where)
        means, stds, _ = self._params(where)
        x = (means[labels] + stds[labels] * z).reshape(n, *self.event_shape).to(dtype=dtype, device=device)
        if return_labels:
            return x, labels.to(device=x.device)
        return x


# ----------------------------------------------------------------------------------------------------------
# the diffused mixture
# ----------------------------------------------------------------------------------------------------------
class DiffusedGaussianMixture:
    r"""The exact marginal :math:`p_t(u)` of Gaussian-mixture data diffused by a linear SDE.

    Parameters
    ----------
    mixture:
        The law of :math:`x_0` (component 0 of the state).
    sde:
        A linear SDE with ``k = sde.num_components`` components (its ``kernel(t)`` gives
        :math:`(\Phi(t), Q(t))`), e.g. the VPSDE (``k = 1``) or :class:`splitdyn_cld.CLD` (``k = 2``).
    initial_covariance:
        Covariance :math:`C` of the other ``k - 1`` initial components (independent of :math:`x_0`, the same
        for every coordinate): a ``(k-1, k-1)`` matrix, or a ``(k, k)`` matrix whose first row and column are
        zero (such as ``CLD.initial_covariance("hsm")``). Default zero (deterministic, zero initial
        auxiliary components). The paper's CLD uses :math:`C = \gamma M` (``[[cld.gamma * cld.mass]]``).

    Notes
    -----
    - States ``u`` have shape ``(batch, k, *event_shape)`` (``(batch, k, d)`` is also accepted), on any
      device and of any floating dtype. Times ``t`` are a float, a 0-d tensor or a ``(batch,)`` tensor of
      per-sample times in ``[0, T]``; repeated per-sample times are factorised once.
    - :meth:`log_prob` returns **float64** (the density of a ``k d``-dimensional state quickly leaves the
      float32 range of useful precision); :meth:`score`, :meth:`component_score` and :meth:`sample` return
      the state's (requested) dtype.
    - The density exists when every :math:`\Sigma_{ij}(t)` is positive definite. Data standard deviations
      are positive, so this holds for ``k = 1`` at every ``t`` and for CLD at every ``t > 0``. At ``t = 0``
      with a singular ``initial_covariance`` (e.g. the default zero) the auxiliary components are
      deterministic, and :meth:`log_prob` / :meth:`score` raise ``ValueError`` (sampling still works).
    - :meth:`log_prob` and the scores are differentiable with autograd with respect to ``u`` (e.g. for the
      Jacobian of the score, or divergences in likelihood computations).
    - Cost: the kernel :math:`(\Phi, Q)` is evaluated once per distinct time, and the :math:`k \times k`
      Cholesky factors once per distinct time, component (and coordinate, for anisotropic mixtures). The
      per-state work is vectorised (in chunks bounding temporaries to ~32 MiB): for isotropic mixtures, or a
      shared time, a few matrix products with ``(batch, K)`` outputs; for anisotropic mixtures with many
      distinct per-sample times, elementwise work on ``(batch, K, d)`` tensors.

    Attributes
    ----------
    mixture, sde:
        The constructor's arguments.
    k:
        Number of state components.
    initial_covariance:
        The ``(k-1, k-1)`` float64 matrix :math:`C`.
    event_shape, dimension:
        Those of ``mixture``.
    """

    def __init__(self, mixture: GaussianMixture, sde: LinearSDEBase, initial_covariance=None) -> None:
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        if not isinstance(sde, LinearSDEBase):
            raise TypeError(f"sde must be a linear SDE (splitdyn.LinearSDEBase), got {type(sde).__name__}")
        k = int(sde.num_components)
        if initial_covariance is None:
            C = torch.zeros(k - 1, k - 1, dtype=torch.float64)
        else:
            C = as_float64("initial_covariance", initial_covariance)
            if C.numel() == 0 and k == 1:
                C = C.reshape(0, 0)
            elif tuple(C.shape) == (k, k) and k > 1:
                if bool(C[0].any()) or bool(C[:, 0].any()):
                    raise ValueError(
                        "a (k, k) initial_covariance must have a zero first row and column (x_0 comes from the "
                        f"mixture), got {C.tolist()}"
                    )
                C = C[1:, 1:]
            elif k == 1 or tuple(C.shape) != (k - 1, k - 1):
                raise ValueError(
                    f"initial_covariance must have shape (k-1, k-1) = ({k - 1}, {k - 1}) for a {k}-component "
                    f"SDE, got {tuple(C.shape)}"
                )
            if not torch.allclose(C, C.T, rtol=1e-12, atol=0.0):
                raise ValueError(f"initial_covariance must be symmetric, got {C.tolist()}")
            if C.numel():
                eig = torch.linalg.eigvalsh(C)
                if bool((eig < -1e-12 * eig.abs().max().clamp_min(1e-300)).any()):
                    raise ValueError(
                        f"initial_covariance must be positive semi-definite, got eigenvalues {eig.tolist()}"
                    )
        self.mixture = mixture
        self.sde = sde
        self.k = k
        self.initial_covariance = 0.5 * (C + C.T)
        self.event_shape = mixture.event_shape
        self.dimension = mixture.dimension
        S = torch.zeros(k, k, dtype=torch.float64)
        S[1:, 1:] = self.initial_covariance
        self._auxiliary_covariance = S  # blockdiag(0, C)
        # Variances that enter Sigma_ij: one per component when isotropic (the covariance then does not depend
        # on the coordinate j), else one per (component, coordinate).
        self._variances = mixture.stds[:, :1] ** 2 if mixture.isotropic else mixture.stds**2  # (K, d')

    def __repr__(self) -> str:
        return (
            f"DiffusedGaussianMixture({self.mixture!r}, {self.sde!r}, "
            f"initial_covariance={self.initial_covariance.tolist()})"
        )

    # -- time and state handling ------------------------------------------------------------------------
    def _check_u(self, u) -> torch.Tensor:
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
        if not u.is_floating_point():
            raise TypeError(f"u must have a floating dtype, got {u.dtype}")
        event = tuple(u.shape[2:])
        if u.ndim < 3 or u.shape[1] != self.k or (event != self.event_shape and event != (self.dimension,)):
            raise ValueError(
                f"u must have shape (batch, k, *event_shape) = (batch, {self.k}, "
                f"{', '.join(map(str, self.event_shape))}) with the {self.k} components on dim 1, got shape "
                f"{tuple(u.shape)}"
            )
        check_finite_tensor("u", u)
        return u.reshape(u.shape[0], self.k, self.dimension)

    def _times(self, t, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Distinct float64 CPU times ``(T,)`` and the index ``(batch,)`` of each sample's time (None: shared)."""
        t = check_time("t", t, self.sde.T)
        if t.numel() == 1:
            return t.reshape(1), None
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({batch},), got {tuple(t.shape)}")
        times, index = torch.unique(t, return_inverse=True)
        if len(times) == 1:
            return times, None
        return times, index

    def _covariances(self, times: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``phi0 = Phi e_0`` of shape ``(T, k)`` and :math:`\Sigma_{ij}(t)` of shape ``(T, K, d', k, k)``."""
        Phi, Q = self.sde.kernel(times)
        Phi = Phi.to(device=device, dtype=torch.float64)
        Q = Q.to(device=device, dtype=torch.float64)
        phi0 = Phi[..., :, 0]
        base = Phi @ self._auxiliary_covariance.to(device) @ Phi.transpose(-1, -2) + Q
        base = 0.5 * (base + base.transpose(-1, -2))
        outer = phi0[:, :, None] * phi0[:, None, :]  # (T, k, k)
        var = self._variances.to(device)  # (K, d')
        cov = base[:, None, None] + var[None, :, :, None, None] * outer[:, None, None]
        return phi0, cov

    def _factors(self, times: torch.Tensor, device: torch.device):
        """``phi0 (T, k)``, inverse Cholesky factors ``(T, K, d', k, k)`` and ``sum_j log det L_ij`` ``(T, K)``."""
        phi0, cov = self._covariances(times, device)
        L, ok = _small_cholesky(cov)
        if not bool(ok.all()):
            bad = times[(~ok).reshape(len(times), -1).any(-1).cpu()]
            raise ValueError(
                f"the covariance of u_t is not positive definite at t = {bad[:5].tolist()}: with a singular "
                "initial_covariance (default zero) the auxiliary components are deterministic at t = 0 and u_t "
                "has no density there; evaluate at t > 0 or pass a positive-definite initial_covariance"
            )
        log_diag = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (T, K, d')
        log_det = log_diag.sum(-1) * (self.dimension if log_diag.shape[-1] == 1 else 1)
        return phi0, _small_tril_inverse(L), log_det

    # -- evaluation ----------------------------------------------------------------------------------
    # Two evaluation methods give the same values (the tests compare them):
    #  * "expanded": the quadratic forms expand into
    #    sum_j (u_j - mu_ij)^T P_ij (u_j - mu_ij) = <H(u), P_i> - 2 <u, P_i mu_i> + <mu_i, P_i mu_i>, which are
    #    matrix products with (batch, K) outputs. States and means are first centred at the mixture's mean at
    #    time t, so the expansion loses only about log10(spread^2 / std^2) of float64's 16 digits. Used for
    #    isotropic mixtures at any times and for anisotropic ones at a shared time; "grouped" applies it to
    #    anisotropic mixtures at per-sample times taking few distinct values, one group per time.
    #  * "residual": whitened residuals z_ij = L_ij^{-1}(u_j - mu_ij), elementwise on (batch, K, d) tensors.
    #    Used for anisotropic mixtures at many distinct per-sample times, and whenever the modes are so far
    #    apart (in standard deviations) that the expansion would lose too many digits.
    _GROUP_MIN_SIZE = 64  # anisotropic per-sample times are grouped when each time has this many samples
    # The expansion's absolute error in log p is about 2^-52 times max_i mu_i^T Sigma_i^{-1} mu_i (centred
    # means): above this scale (modes more than ~2000 standard deviations apart) use residuals instead.
    _MAX_EXPANSION_SCALE = 4.0e6

    def _expansion_scale(self, phi0: torch.Tensor, Linv: torch.Tensor) -> float:
        """``max_{t, i} sum_j mu_ij^T Sigma_ij^{-1} mu_ij`` for the centred means (the expansion's error scale)."""
        means, _, log_w = self.mixture._params(Linv.device)
        mt = means - log_w.exp() @ means  # (K, d)
        z = (Linv @ phi0[:, None, None, :, None]).squeeze(-1)  # (T, K, d', k) = L^{-1} phi0
        zz = (z * z).sum(-1)  # (T, K, d')
        scale = zz[..., 0] * (mt * mt).sum(-1) if zz.shape[-1] == 1 else (zz * mt * mt).sum(-1)
        return float(scale.max())

    def _evaluate(self, u: torch.Tensor, t, *, score_rows: Sequence[int] | None, need_log_prob: bool,
                  strategy: str = "auto"):
        """Returns ``(log_terms (B, K) float64 or None, score (B, c, d) float64 or None)``."""
        x = self._check_u(u)
        B = x.shape[0]
        times, index = self._times(t, B)
        phi0, Linv, log_det = self._factors(times, x.device)
        x64 = x.to(torch.float64)
        if index is not None:
            index = index.to(x.device)
        if strategy == "auto":
            isotropic = Linv.shape[2] == 1
            few_times = len(times) * self._GROUP_MIN_SIZE <= B
            strategy = "expanded" if index is None or isotropic else ("grouped" if few_times else "residual")
            if self._expansion_scale(phi0, Linv) > self._MAX_EXPANSION_SCALE:
                strategy = "residual"  # modes many standard deviations apart: avoid the cancellation
        if strategy == "residual":
            if index is None:
                index = torch.zeros(B, dtype=torch.long, device=x.device)
            return self._evaluate_residual(x64, index, phi0, Linv, log_det, score_rows, need_log_prob)
        if strategy == "expanded":
            return self._evaluate_expanded(x64, index, phi0, Linv, log_det, score_rows, need_log_prob)
        if strategy != "grouped":
            raise ValueError(f"unknown strategy {strategy!r}")
        if index is None:
            return self._evaluate_expanded(x64, None, phi0, Linv, log_det, score_rows, need_log_prob)
        # group the samples by their time, evaluate each group at its shared time, undo the permutation
        perm = torch.argsort(index, stable=True)
        counts = torch.bincount(index, minlength=len(times)).tolist()
        parts = [
            self._evaluate_expanded(xg, None, phi0[g : g + 1], Linv[g : g + 1], log_det[g : g + 1], score_rows,
                                    need_log_prob)
            for g, xg in enumerate(x64[perm].split(counts))
        ]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(B, device=perm.device)
        terms = torch.cat([p[0] for p in parts])[inverse] if need_log_prob else None
        scores = torch.cat([p[1] for p in parts])[inverse] if score_rows is not None else None
        return terms, scores

    def _evaluate_expanded(self, x64, index, phi0, Linv, log_det, score_rows, need_log_prob):
        """Matrix-product evaluation. ``index`` is None (one time: ``phi0 (1, k)``, ``Linv (1, K, d', k, k)``,
        ``log_det (1, K)``) or, for isotropic mixtures only, maps samples to times (``d' = 1``)."""
        means, _, log_w = self.mixture._params(x64.device)
        K, d, k = self.mixture.num_components, self.dimension, self.k
        mbar = log_w.exp() @ means  # (d,)
        mt = means - mbar  # (K, d) centred means
        P = Linv.transpose(-1, -2) @ Linv  # (T, K, d', k, k) precisions
        shared = index is None
        if shared:
            p0 = phi0[0]
            mu = mt[:, :, None] * p0  # (K, d, k) centred component means at time t
            Pmu = (P[0] @ mu[..., None]).squeeze(-1)  # (K, d, k)
            const = (log_w - log_det[0] - 0.5 * (mu * Pmu).sum((-1, -2)))[None]  # (1, K)
            W2 = Pmu.permute(2, 1, 0).reshape(k * d, K)  # row a * d + j
            if P.shape[2] == 1:
                P_flat = P[0, :, 0].reshape(K, k * k)  # column a * k + c
            else:
                P_flat = P[0].permute(0, 2, 3, 1).reshape(K, k * k * d)  # column (a * k + c) * d + j
            if score_rows is not None:
                V = Pmu[:, :, score_rows].permute(0, 2, 1).reshape(K, len(score_rows) * d)
        else:
            P2 = P[:, :, 0]  # (T, K, k, k)
            Pphi = (P2 @ phi0[:, None, :, None]).squeeze(-1)  # (T, K, k) = P_i phi0
            phiPphi = (Pphi * phi0[:, None]).sum(-1)  # (T, K)
            const_t = log_w - log_det - 0.5 * (mt * mt).sum(-1) * phiPphi  # (T, K)
        const0 = 0.5 * k * d * _LOG_2PI
        rows = score_rows
        step = _chunk_size(max(K * (k * k + 2), k * k * d) * 4)
        all_terms, all_scores = [], []
        for start in range(0, x64.shape[0], step):
            xb = x64[start : start + step]
            b = xb.shape[0]
            if shared:
                xt = xb - p0[:, None] * mbar  # (b, k, d), centred at E[u_t]
                if P.shape[2] == 1:
                    H = _gram(xt).reshape(b, k * k)
                else:
                    H = (xt[:, :, None, :] * xt[:, None, :, :]).reshape(b, k * k * d)
                terms = const - 0.5 * (H @ P_flat.T - 2.0 * (xt.reshape(b, k * d) @ W2)) - const0
            else:
                idx = index[start : start + step]
                pb, P2b, Pphib = phi0[idx], P2[idx], Pphi[idx]  # (b, k), (b, K, k, k), (b, K, k)
                xt = xb - pb[:, :, None] * mbar  # (b, k, d)
                G = _gram(xt)  # (b, k, k)
                quad = (P2b * G[:, None]).sum((-1, -2))
                for a in range(k):
                    quad = quad - 2.0 * Pphib[..., a] * (xt[:, a] @ mt.T)
                terms = const_t[idx] - 0.5 * quad - const0
            if need_log_prob:
                all_terms.append(terms)
            if rows is not None:
                # -sum_i r_i P_i (u - mu_i) = -(sum_i r_i P_i) u + sum_i r_i P_i mu_i  (differentiable in u)
                resp = torch.softmax(terms, dim=1)
                if shared and P.shape[2] == 1:
                    Pbar = (resp @ P_flat).reshape(b, k, k)[:, rows]  # (b, c, k)
                    s = (resp @ V).reshape(b, len(rows), d) - _small_bmm(Pbar, xt)
                elif shared:
                    Pbar = (resp @ P_flat).reshape(b, k, k, d)[:, rows]  # (b, c, k, d)
                    s = -(Pbar * xt[:, None]).sum(2) + (resp @ V).reshape(b, len(rows), d)
                else:
                    Pbar = (resp[:, :, None] * P2b.reshape(b, K, k * k)).sum(1).reshape(b, k, k)[:, rows]
                    back = torch.stack([(resp * Pphib[..., c]) @ mt for c in rows], 1)  # (b, c, d)
                    s = back - _small_bmm(Pbar, xt)
                all_scores.append(s)
        terms = torch.cat(all_terms) if need_log_prob else None
        scores = torch.cat(all_scores) if rows is not None else None
        return terms, scores

    def _evaluate_residual(self, x64, index, phi0, Linv, log_det, score_rows, need_log_prob):
        """Whitened-residual evaluation: ``index (B,)`` into ``phi0 (T, k)``, ``Linv (T, K, d', k, k)``,
        ``log_det (T, K)``."""
        means, _, log_w = self.mixture._params(x64.device)
        K, d, k = self.mixture.num_components, self.dimension, self.k
        Linv_entries = _entries(Linv)  # k x k entries of shape (T, K, d')
        step = _chunk_size(K * d * (2 * k + 2))
        const = 0.5 * k * d * _LOG_2PI
        all_terms, all_scores = [], []
        for start in range(0, x64.shape[0], step):
            xb = x64[start : start + step]  # (b, k, d)
            idx = index[start : start + step]
            p0, ld = phi0[idx], log_det[idx]
            Li = [[entry[idx] for entry in row] for row in Linv_entries]
            # residuals r_c[b, i, j] = u[b, c, j] - phi0_c m_ij, one (b, K, d) tensor per state component c
            r = [xb[:, None, c, :] - means[None] * p0[:, c, None, None] for c in range(k)]
            z = _tril_apply(Li, r)  # whitened residuals L^{-1} r
            quad = z[0] * z[0]
            for za in z[1:]:
                quad = quad + za * za
            terms = log_w[None] - 0.5 * quad.sum(-1) - ld - const  # (b, K)
            if need_log_prob:
                all_terms.append(terms)
            if score_rows is not None:
                resp = torch.softmax(terms, dim=1)
                precision_r = _tril_t_apply(Li, z, score_rows)  # Sigma^{-1} r = L^{-T} z, rows score_rows
                all_scores.append(torch.stack([-torch.einsum("bi,bij->bj", resp, pr) for pr in precision_r], 1))
        terms = torch.cat(all_terms) if need_log_prob else None
        scores = torch.cat(all_scores) if score_rows is not None else None
        return terms, scores

    def _rows(self, components) -> list[int]:
        if isinstance(components, (int, Integral)) and not isinstance(components, bool):
            components = [components]
        try:
            rows = [int(c) for c in components]
        except TypeError as exc:
            raise TypeError(f"components must be a sequence of component indices, got {components!r}") from exc
        if not rows or any(c < 0 or c >= self.k for c in rows):
            raise ValueError(f"components must be a non-empty list of indices in [0, {self.k}), got {rows}")
        return rows

    def _shape_score(self, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return s.reshape(u.shape[0], s.shape[1], *u.shape[2:]).to(u.dtype)

    def log_prob(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""Exact log density :math:`\log p_t(u)` of the full state, float64 of shape ``(batch,)`` on ``u``'s device.

        Differentiable with respect to ``u`` (autograd).
        """
        terms, _ = self._evaluate(u, t, score_rows=None, need_log_prob=True)
        return torch.logsumexp(terms, dim=1)

    def responsibilities(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""Posterior probabilities :math:`P(i \mid u_t = u)` of the mixture components, float64 ``(batch, K)``."""
        terms, _ = self._evaluate(u, t, score_rows=None, need_log_prob=True)
        return torch.softmax(terms, dim=1)

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""Exact score :math:`\nabla_u \log p_t(u)`, with the shape, dtype and device of ``u``."""
        _, s = self._evaluate(u, t, score_rows=list(range(self.k)), need_log_prob=False)
        return self._shape_score(s, u)

    def component_score(self, u: torch.Tensor, t, components: Sequence[int]) -> torch.Tensor:
        r"""The score's block for some components, e.g. ``[1]``: CLD's velocity score :math:`\nabla_v \log p_t(u)`.

        Returns shape ``(batch, len(components), *event_shape)`` in ``u``'s dtype; equal to
        ``score(u, t)[:, components]`` but only the requested rows of :math:`\Sigma^{-1}` are applied.
        """
        rows = self._rows(components)
        _, s = self._evaluate(u, t, score_rows=rows, need_log_prob=False)
        return self._shape_score(s, u)

    def log_prob_and_score(self, u: torch.Tensor, t, components: Sequence[int] | None = None):
        """Both :meth:`log_prob` (float64) and the score (all components, or ``components``) in one pass."""
        rows = list(range(self.k)) if components is None else self._rows(components)
        terms, s = self._evaluate(u, t, score_rows=rows, need_log_prob=True)
        return torch.logsumexp(terms, dim=1), self._shape_score(s, u)

    def score_fn(self, components: Sequence[int] | None = None) -> Callable[[torch.Tensor, object], torch.Tensor]:
        """A callable ``score(u, t)`` for samplers: the full score, or the block of ``components`` (CLD: ``[1]``).

        ``t`` may be a python float, a 0-d tensor or a ``(batch,)`` tensor.
        """
        if components is None:
            return self.score
        rows = self._rows(components)
        return lambda u, t: self.component_score(u, t, rows)

    # -- exact samples and moments ---------------------------------------------------------------------
    def sample(
        self,
        n: int,
        t,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        r"""Exact samples of :math:`u_t`, shape ``(n, k, *event_shape)``.

        A component :math:`i \sim w` is drawn per sample and then
        :math:`u_{\cdot j} = \mu_{ij}(t) + L_{ij}(t)\,\varepsilon_j` (float64, cast to ``dtype``); ``t`` is a
        float or a ``(n,)`` tensor. Degenerate covariances (``t = 0`` with a singular ``initial_covariance``)
        are allowed. Randomness is drawn on ``generator``'s device (CPU without one).
        """
        n = _check_count("n", n)
        times, index = self._times(t, n)
        where = _draw_device(generator)
        labels = torch.multinomial(self.mixture.weights.to(where), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.k, self.dimension, generator=generator, dtype=torch.float64, device=where)
        phi0, cov = self._covariances(times, where)
        L, _ = _small_cholesky(cov, semidefinite=True)  # (T, K, d', k, k)
        L_entries = _entries(L)
        means, _, _ = self.mixture._params(where)
        if index is not None:
            index = index.to(where)
        step = _chunk_size(self.dimension * (2 * self.k + 1))
        out = []
        for start in range(0, n, step):
            lab = labels[start : start + step]
            ti = index[start : start + step] if index is not None else torch.zeros_like(lab)
            Lb = [[entry[ti, lab] for entry in row] for row in L_entries]  # (b, d')
            mb = means[lab]  # (b, d)
            p0 = phi0[ti]  # (b, k)
            noise = _tril_apply(Lb, [eps[start : start + step, c] for c in range(self.k)])
            out.append(torch.stack([mb * p0[:, c, None] + noise[c] for c in range(self.k)], 1))
        u = torch.cat(out).reshape(n, self.k, *self.event_shape)
        return u.to(dtype=dtype, device=device)

    def mean(self, t) -> torch.Tensor:
        r"""Overall mean :math:`E[u_t] = \Phi(t) e_0 \otimes \bar m` with :math:`\bar m = \sum_i w_i m_i`.

        ``t``: a float or a tensor of any shape; returns a float64 CPU tensor of shape ``t.shape + (k, *event_shape)``.
        """
        t = check_time("t", t, self.sde.T)
        phi0 = self.sde.kernel(t)[0][..., :, 0]
        m = self.mixture.weights @ self.mixture.means  # (d,)
        return (phi0[..., :, None] * m).reshape(*t.shape, self.k, *self.event_shape)

    def covariance(self, t) -> torch.Tensor:
        r"""Overall covariance of the flattened state ``u_t.reshape(batch, k * d)``.

        By the law of total covariance, with :math:`\phi = \Phi(t) e_0`,
        :math:`A(t) = \Phi(t)\,\mathrm{blockdiag}(0, C)\,\Phi(t)^\top + Q(t)`,
        :math:`\bar v_j = \sum_i w_i s_{ij}^2` and the covariance of the means
        :math:`V = \sum_i w_i (m_i - \bar m)(m_i - \bar m)^\top`,

        .. math::

            \mathrm{Cov}(u_{aj}, u_{cj'}) = \delta_{jj'}\big(A_{ac} + \bar v_j\,\phi_a\phi_c\big)
            + \phi_a\phi_c\,V_{jj'}.

        Returns a float64 CPU tensor of shape ``t.shape + (k * d, k * d)``, row/column index ``a * d + j`` for component
        ``a`` and coordinate ``j`` (the order of ``u.reshape(batch, -1)`` for ``(batch, k, d)`` states); use
        ``.reshape(*t.shape, k, d, k, d)`` for the 4-index form.
        """
        t = check_time("t", t, self.sde.T)
        Phi, Q = self.sde.kernel(t)
        k, d = self.k, self.dimension
        phi0 = Phi[..., :, 0]
        A = Phi @ self._auxiliary_covariance @ Phi.transpose(-1, -2) + Q  # (..., k, k)
        outer = phi0[..., :, None] * phi0[..., None, :]
        w = self.mixture.weights
        mean_var = w @ self.mixture.stds**2  # (d,)
        centred = self.mixture.means - w @ self.mixture.means
        V = centred.T @ (w[:, None] * centred)  # (d, d)
        within = A[..., :, :, None] + outer[..., :, :, None] * mean_var  # (..., k, k, d)
        within = torch.diag_embed(within)  # (..., k, k, d, d)
        between = outer[..., :, :, None, None] * V  # (..., k, k, d, d)
        full = (within + between).transpose(-3, -2)  # (..., k, d, k, d)
        full = full.reshape(*t.shape, k * d, k * d)
        return 0.5 * (full + full.transpose(-1, -2))

    def data_marginal(self, t) -> GaussianMixture:
        r"""The law of the data component :math:`x_t` at a single time ``t``, itself a Gaussian mixture:
        :math:`\sum_i w_i\,\mathcal{N}(\phi_0 m_i, \mathrm{diag}((\Sigma_{ij})_{00}))` with
        :math:`\phi_0 = \Phi_{00}(t)`."""
        times = check_time("t", t, self.sde.T)
        if times.numel() != 1:
            raise ValueError(f"data_marginal needs a single time, got a tensor of shape {tuple(times.shape)}")
        times = times.reshape(1)
        phi0, cov = self._covariances(times, torch.device("cpu"))
        var = cov[0, :, :, 0, 0].expand(self.mixture.num_components, self.dimension)
        means = self.mixture.means * phi0[0, 0]
        return GaussianMixture(means.reshape(-1, *self.event_shape), var.sqrt(), self.mixture.weights)


# ----------------------------------------------------------------------------------------------------------
# standard data
# ----------------------------------------------------------------------------------------------------------
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
    d = _check_count("d", d)
    K = _check_count("K", K)
    std = check_positive("std", std)
    scale = check_positive("scale", scale)
    means = torch.randn(K, d, generator=generator, dtype=torch.float64) * (scale / math.sqrt(d))
    weights = None
    if random_weights:
        weights = 0.5 + torch.rand(K, generator=generator, dtype=torch.float64)
    return GaussianMixture(means, std, weights)
