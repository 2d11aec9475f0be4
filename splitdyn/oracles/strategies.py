r"""The evaluation strategies of :class:`~splitdyn.oracles.diffused.DiffusedGaussianMixture`.

Both give the weighted component log densities :math:`\log w_i + \sum_j \log\mathcal N_{ij}(u_{\cdot j})` of
float64 states ``x64`` of shape ``(B, k, d)`` and, optionally, some rows of the score; the tests compare them.

- :func:`evaluate_expanded`: the quadratic forms expand into
  :math:`\sum_j (u_j - \mu_{ij})^\top P_{ij} (u_j - \mu_{ij}) = \langle H(u), P_i\rangle - 2\langle u, P_i\mu_i\rangle
  + \langle\mu_i, P_i\mu_i\rangle`, which are matrix products with ``(batch, K)`` outputs. States and means are
  first centred at the mixture's mean at time ``t``, so the expansion loses only about
  :math:`\log_{10}(\text{spread}^2/\text{std}^2)` of float64's 16 digits. Used for isotropic mixtures at any times
  and for anisotropic ones at a shared time; the oracle's "grouped" strategy applies it to anisotropic mixtures at
  per-sample times taking few distinct values, one group per time.
- :func:`evaluate_residual`: whitened residuals :math:`z_{ij} = L_{ij}^{-1}(u_{\cdot j} - \mu_{ij})`, elementwise
  on ``(batch, K, d)`` tensors. Used for anisotropic mixtures at many distinct per-sample times, and whenever the
  modes are so far apart (in standard deviations, :func:`expansion_scale` above :data:`MAX_EXPANSION_SCALE`) that
  the expansion would lose too many digits.

Shared arguments: ``mixture`` (the data law), ``index`` (``(B,)`` indices of each state's time, or ``None`` for one
shared time), ``phi0`` (``(T, k)``, :math:`\Phi(t) e_0` per distinct time), ``Linv`` (``(T, K, d', k, k)``, inverse
Cholesky factors of :math:`\Sigma_{ij}(t)`, ``d' = 1`` for isotropic mixtures), ``log_det`` (``(T, K)``,
:math:`\sum_j \log\det L_{ij}`), ``score_rows`` (the score's component rows, or ``None``) and ``need_log_prob``.
Both return ``(log_terms, score)``: float64 ``(B, K)`` and ``(B, len(score_rows), d)``, each ``None`` when not
requested.
"""

from __future__ import annotations

import torch

from .mixture import GaussianMixture
from .small_matrices import LOG_2PI, chunk_size, entries, gram, small_bmm, tril_apply, tril_t_apply

__all__ = ["GROUP_MIN_SIZE", "MAX_EXPANSION_SCALE", "expansion_scale", "evaluate_expanded", "evaluate_residual"]

#: Anisotropic mixtures at per-sample times are grouped by time when each time has at least this many samples.
GROUP_MIN_SIZE = 64
#: The expansion's absolute error in :math:`\log p` is about :math:`2^{-52}` times
#: :math:`\max_i \mu_i^\top\Sigma_i^{-1}\mu_i` (centred means): above this scale (modes more than ~2000 standard
#: deviations apart) the residual strategy is used instead.
MAX_EXPANSION_SCALE = 4.0e6


def expansion_scale(mixture: GaussianMixture, phi0: torch.Tensor, Linv: torch.Tensor) -> float:
    """``max_{t, i} sum_j mu_ij^T Sigma_ij^{-1} mu_ij`` for the centred means (the expansion's error scale)."""
    means, _, log_w = mixture.device_params(Linv.device)
    mt = means - log_w.exp() @ means  # (K, d)
    z = (Linv @ phi0[:, None, None, :, None]).squeeze(-1)  # (T, K, d', k) = L^{-1} phi0
    zz = (z * z).sum(-1)  # (T, K, d')
    scale = zz[..., 0] * (mt * mt).sum(-1) if zz.shape[-1] == 1 else (zz * mt * mt).sum(-1)
    return float(scale.max())


def evaluate_expanded(mixture: GaussianMixture, x64, index, phi0, Linv, log_det, score_rows, need_log_prob):
    """Matrix-product evaluation. ``index`` is None (one time: ``phi0 (1, k)``, ``Linv (1, K, d', k, k)``,
    ``log_det (1, K)``) or, for isotropic mixtures only, maps samples to times (``d' = 1``)."""
    means, _, log_w = mixture.device_params(x64.device)
    K, d, k = mixture.num_components, mixture.dimension, phi0.shape[-1]
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
    const0 = 0.5 * k * d * LOG_2PI
    rows = score_rows
    step = chunk_size(max(K * (k * k + 2), k * k * d) * 4)
    all_terms, all_scores = [], []
    for start in range(0, x64.shape[0], step):
        xb = x64[start : start + step]
        b = xb.shape[0]
        if shared:
            xt = xb - p0[:, None] * mbar  # (b, k, d), centred at E[u_t]
            if P.shape[2] == 1:
                H = gram(xt).reshape(b, k * k)
            else:
                H = (xt[:, :, None, :] * xt[:, None, :, :]).reshape(b, k * k * d)
            terms = const - 0.5 * (H @ P_flat.T - 2.0 * (xt.reshape(b, k * d) @ W2)) - const0
        else:
            idx = index[start : start + step]
            pb, P2b, Pphib = phi0[idx], P2[idx], Pphi[idx]  # (b, k), (b, K, k, k), (b, K, k)
            xt = xb - pb[:, :, None] * mbar  # (b, k, d)
            G = gram(xt)  # (b, k, k)
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
                s = (resp @ V).reshape(b, len(rows), d) - small_bmm(Pbar, xt)
            elif shared:
                Pbar = (resp @ P_flat).reshape(b, k, k, d)[:, rows]  # (b, c, k, d)
                s = -(Pbar * xt[:, None]).sum(2) + (resp @ V).reshape(b, len(rows), d)
            else:
                Pbar = (resp[:, :, None] * P2b.reshape(b, K, k * k)).sum(1).reshape(b, k, k)[:, rows]
                back = torch.stack([(resp * Pphib[..., c]) @ mt for c in rows], 1)  # (b, c, d)
                s = back - small_bmm(Pbar, xt)
            all_scores.append(s)
    terms = torch.cat(all_terms) if need_log_prob else None
    scores = torch.cat(all_scores) if rows is not None else None
    return terms, scores


def evaluate_residual(mixture: GaussianMixture, x64, index, phi0, Linv, log_det, score_rows, need_log_prob):
    """Whitened-residual evaluation: ``index (B,)`` into ``phi0 (T, k)``, ``Linv (T, K, d', k, k)``,
    ``log_det (T, K)``."""
    means, _, log_w = mixture.device_params(x64.device)
    K, d, k = mixture.num_components, mixture.dimension, phi0.shape[-1]
    Linv_entries = entries(Linv)  # k x k entries of shape (T, K, d')
    step = chunk_size(K * d * (2 * k + 2))
    const = 0.5 * k * d * LOG_2PI
    all_terms, all_scores = [], []
    for start in range(0, x64.shape[0], step):
        xb = x64[start : start + step]  # (b, k, d)
        idx = index[start : start + step]
        p0, ld = phi0[idx], log_det[idx]
        Li = [[entry[idx] for entry in row] for row in Linv_entries]
        # residuals r_c[b, i, j] = u[b, c, j] - phi0_c m_ij, one (b, K, d) tensor per state component c
        r = [xb[:, None, c, :] - means[None] * p0[:, c, None, None] for c in range(k)]
        z = tril_apply(Li, r)  # whitened residuals L^{-1} r
        quad = z[0] * z[0]
        for za in z[1:]:
            quad = quad + za * za
        terms = log_w[None] - 0.5 * quad.sum(-1) - ld - const  # (b, K)
        if need_log_prob:
            all_terms.append(terms)
        if score_rows is not None:
            resp = torch.softmax(terms, dim=1)
            precision_r = tril_t_apply(Li, z, score_rows)  # Sigma^{-1} r = L^{-T} z, rows score_rows
            all_scores.append(torch.stack([-torch.einsum("bi,bij->bj", resp, pr) for pr in precision_r], 1))
    terms = torch.cat(all_terms) if need_log_prob else None
    scores = torch.cat(all_scores) if score_rows is not None else None
    return terms, scores