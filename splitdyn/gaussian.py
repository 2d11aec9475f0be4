r"""Gaussian perturbation kernels :math:`p_t(u_t \mid \cdot)` of linear SDEs, with partial conditioning.

If :math:`u_0 \sim \mathcal{N}(\mu_0, \Sigma_0 \otimes I_d)` with a per-coordinate ``k x k`` covariance
:math:`\Sigma_0`, then :math:`u_t \sim \mathcal{N}(\Phi(t)\mu_0,\ (\Phi\Sigma_0\Phi^\top + Q(t)) \otimes I_d)`.
Conditioning on some components and marginalising the others is expressed through :math:`\Sigma_0`: zero rows
and columns for the components conditioned on, their prior variances for the marginalised ones. For CLD,
denoising score matching conditions on :math:`(x_0, v_0)` (:math:`\Sigma_0 = 0`) and hybrid score matching on
:math:`x_0` alone (:math:`\Sigma_0 = \mathrm{diag}(0, \gamma M)`; paper App. B.1).

With the Cholesky factor :math:`\Sigma_t = L_t L_t^\top`, a sample is :math:`u_t = \mu_t + L_t\varepsilon` and
the kernel's score is :math:`\nabla_{u_t}\log p_t = -L_t^{-\top}\varepsilon` (paper eq. 49-51).
"""

from __future__ import annotations

import torch

from .checks import (as_float64_matrix, check_components, check_finite_tensor, check_nonempty_batch, check_nonnegative,
                     check_state, check_time)
from .linalg import apply_matrix
from .linear_sde import LinearSDEBase

__all__ = ["PerturbationKernel", "gaussian_log_prob", "psd_cholesky"]


def psd_cholesky(covariance: torch.Tensor, name: str = "covariance") -> torch.Tensor:
    """Lower Cholesky factor of a batch of symmetric positive (semi-)definite matrices (float64).

    Positive-definite matrices use ``torch.linalg.cholesky``; singular (semi-definite) ones fall back to a
    symmetric square root by eigendecomposition, which is a valid (non-triangular) factor ``L L^T = S``.
    Raises ``ValueError`` for a matrix with a clearly negative eigenvalue or non-finite entries.
    """
    if not isinstance(covariance, torch.Tensor) or not covariance.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor, got {_describe(covariance)}")
    if covariance.ndim < 2 or covariance.shape[-1] != covariance.shape[-2]:
        raise ValueError(f"{name} must be a (batch of) square matrices (..., k, k), got shape {tuple(covariance.shape)}")
    if not bool(torch.isfinite(covariance).all()):
        raise ValueError(f"{name} has non-finite entries")
    L, info = torch.linalg.cholesky_ex(covariance)
    if bool((info == 0).all()):
        return L
    bad = info != 0
    values, vectors = torch.linalg.eigh(covariance[bad])
    scale = values.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)
    if bool((values < -1e-10 * scale).any()):
        raise ValueError(f"{name} is not positive semi-definite (eigenvalues {values.min().item():.3e})")
    L = L.clone()
    L[bad] = vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(-1, -2)
    return L


def gaussian_log_prob(u: torch.Tensor, covariance: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    r"""Log density of :math:`\mathcal{N}(\mu, \Sigma \otimes I_d)` at states ``u`` of shape ``(batch, k, *event)``.

    ``covariance`` is ``(k, k)`` or ``(batch, k, k)``; computed in float64, summed over coordinates, and
    returned as a float64 tensor of shape ``(batch,)``.
    """
    if not isinstance(u, torch.Tensor) or not u.is_floating_point() or u.ndim < 2:
        raise TypeError(f"u must be a floating tensor of shape (batch, k, *event_shape), got {_describe(u)}")
    k = u.shape[1]
    if not isinstance(covariance, torch.Tensor):
        covariance = as_float64_matrix("covariance", covariance)
    if tuple(covariance.shape) not in ((k, k), (u.shape[0], k, k)):
        raise ValueError(f"covariance must have shape (k, k) or (batch, k, k) with k = {k}, got {tuple(covariance.shape)}")
    x = u.to(torch.float64)
    if mean is not None:
        if not isinstance(mean, torch.Tensor) or tuple(mean.shape) != tuple(u.shape):
            raise ValueError(f"mean must be a tensor of the shape of u {tuple(u.shape)}, got {_describe(mean)}")
        x = x - mean.to(torch.float64)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    cov = covariance.to(device=x.device, dtype=torch.float64)
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError("covariance must be positive definite (its Cholesky factorisation failed)")
    if L.ndim == 2:
        L = L.expand(x.shape[0], -1, -1)
    z = torch.linalg.solve_triangular(L, flat, upper=False)
    d = flat.shape[-1]
    log_det = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (z * z).sum((1, 2)) - 0.5 * d * log_det - 0.5 * k * d * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))


class PerturbationKernel:
    r"""The Gaussian law of :math:`u_t` given a Gaussian :math:`u_0` (the perturbation kernel).

    Parameters
    ----------
    sde:
        A linear SDE.
    t:
        A time in ``[0, T]`` or a tensor of shape ``(batch,)`` of per-sample times.
    initial_mean:
        :math:`\mu_0`, shape ``(batch, k, *event_shape)`` (e.g. ``(x_0, 0)`` for CLD).
    initial_covariance:
        Per-coordinate ``k x k`` covariance :math:`\Sigma_0` of :math:`u_0` (default zero: condition on the
        whole initial state).
    eps_num:
        Stabiliser added to the diagonal of :math:`\Sigma_t` before the Cholesky factorisation (the CLD paper
        uses :math:`10^{-9}` to :math:`10^{-6}`). Sampling and scores use the stabilised covariance so that
        they describe the same Gaussian.

    Attributes
    ----------
    mean:
        :math:`\mu_t`, shape and dtype of ``initial_mean``.
    covariance:
        :math:`\Sigma_t` (without the stabiliser), float64, shape ``t.shape + (k, k)``.
    cholesky:
        Lower factor :math:`L_t` of :math:`\Sigma_t + \epsilon_{num} I`, float64.
    """

    def __init__(
        self,
        sde: LinearSDEBase,
        t,
        initial_mean: torch.Tensor,
        initial_covariance=None,
        eps_num: float = 0.0,
    ) -> None:
        if not isinstance(sde, LinearSDEBase):
            raise TypeError(f"sde must be a linear SDE (splitdyn.LinearSDEBase), got {type(sde).__name__}")
        k = sde.num_components
        check_state("initial_mean", initial_mean, k)
        check_nonempty_batch("initial_mean", initial_mean)
        check_finite_tensor("initial_mean", initial_mean)
        self.sde = sde
        self.t = check_time("t", t, sde.T)
        if self.t.ndim and tuple(self.t.shape) != (initial_mean.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({initial_mean.shape[0]},), got "
                             f"{tuple(self.t.shape)}")
        self.eps_num = check_nonnegative("eps_num", eps_num)
        Phi, Q = sde.kernel(self.t)
        cov = Q
        if initial_covariance is not None:
            S0 = as_float64_matrix("initial_covariance", initial_covariance, (k, k), psd=True)
            cov = Phi @ S0 @ Phi.transpose(-1, -2) + Q
        self.transition = Phi
        self.covariance = cov
        stabilised = cov + self.eps_num * torch.eye(k, dtype=torch.float64)
        self.cholesky = psd_cholesky(stabilised, "the perturbation covariance")
        self._singular = torch.linalg.cholesky_ex(stabilised)[1] != 0
        self.mean = apply_matrix(Phi, initial_mean)

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        r"""Reparametrised sample :math:`u_t = \mu_t + L_t \varepsilon`.

        Returns
        -------
        (u_t, noise):
            The sample and the standard normal :math:`\varepsilon` used (same shape as ``mean``).
        """
        if noise is None:
            noise = torch.randn(
                self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
            )
        else:
            self._check_like_mean("noise", noise)
            check_finite_tensor("noise", noise)
        return self.mean + apply_matrix(self.cholesky, noise), noise

    def score_from_noise(self, noise: torch.Tensor, components=None) -> torch.Tensor:
        r""":math:`\nabla_{u_t}\log p_t(u_t) = -L_t^{-\top}\varepsilon` for the sample made with ``noise``.

        ``components`` (a list of component indices) selects a block, e.g. ``[1]`` for CLD's velocity score
        :math:`-\ell_t\,\varepsilon_v` (eq. 51).
        """
        self._check_like_mean("noise", noise)
        self._check_density("score_from_noise")
        inv_T = torch.linalg.inv(self.cholesky).transpose(-1, -2)
        if components is not None:
            inv_T = inv_T[..., check_components("components", components, self.sde.num_components), :]
        return -apply_matrix(inv_T, noise)

    def score(self, u: torch.Tensor, components=None) -> torch.Tensor:
        r"""Score :math:`-\Sigma_t^{-1}(u - \mu_t)` of the (stabilised) kernel, optionally for a block of components."""
        self._check_like_mean("u", u)
        self._check_density("score")
        precision = torch.cholesky_inverse(self.cholesky) if _is_lower(self.cholesky) else torch.linalg.inv(
            self.cholesky @ self.cholesky.transpose(-1, -2)
        )
        if components is not None:
            precision = precision[..., check_components("components", components, self.sde.num_components), :]
        return -apply_matrix(precision, u - self.mean)

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """Log density (float64, shape ``(batch,)``) of states ``u`` under the (stabilised) kernel."""
        self._check_like_mean("u", u)
        self._check_density("log_prob")
        cov = self.cholesky @ self.cholesky.transpose(-1, -2)
        return gaussian_log_prob(u, cov, self.mean)

    def _check_density(self, what: str) -> None:
        """Refuse ``what`` (a density, score) where the stabilised covariance is singular (no density there)."""
        if bool(self._singular.any()):
            times = self.t.reshape(-1)[self._singular.reshape(-1)] if self.t.ndim else self.t.reshape(1)
            shown = ", ".join(f"{v:.3g}" for v in times[:4].tolist()) + (", ..." if times.numel() > 4 else "")
            raise ValueError(
                f"{what} is undefined: the perturbation covariance is singular at t = {shown} with eps_num = "
                f"{self.eps_num:g} (the kernel is degenerate there: it has no density); use times t > 0 or "
                "eps_num > 0 (e.g. 1e-6)")

    def _check_like_mean(self, name: str, value) -> None:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {_describe(value)}")
        if tuple(value.shape) != tuple(self.mean.shape):
            raise ValueError(f"{name} must have shape {tuple(self.mean.shape)} (that of the kernel's mean), got "
                             f"{tuple(value.shape)}")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _is_lower(L: torch.Tensor) -> bool:
    return bool((torch.triu(L, diagonal=1) == 0).all())
