r"""Closed-form CLD kernels (paper App. B.1 and D), cross-checked in the tests against the generic
matrix-exponential kernels of :class:`splitdyn.LinearSDE`.

With :math:`B = B(t)` and :math:`\Gamma` (any :math:`M` with :math:`\Gamma^2 = 4M`, critical damping):

- mean (eq. 28): :math:`\mu_t = e^{-2B/\Gamma}\,\big(x_0 + \tfrac{2B}{\Gamma}x_0 + \tfrac{4B}{\Gamma^2}v_0,\;
  v_0 - Bx_0 - \tfrac{2B}{\Gamma}v_0\big)`;
- covariance (eq. 30-33) for a diagonal initial covariance :math:`\mathrm{diag}(\Sigma^{xx}_0, \Sigma^{vv}_0)`;
- the SSCS half-step kernel of the time-reversed linear part (eq. 85-90).

**Conditioning near** :math:`t = 0`: :math:`\Sigma^{xx}_t` is :math:`O(B^3)` for DSM, formed from :math:`O(1)`
terms; the closed forms use ``expm1`` but still lose about :math:`\log_{10}(1/B^3)` digits, so for
:math:`B \lesssim 10^{-3}` the generic kernel (whose Taylor branch is exact to rounding) should be preferred;
:func:`ell` and the samplers use the generic kernels throughout. All values are float64.
"""

from __future__ import annotations

import torch

from splitdyn._validation import as_float64_time

from .process import CLD

__all__ = ["forward_mean_matrix", "forward_covariance", "half_step_kernel", "ell", "velocity_variance"]


def _critical(cld: CLD) -> None:
    if abs(cld.friction**2 - 4 * cld.mass) > 1e-9 * cld.mass:
        raise ValueError("the closed forms hold for critical damping (friction^2 = 4 mass) only")


def forward_mean_matrix(cld: CLD, t) -> torch.Tensor:
    """The ``2 x 2`` matrix ``A(t)`` with ``mu_t = A(t) (x0, v0)`` (eq. 28), shape ``t.shape + (2, 2)``."""
    _critical(cld)
    B = cld.rescaling.integral(as_float64_time("t", t))
    G = cld.friction
    e = torch.exp(-2 * B / G)
    A = torch.stack(
        [torch.stack([1 + 2 * B / G, 4 * B / G**2], -1), torch.stack([-B, 1 - 2 * B / G], -1)], -2
    )
    return A * e[..., None, None]


def forward_covariance(cld: CLD, t, initial_covariance=(0.0, 0.0)) -> torch.Tensor:
    r"""Per-coordinate covariance :math:`\Sigma_t` of eq. 30-33 for :math:`\Sigma_0 = \mathrm{diag}(\Sigma^{xx}_0, \Sigma^{vv}_0)`."""
    _critical(cld)
    sxx0, svv0 = (float(v) for v in initial_covariance)
    B = cld.rescaling.integral(as_float64_time("t", t))
    G = cld.friction
    g = 4 * B / G
    em1 = torch.expm1(g)  # e^{4B/Gamma} - 1
    sxx = sxx0 + em1 + g * (sxx0 - 1) + 4 * B**2 / G**2 * (sxx0 - 2) + 16 * B**2 / G**4 * svv0
    sxv = -B * sxx0 + 4 * B / G**2 * svv0 - 2 * B**2 / G * (sxx0 - 2) - 8 * B**2 / G**3 * svv0
    svv = G**2 / 4 * em1 + B * G + svv0 * (1 + 4 * B**2 / G**2 - g) + B**2 * (sxx0 - 2)
    e = torch.exp(-g)
    return torch.stack([torch.stack([sxx, sxv], -1), torch.stack([sxv, svv], -1)], -2) * e[..., None, None]


def half_step_kernel(cld: CLD, delta_B) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean matrix and covariance of the time-reversed linear part over an integrated rate ``delta_B``
    (:math:`\beta\,\delta t/2` for a constant-rate SSCS half-step; eq. 85-90)."""
    _critical(cld)
    b = as_float64_time("delta_B", delta_B)
    G = cld.friction
    e2 = torch.exp(-2 * b / G)
    A = torch.stack(
        [torch.stack([1 + 2 * b / G, -4 * b / G**2], -1), torch.stack([b, 1 - 2 * b / G], -1)], -2
    ) * e2[..., None, None]
    g = 4 * b / G
    em1 = torch.expm1(g)
    sxx = em1 - g - 8 * b**2 / G**2
    sxv = -4 * b**2 / G
    svv = G**2 / 4 * em1 + b * G - 2 * b**2
    S = torch.stack([torch.stack([sxx, sxv], -1), torch.stack([sxv, svv], -1)], -2) * torch.exp(-g)[..., None, None]
    return A, S


def _hsm_or_dsm_covariance(cld: CLD, t, kind: str) -> torch.Tensor:
    cov = cld.kernel(t)[1]
    if kind == "hsm":
        Phi = cld.transition_matrix(t)
        cov = cov + Phi @ cld.initial_covariance("hsm") @ Phi.transpose(-1, -2)
    elif kind != "dsm":
        raise ValueError(f"kind must be 'hsm' or 'dsm', got {kind!r}")
    return cov + cld.eps_num * torch.eye(2, dtype=torch.float64)


def ell(cld: CLD, t, kind: str = "hsm") -> torch.Tensor:
    r""":math:`\ell_t = \sqrt{\Sigma^{xx}_t / (\Sigma^{xx}_t\Sigma^{vv}_t - (\Sigma^{xv}_t)^2)} = 1/L^{22}_t` (eq. 52),
    with :math:`\epsilon_{num}` added to :math:`\Sigma^{xx}` and :math:`\Sigma^{vv}`; float64."""
    cov = _hsm_or_dsm_covariance(cld, as_float64_time("t", t), kind)
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    return torch.sqrt(cov[..., 0, 0] / det)


def velocity_variance(cld: CLD, t, kind: str = "hsm") -> torch.Tensor:
    r""":math:`\Sigma^{vv}_t` (+ :math:`\epsilon_{num}`) of the HSM (default) or DSM kernel; used by the mixed score."""
    return _hsm_or_dsm_covariance(cld, as_float64_time("t", t), kind)[..., 1, 1]
