r"""The exact marginals and scores of Gaussian-mixture data diffused by a linear SDE.

See :mod:`splitdyn.oracles` for the formulas; the per-state evaluation strategies live in
:mod:`splitdyn.oracles.strategies` and the tiny ``k x k`` linear algebra in ``splitdyn.oracles.small_matrices``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..checks import as_float64, check_components, check_count, check_floating_dtype, check_time
from ..linear_sde import LinearSDEBase
from .mixture import GaussianMixture
from .small_matrices import chunk_size, draw_device, entries, small_cholesky, small_tril_inverse, tril_apply
from .strategies import GROUP_MIN_SIZE, MAX_EXPANSION_SCALE, evaluate_expanded, evaluate_residual, expansion_scale

__all__ = ["DiffusedGaussianMixture"]


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
        if u.shape[0] == 0:
            raise ValueError(f"u must hold at least one state (a non-empty batch on dim 0), got shape {tuple(u.shape)}")
        if not bool(torch.isfinite(u).all()):
            bad = int((~torch.isfinite(u)).sum())
            raise ValueError(
                f"u (the state fed to the oracle) contains {bad} non-finite value(s) (NaN or inf): if it comes from a "
                "sampler, the sampler diverged upstream (try smaller steps)"
            )
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
        L, ok = small_cholesky(cov)
        if not bool(ok.all()):
            bad = times[(~ok).reshape(len(times), -1).any(-1).cpu()]
            raise ValueError(
                f"the covariance of u_t is not positive definite at t = {bad[:5].tolist()}: with a singular "
                "initial_covariance (default zero) the auxiliary components are deterministic at t = 0 and u_t "
                "has no density there; evaluate at t > 0 or pass a positive-definite initial_covariance"
            )
        log_diag = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (T, K, d')
        log_det = log_diag.sum(-1) * (self.dimension if log_diag.shape[-1] == 1 else 1)
        return phi0, small_tril_inverse(L), log_det

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
            few_times = len(times) * GROUP_MIN_SIZE <= B
            strategy = "expanded" if index is None or isotropic else ("grouped" if few_times else "residual")
            if expansion_scale(self.mixture, phi0, Linv) > MAX_EXPANSION_SCALE:
                strategy = "residual"  # modes many standard deviations apart: avoid the cancellation
        if strategy == "residual":
            if index is None:
                index = torch.zeros(B, dtype=torch.long, device=x.device)
            return evaluate_residual(self.mixture, x64, index, phi0, Linv, log_det, score_rows, need_log_prob)
        if strategy == "expanded":
            return evaluate_expanded(self.mixture, x64, index, phi0, Linv, log_det, score_rows, need_log_prob)
        if strategy != "grouped":
            raise ValueError(f"unknown strategy {strategy!r}")
        if index is None:
            return evaluate_expanded(self.mixture, x64, None, phi0, Linv, log_det, score_rows, need_log_prob)
        # group the samples by their time, evaluate each group at its shared time, undo the permutation
        perm = torch.argsort(index, stable=True)
        counts = torch.bincount(index, minlength=len(times)).tolist()
        parts = [
            evaluate_expanded(self.mixture, xg, None, phi0[g : g + 1], Linv[g : g + 1], log_det[g : g + 1], score_rows,
                                    need_log_prob)
            for g, xg in enumerate(x64[perm].split(counts))
        ]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(B, device=perm.device)
        terms = torch.cat([p[0] for p in parts])[inverse] if need_log_prob else None
        scores = torch.cat([p[1] for p in parts])[inverse] if score_rows is not None else None
        return terms, scores

    def _rows(self, components) -> list[int]:
        return check_components("components", components, self.k)

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
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        r"""Exact samples of :math:`u_t`, shape ``(n, k, *event_shape)``.

        A component :math:`i \sim w` is drawn per sample and then
        :math:`u_{\cdot j} = \mu_{ij}(t) + L_{ij}(t)\,\varepsilon_j` (float64, cast to ``dtype``); ``t`` is a
        float or a ``(n,)`` tensor; ``dtype`` defaults to float64 (the oracles' precision). Degenerate covariances (``t = 0`` with a singular ``initial_covariance``)
        are allowed. Randomness is drawn on ``generator``'s device (CPU without one).
        """
        n = check_count("n", n)
        dtype = check_floating_dtype("dtype", dtype)
        times, index = self._times(t, n)
        where = draw_device(generator)
        labels = torch.multinomial(self.mixture.weights.to(where), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.k, self.dimension, generator=generator, dtype=torch.float64, device=where)
        phi0, cov = self._covariances(times, where)
        L, _ = small_cholesky(cov, semidefinite=True)  # (T, K, d', k, k)
        L_entries = entries(L)
        means, _, _ = self.mixture.device_params(where)
        if index is not None:
            index = index.to(where)
        step = chunk_size(self.dimension * (2 * self.k + 1))
        out = []
        for start in range(0, n, step):
            lab = labels[start : start + step]
            ti = index[start : start + step] if index is not None else torch.zeros_like(lab)
            Lb = [[entry[ti, lab] for entry in row] for row in L_entries]  # (b, d')
            mb = means[lab]  # (b, d)
            p0 = phi0[ti]  # (b, k)
            noise = tril_apply(Lb, [eps[start : start + step, c] for c in range(self.k)])
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
            raise ValueError(f"t must be a single time for data_marginal, got a tensor of shape {tuple(times.shape)}")
        times = times.reshape(1)
        phi0, cov = self._covariances(times, torch.device("cpu"))
        var = cov[0, :, :, 0, 0].expand(self.mixture.num_components, self.dimension)
        means = self.mixture.means * phi0[0, 0]
        return GaussianMixture(means.reshape(-1, *self.event_shape), var.sqrt(), self.mixture.weights)
