r"""Closed-form CLD kernels (paper App. B.1, B.2 and D.1), accurate in float64 down to :math:`t \to 0`.

For critical damping :math:`\Gamma^2 = 4M` everything is a function of the integrated rate
:math:`B = B(t) = \int_0^t \beta` through :math:`s = 2B/\Gamma` and :math:`z = 2s = 4B/\Gamma`, with
:math:`w = e^{-z}`:

- mean map (eq. 28): :math:`\mu_t = A(t)\,(x_0, v_0)^\top`,
  :math:`A(t) = e^{-s}\begin{pmatrix} 1 + s & 2s/\Gamma \\ -\Gamma s/2 & 1 - s\end{pmatrix}`;
- covariance (eq. 29-33) for :math:`\Sigma_0 = \mathrm{diag}(a, b)`, rewritten as sums of non-negative terms
  (the identity with eq. 31-33 is exact algebra):

  .. math::

      \Sigma^{xx}_t &= E + w\,\big(a(1+s)^2 + s^2 b/M\big), \\
      \Sigma^{xv}_t &= w\,\big(\Gamma s^2 - \tfrac{\Gamma}{2} a\,s(1+s) + \tfrac{2}{\Gamma} b\,s(1-s)\big), \\
      \Sigma^{vv}_t &= M\,\big(E + w(4s + a s^2)\big) + w\,b\,(1-s)^2,

  where :math:`E = e^{-z}\sum_{n\ge3} z^n/n! = e^{-z}(e^{z} - 1 - z - z^2/2)` (the regularised lower incomplete
  gamma function :math:`P(3, z)`);
- determinant, also a sum of non-negative terms (:math:`G = E - w s^3 = e^{-z}(z^3/24 + \sum_{n\ge4} z^n/n!)`):

  .. math::

      \det\Sigma_t = M\big(E^2 + 4 s w G\big)
      + a M w\big((E + 4sw)(1+s)^2 + 4 s^3 (1+s) w + E s^2\big)
      + b w\big(E(1 - 2s + 2s^2) + 4 s^4 w\big) + a b w^2 ;

- the SSCS half-step kernel of the time-reversed linear part (eq. 85-90): the same functions of
  :math:`z = 4\,\delta B/\Gamma` with the signs of the off-diagonal entries flipped (the reverse linear part is
  the forward CLD conjugated by :math:`\mathrm{diag}(1, -1)`);
- :math:`\ell_t` (eq. 52) and the velocity variance :math:`\Sigma^{vv}_t` used by the mixed score (Sec. 3.2).

**Conditioning near** :math:`t = 0`. Written as in eq. 31, :math:`\Sigma^{xx}_t` for DSM is
:math:`e^{z} - 1 - z - z^2/2 = O(B^3)` formed from :math:`O(1)` terms: evaluated directly it keeps only about
:math:`16 - \log_{10}(1/z^3)` digits (none below :math:`t \approx 10^{-5}`). Likewise
:math:`\Sigma^{xx}\Sigma^{vv} - (\Sigma^{xv})^2` cancels to leading order for HSM (:math:`v_0` is revealed by
:math:`x_t - x_0` as :math:`t \to 0`), with a condition number of about :math:`3\gamma/(4s)`
(:math:`\approx 4 \cdot 10^5` at :math:`t = 10^{-8}`), which also limits any :math:`\ell_t` computed from the
entries (e.g. a Cholesky factor). Here the exponential tails :math:`E` and :math:`G` are summed as Taylor series
for :math:`z < 2` and from ``expm1`` otherwise (both branches have a relative error of a few ulp at the
switch), and every entry and the determinant are sums of non-negative terms (except :math:`\Sigma^{xv}`, whose
error is a few ulp of :math:`\sqrt{\Sigma^{xx}\Sigma^{vv}}`). The results keep a relative accuracy of about
:math:`10^{-15}` for all :math:`t > 0` (tested against 60-digit arithmetic for :math:`t \in [10^{-8}, 1]`) and
never overflow: the exponentials only appear as :math:`e^{-z}`.

All coefficients are float64 on the CPU; cast them to the state's dtype at use. The closed forms need critical
damping (:math:`\Gamma^2 = 4M`, the paper's setting); :func:`ell` and :func:`velocity_variance` fall back to the
generic matrix-exponential kernel of :class:`splitdyn.LinearSDE` for other frictions.

:func:`score_coefficients` evaluates the same closed forms for :math:`\ell_t` and :math:`\Sigma^{vv}_t` at the cost
a score call can afford: with :mod:`math` for a Python float time (microseconds, no tensor), or on the time
tensor's own device without host synchronisation (traceable by ``torch.compile``); the functions above are its
oracle in the tests (equal to a relative ``1e-12``).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from splitdyn import LinearSDE
from splitdyn.checks import as_float64_time, check_nonnegative, check_time
from splitdyn.protocols import missing_members
from splitdyn.schedules import ConstantBeta, LinearBeta, ReversedRescaling

if TYPE_CHECKING:  # the process builds on this module (CLD.kernel uses the closed forms): no runtime import
    from .process import CLD


@runtime_checkable
class _CLDParameters(Protocol):
    """What the closed forms read from a CLD (checked with :func:`_require_cld`)."""

    mass: float
    friction: float
    gamma: float
    eps_num: float
    rescaling: object
    T: float


def _require_cld(cld: object) -> None:
    if not isinstance(cld, LinearSDE) or missing_members(cld, _CLDParameters):
        raise TypeError(f"cld must be a CLD, got {type(cld).__name__}")

__all__ = [
    "forward_increment_kernel",
    "ReverseLinearPart",
    "forward_mean_coefficients",
    "forward_mean_matrix",
    "forward_covariance",
    "forward_covariance_determinant",
    "reverse_linear_kernel",
    "half_step_kernel",
    "perturbation_cholesky",
    "ell",
    "velocity_variance",
    "score_coefficients",
    "is_critically_damped",
]

#: Below this value of :math:`z = 4B/\Gamma` the exponential tails are summed as Taylor series.
SERIES_SWITCH = 2.0
_SERIES_TERMS = 24  # last term z^28 / 28! at z = 2: 1e-21 relative to the leading term z^3 / 6
_KINDS = ("hsm", "dsm")


# -- helpers ----------------------------------------------------------------------------------------------
def is_critically_damped(cld: CLD) -> bool:
    r"""Whether :math:`\Gamma^2 = 4M` to a relative ``1e-12`` (the closed forms' assumption)."""
    return abs(cld.friction**2 - 4.0 * cld.mass) <= 1e-12 * 4.0 * cld.mass


def _require_critical(cld: CLD) -> None:
    _require_cld(cld)
    if not is_critically_damped(cld):
        raise ValueError(
            f"the closed forms hold for critical damping only (friction^2 = 4 mass), got friction={cld.friction}, "
            f"mass={cld.mass}; use cld.kernel(t) for other frictions"
        )


def _check_kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'hsm' or 'dsm', got {kind!r}")
    return kind


def _diagonal_initial_covariance(cld: CLD, initial_covariance) -> tuple[float, float]:
    """``(a, b) = (Sigma0_xx, Sigma0_vv)`` from a pair, a diagonal 2 x 2 matrix or ``"hsm"``/``"dsm"``."""
    if isinstance(initial_covariance, str):
        if initial_covariance not in _KINDS:
            raise ValueError(f"initial_covariance must be 'hsm', 'dsm', a pair of variances or a diagonal 2 x 2 "
                             f"tensor, got {initial_covariance!r}")
        initial_covariance = cld.initial_covariance(initial_covariance)
    if isinstance(initial_covariance, torch.Tensor) and initial_covariance.shape == (2, 2):
        S0 = initial_covariance.detach().to(device="cpu", dtype=torch.float64)
        if float(S0[0, 1]) != 0.0 or float(S0[1, 0]) != 0.0:
            raise ValueError(f"initial_covariance must be diagonal, got {S0.tolist()}")
        pair: tuple[float, ...] = (S0[0, 0].item(), S0[1, 1].item())
    else:
        try:
            pair = tuple(float(v) for v in initial_covariance)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                "initial_covariance must be a pair (Sigma0_xx, Sigma0_vv), a diagonal 2 x 2 tensor, 'hsm' or 'dsm', "
                f"got {initial_covariance!r}"
            ) from exc
        if len(pair) != 2:
            raise ValueError(f"initial_covariance must hold 2 variances (Sigma0_xx, Sigma0_vv), got {len(pair)}")
    a = check_nonnegative("initial_covariance[0] (Sigma0_xx)", pair[0])
    b = check_nonnegative("initial_covariance[1] (Sigma0_vv)", pair[1])
    return a, b


def _exp_tails(z: torch.Tensor, branch: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(w, E, G)`` with :math:`w = e^{-z}`, :math:`E = e^{-z}\sum_{n\ge3} z^n/n!` and
    :math:`G = E - w z^3/8 = e^{-z}(z^3/24 + \sum_{n\ge4} z^n/n!)`, for float64 ``z >= 0``.

    ``branch`` forces ``"series"`` or ``"direct"`` (for tests); default: series for ``z < SERIES_SWITCH``.
    """
    w = torch.exp(-z)
    if branch not in (None, "series", "direct"):
        raise ValueError(f"branch must be None, 'series' or 'direct', got {branch!r}")
    use_series = z < SERIES_SWITCH if branch is None else torch.full_like(z, branch == "series", dtype=torch.bool)
    # Direct: e^{-z} (e^z - 1 - z - z^2/2) = -expm1(-z) - e^{-z} (z + z^2/2); cancellation <= ~4x for z >= 2.
    E_direct = -torch.expm1(-z) - w * (z + 0.5 * z * z)
    G_direct = E_direct - w * z**3 / 8.0
    # Series: sum_{n>=4} z^n/n! = z^4/4! (1 + z/5 (1 + z/6 (1 + ...))) by Horner (z clamped: unused elsewhere).
    zs = torch.where(use_series, z, torch.zeros_like(z))
    acc = torch.ones_like(zs)
    for n in range(4 + _SERIES_TERMS, 4, -1):
        acc = 1.0 + zs / n * acc
    tail4 = zs**4 / 24.0 * acc
    E_series = w * (zs**3 / 6.0 + tail4)
    G_series = w * (zs**3 / 24.0 + tail4)
    return w, torch.where(use_series, E_series, E_direct), torch.where(use_series, G_series, G_direct)


def _integrated_rate(cld: CLD, t) -> torch.Tensor:
    return cld.rescaling.integral(check_time("t", t, cld.T))


def _stack2x2(xx: torch.Tensor, xv: torch.Tensor, vx: torch.Tensor, vv: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([xx, xv], -1), torch.stack([vx, vv], -1)], -2)


def _mean_map(cld: CLD, B: torch.Tensor, sign: float) -> torch.Tensor:
    G = cld.friction
    s = 2.0 * B / G
    e = torch.exp(-s)
    return _stack2x2(e * (1 + s), sign * e * (2.0 / G) * s, -sign * e * (G / 2.0) * s, e * (1 - s))


def _covariance_entries(cld: CLD, B: torch.Tensor, a: float, b: float, branch: str | None = None):
    """``(xx, xv, vv, det)`` of the forward covariance for Sigma0 = diag(a, b) (all float64)."""
    z = 4.0 * B / cld.friction
    w, E, Gt = _exp_tails(z, branch)
    return _entries_from_tails(cld, 0.5 * z, w, E, Gt, a, b)


def _entries_from_tails(cld: CLD, s, w, E, Gt, a: float, b: float):
    """``(xx, xv, vv, det)`` from :math:`s` and the tails ``(w, E, G)`` of :func:`_exp_tails`: plain arithmetic,
    so the same expressions serve float64 tensors (on any device) and Python floats."""
    G, M = cld.friction, cld.mass
    xx = E + w * (a * (1 + s) ** 2 + s * s * b / M)
    xv = w * (G * s * s - 0.5 * G * a * s * (1 + s) + (2.0 / G) * b * s * (1 - s))
    vv = M * (E + w * (4 * s + a * s * s)) + w * b * (1 - s) ** 2
    det = M * (E * E + 4 * s * w * Gt)
    if a:
        det = det + a * M * w * ((E + 4 * s * w) * (1 + s) ** 2 + 4 * s**3 * (1 + s) * w + E * s * s)
    if b:
        det = det + b * w * (E * (1 - 2 * s + 2 * s * s) + 4 * s**4 * w)
    if a and b:
        det = det + a * b * w * w
    return xx, xv, vv, det


# -- forward kernel ---------------------------------------------------------------------------------------
def forward_mean_coefficients(cld: CLD, t) -> torch.Tensor:
    r"""The mean map :math:`A(t)` of eq. 28, :math:`\mu_t = A(t)\,(x_0, v_0)^\top` per coordinate.

    Parameters
    ----------
    cld:
        A critically damped :class:`~splitdyn_cld.CLD` (any :math:`\beta(t)`: :math:`B(t)` comes from
        ``cld.rescaling.integral``).
    t:
        Time(s) in ``[0, T]``: a float or a tensor of any shape.

    Returns
    -------
    torch.Tensor
        float64, shape ``t.shape + (2, 2)``; equals ``cld.transition_matrix(t)``.
    """
    _require_critical(cld)
    return _mean_map(cld, _integrated_rate(cld, t), 1.0)


#: Alias of :func:`forward_mean_coefficients`.
forward_mean_matrix = forward_mean_coefficients


def forward_covariance(cld: CLD, t, initial_covariance=(0.0, 0.0)) -> torch.Tensor:
    r"""Per-coordinate covariance :math:`\Sigma_t` of eq. 29-33 for :math:`\Sigma_0 = \mathrm{diag}(\Sigma^{xx}_0, \Sigma^{vv}_0)`.

    Parameters
    ----------
    cld:
        A critically damped CLD (any :math:`\beta(t)`).
    t:
        Time(s) in ``[0, T]``, a float or a tensor of any shape.
    initial_covariance:
        ``(Sigma0_xx, Sigma0_vv)``, a diagonal ``2 x 2`` tensor, or ``"hsm"`` (:math:`\mathrm{diag}(0, \gamma M)`)
        / ``"dsm"`` (zero). Default zero (DSM).

    Returns
    -------
    torch.Tensor
        float64, shape ``t.shape + (2, 2)``, without :math:`\epsilon_{num}`; equals
        :math:`\Phi\Sigma_0\Phi^\top + Q` of the generic kernel, with full relative accuracy near ``t = 0``
        (see the module notes).
    """
    _require_critical(cld)
    a, b = _diagonal_initial_covariance(cld, initial_covariance)
    xx, xv, vv, _ = _covariance_entries(cld, _integrated_rate(cld, t), a, b)
    return _stack2x2(xx, xv, xv, vv)


def forward_covariance_determinant(cld: CLD, t, initial_covariance=(0.0, 0.0)) -> torch.Tensor:
    r""":math:`\det\Sigma_t = \Sigma^{xx}_t\Sigma^{vv}_t - (\Sigma^{xv}_t)^2` (float64, shape ``t.shape``), from the
    cancellation-free closed form of the module notes (the entrywise formula loses up to ~6 digits for HSM at
    :math:`t = 10^{-8}`). Arguments as for :func:`forward_covariance`."""
    _require_critical(cld)
    a, b = _diagonal_initial_covariance(cld, initial_covariance)
    return _covariance_entries(cld, _integrated_rate(cld, t), a, b)[3]


def forward_increment_kernel(cld: CLD, delta_B) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Transition matrix and noise covariance of the forward CLD over an integrated rate :math:`\delta B`
    (eq. 28-33 with :math:`\Sigma_0 = 0`); ``CLD.kernel`` uses it for a critically damped process."""
    _require_critical(cld)
    b = as_float64_time("delta_B", delta_B)
    xx, xv, vv, _ = _covariance_entries(cld, b, 0.0, 0.0)
    return _mean_map(cld, b, 1.0), _stack2x2(xx, xv, xv, vv)


# -- reverse-time linear part (SSCS) ------------------------------------------------------------------------
def half_step_kernel(cld: CLD, delta_B) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean map and covariance of the time-reversed linear part over an integrated rate :math:`\delta B`
    (eq. 85-90, where :math:`\delta B = \beta\,\delta t/2` for a constant-rate SSCS half-step).

    Over a reverse-time interval :math:`[\tau, \tau + h]` the rate to pass is
    :math:`\delta B = B(T - \tau) - B(T - \tau - h)`; :func:`reverse_linear_kernel` does this from times.

    Parameters
    ----------
    cld:
        A critically damped CLD.
    delta_B:
        Non-negative integrated rate(s), a float or a tensor of any shape.

    Returns
    -------
    (A, S):
        float64 tensors of shape ``delta_B.shape + (2, 2)``:
        :math:`\bar\mu = A\,(\bar x, \bar v)^\top` (eq. 85) and :math:`\bar\Sigma` (eq. 86-90). They equal
        ``cld.reverse_linear_part().kernel(tau + h, tau)``.
    """
    _require_critical(cld)
    b = as_float64_time("delta_B", delta_B)
    if bool((b < 0).any()):
        raise ValueError(f"delta_B must be non-negative, got a minimum of {b.min().item()}")
    xx, xv, vv, _ = _covariance_entries(cld, b, 0.0, 0.0)
    return _mean_map(cld, b, -1.0), _stack2x2(xx, -xv, -xv, vv)


def reverse_linear_kernel(cld: CLD, tau, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Closed form of ``cld.reverse_linear_part().kernel(tau, s)``: the time-reversed linear part
    (:math:`\hat{\mathcal L}^*_A`, eq. 76) from reverse time ``s`` to ``tau >= s``.

    The integrated rate is :math:`\delta B = B(T - s) - B(T - \tau)`, i.e. each (half-)step integrates
    :math:`\beta` over exactly its own forward interval (also for a time-dependent :math:`\beta`).
    Returns ``(A, S)`` as :func:`half_step_kernel`.
    """
    _require_critical(cld)
    tau = check_time("tau", tau, cld.T)
    s = check_time("s", s, cld.T)
    tau, s = torch.broadcast_tensors(tau, s)
    if bool((tau < s).any()):
        raise ValueError("reverse_linear_kernel needs tau >= s")
    delta_B = ReversedRescaling(cld.rescaling, cld.T).increment(tau, s).clamp_min(0.0)
    return half_step_kernel(cld, delta_B)


class ReverseLinearPart(LinearSDE):
    r"""CLD's time-reversed linear part :math:`\hat{\mathcal L}^*_A` (eq. 76, split at the stationary precision)
    with the closed-form kernel of eq. 85-90: what :meth:`splitdyn_cld.process.CLD.reverse_linear_part` returns for a critically
    damped process, so SSCS's exact half-steps use the closed forms (the generic Van Loan kernel of the same
    matrices is the cross-check in the tests)."""

    def __init__(self, cld: CLD) -> None:
        _require_critical(cld)
        P = torch.diag(torch.tensor([1.0, 1.0 / cld.mass], dtype=torch.float64))
        super().__init__(-cld.F - cld.GGt @ P, cld.G, ReversedRescaling(cld.rescaling, cld.T), cld.T)
        self.cld = cld

    def increment_kernel(self, delta):
        return half_step_kernel(self.cld, delta)

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[0]


# -- perturbation kernels, ell and the mixed-score variance ------------------------------------------------------
def _stabilised_entries(cld: CLD, t, kind: str):
    """``(xx', xv, vv', det')`` of Sigma_t + eps_num I for the HSM or DSM kernel, float64."""
    _check_kind(kind)
    _require_cld(cld)
    eps = cld.eps_num
    if is_critically_damped(cld):
        a, b = _diagonal_initial_covariance(cld, kind)
        xx, xv, vv, det = _covariance_entries(cld, _integrated_rate(cld, t), a, b)
    else:  # generic matrix-exponential kernel; the determinant from the entries
        t = check_time("t", t, cld.T)
        Phi, Q = cld.kernel(t)
        S0 = cld.initial_covariance(kind)
        cov = Phi @ S0 @ Phi.transpose(-1, -2) + Q
        xx, xv, vv = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
        det = xx * vv - xv * xv
    return xx + eps, xv, vv + eps, det + eps * (xx + vv) + eps * eps


def perturbation_cholesky(cld: CLD, t, kind: str = "hsm") -> torch.Tensor:
    r"""Lower Cholesky factor :math:`L_t` of :math:`\Sigma_t + \epsilon_{num} I` (eq. 49-50), with
    :math:`L^{vv}_t = 1/\ell_t` from the cancellation-free determinant (float64, ``t.shape + (2, 2)``).

    Raises ``ValueError`` where the factor does not exist (:math:`\epsilon_{num} = 0` and :math:`B(t) = 0`).
    """
    xx, xv, vv, det = _stabilised_entries(cld, t, kind)
    _check_definite(xx, det, cld)
    l11 = xx.sqrt()
    return _stack2x2(l11, torch.zeros_like(l11), xv / l11, (det / xx).sqrt())


def _check_definite(xx: torch.Tensor, det: torch.Tensor, cld: CLD) -> None:
    if bool((xx <= 0).any()) or bool((det <= 0).any()):
        raise ValueError(
            "the perturbation covariance is singular where B(t) = 0 and eps_num = 0 (ell_t is infinite there): "
            f"use t > 0 or eps_num > 0 (CLD eps_num = {cld.eps_num})"
        )


def ell(cld: CLD, t, kind: str = "hsm") -> torch.Tensor:
    r""":math:`\ell_t = \sqrt{\Sigma^{xx}_t / (\Sigma^{xx}_t\Sigma^{vv}_t - (\Sigma^{xv}_t)^2)} = 1/L^{vv}_t` (eq. 52).

    Computed, as in the reference implementation, from :math:`\Sigma_t + \epsilon_{num} I` with
    ``cld.eps_num`` added to :math:`\Sigma^{xx}` and :math:`\Sigma^{vv}`, so that
    :math:`\nabla_{v}\log p_t(u_t \mid \cdot) = -\ell_t\,\varepsilon_v` holds for the kernel that is sampled.
    The stabilised determinant is :math:`\det\Sigma_t + \epsilon_{num}(\Sigma^{xx}_t + \Sigma^{vv}_t) +
    \epsilon_{num}^2`, every term from the closed forms, so :math:`\ell_t` keeps full float64 relative accuracy
    for all :math:`t > 0`.

    Notes
    -----
    Without :math:`\epsilon_{num}` both :math:`\ell^{DSM}_t \approx (Ms)^{-1/2}` and
    :math:`\ell^{HSM}_t \approx \tfrac{\sqrt3}{2}(Ms)^{-1/2}` diverge as :math:`t \to 0` (:math:`s = 2B/\Gamma`;
    for HSM once :math:`s \ll \gamma`, because :math:`x_t - x_0` then reveals :math:`v_0`); the value
    :math:`1/\sqrt{\gamma M}` quoted in App. B.4 is only the :math:`\epsilon_{num}`-regularised limit. With
    :math:`\epsilon_{num} > 0`, :math:`\ell^{HSM}_0 = (\gamma M + \epsilon_{num})^{-1/2}` and :math:`\ell^{HSM}_t`
    stays bounded (its maximum is about 13.3 at :math:`t \approx 1.4 \cdot 10^{-3}` for
    :math:`\epsilon_{num} = 10^{-6}`, 41.8 at :math:`t \approx 1.4 \cdot 10^{-4}` for :math:`10^{-9}`, with the
    paper's :math:`M, \gamma, \beta`), while :math:`\ell^{DSM}_0 = \epsilon_{num}^{-1/2}`.

    Parameters
    ----------
    cld:
        The CLD (a non-critical friction falls back to the generic kernel).
    t:
        Time(s) in ``[0, T]``, a float or a tensor of any shape.
    kind:
        ``"hsm"`` (:math:`\Sigma_0 = \mathrm{diag}(0, \gamma M)`) or ``"dsm"`` (:math:`\Sigma_0 = 0`).

    Returns
    -------
    torch.Tensor
        float64 of shape ``t.shape``; cast to the network's dtype at use (finite in float32 for
        :math:`t \ge 10^{-8}` even with :math:`\epsilon_{num} = 0`).
    """
    xx, _, _, det = _stabilised_entries(cld, t, kind)
    _check_definite(xx, det, cld)
    return (xx / det).sqrt()


def velocity_variance(cld: CLD, t, kind: str = "hsm") -> torch.Tensor:
    r""":math:`\Sigma^{vv}_t + \epsilon_{num}` of the HSM (default) or DSM kernel (float64, shape ``t.shape``).

    The mixed score (Sec. 3.2, :class:`~splitdyn_cld.score.MixedScore`) uses the HSM value: the v-v entry of
    the covariance of :math:`p_t(u_t \mid x_0 = 0)` with :math:`\Sigma_0 = \mathrm{diag}(0, \gamma M)`,

    .. math::

        \Sigma^{vv}_t = M\big(E + 4 s e^{-z}\big) + \gamma M\,e^{-z}(1 - s)^2,

    from :math:`\gamma M` at :math:`t = 0` to :math:`M` at equilibrium. As in the reference implementation it
    includes ``cld.eps_num`` (a relative change of at most :math:`\epsilon_{num}/(\gamma M)`, ``1e-4`` with the
    toy settings).
    """
    return _stabilised_entries(cld, t, kind)[2]


# -- the mixed score's coefficients at sampling speed -------------------------------------------------------------
def _scalar_tails(z: float) -> tuple[float, float, float]:
    """:func:`_exp_tails` for one Python float (the same branches and expressions, evaluated with :mod:`math`)."""
    w = math.exp(-z)
    if z < SERIES_SWITCH:
        acc = 1.0
        for n in range(4 + _SERIES_TERMS, 4, -1):
            acc = 1.0 + z / n * acc
        tail4 = z**4 / 24.0 * acc
        return w, w * (z**3 / 6.0 + tail4), w * (z**3 / 24.0 + tail4)
    E = -math.expm1(-z) - w * (z + 0.5 * z * z)
    return w, E, E - w * z**3 / 8.0


def _tensor_tails(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r""":func:`_exp_tails` in a few tensor operations on ``z``'s device, without host synchronisation: the series
    :math:`1 + \sum_{k\ge1} z^k\,4!/(k+4)!` is one power-and-sum over :math:`k` (positive terms, coefficients
    from a cumulative product formed on the device) instead of a Horner loop of ``_SERIES_TERMS`` operations."""
    w = torch.exp(-z)
    E_direct = -torch.expm1(-z) - w * (z + 0.5 * z * z)
    use_series = z < SERIES_SWITCH
    zs = torch.where(use_series, z, torch.zeros_like(z))
    k = torch.arange(1, _SERIES_TERMS + 1, dtype=z.dtype, device=z.device)
    coefficients = torch.cumprod(1.0 / (k + 4.0), 0)  # 4! / (k + 4)!
    tail4 = zs**4 / 24.0 * (1.0 + (zs.unsqueeze(-1) ** k * coefficients).sum(-1))
    E = torch.where(use_series, w * (zs**3 / 6.0 + tail4), E_direct)
    Gt = torch.where(use_series, w * (zs**3 / 24.0 + tail4), E_direct - w * z**3 / 8.0)
    return w, E, Gt


def _scalar_integrated_rate(cld: CLD, t: float) -> float:
    rate = cld.rescaling
    if isinstance(rate, ConstantBeta):
        return rate.value * t
    if isinstance(rate, LinearBeta):
        return rate.beta_min * t + 0.5 * (rate.beta_max - rate.beta_min) * t * t / rate.T
    return float(rate.integral(torch.tensor(t, dtype=torch.float64)))


def _tensor_integrated_rate(cld: CLD, t: torch.Tensor) -> torch.Tensor | None:
    """:math:`B(t)` on ``t``'s device for the rates with a closed form here; ``None`` for any other rescaling."""
    rate = cld.rescaling
    if isinstance(rate, ConstantBeta):
        return rate.value * t
    if isinstance(rate, LinearBeta):
        return rate.beta_min * t + 0.5 * (rate.beta_max - rate.beta_min) * t * t / rate.T
    return None


def score_coefficients(cld: CLD, t, kind: str = "hsm"):
    r""":math:`(\ell_t, \Sigma^{vv}_t + \epsilon_{num})` for the mixed score, computed where ``t`` lives.

    :math:`\ell_t` is the ``kind`` kernel's (:func:`ell`), :math:`\Sigma^{vv}_t` the HSM kernel's
    (:func:`velocity_variance`), as :class:`~splitdyn_cld.score.MixedScore` uses them. The values are those
    of :func:`ell` and :func:`velocity_variance` (the same closed forms with the same series branch near
    :math:`t = 0`; equal to a relative ``1e-12`` in float64 for all :math:`t \in (0, T]`), but cheap enough to
    recompute at every score call:

    - a Python number ``t`` gives two Python floats, evaluated with :mod:`math` (no tensor, no device work: a
      few microseconds);
    - a float tensor ``t`` (any shape, any device) gives two float64 tensors of ``t``'s shape on ``t``'s device,
      from a fixed sequence of tensor operations without Python control flow on the values and without a
      host synchronisation, so it can be traced by ``torch.compile`` and captured in a CUDA graph. On the CPU,
      outside ``torch.compile``, ``t`` is checked to be finite and in ``[0, T]`` as everywhere else; on an
      accelerator it is not (the check would synchronise): a time out of range gives non-finite coefficients
      there.

    A process that is not critically damped, or a rate other than :class:`~splitdyn.ConstantBeta` and
    :class:`~splitdyn.LinearBeta` given a tensor ``t``, falls back to the host computation of :func:`ell`
    (then copied to ``t``'s device).

    Parameters
    ----------
    cld:
        The CLD.
    t:
        A time in ``[0, T]`` (Python number) or a float tensor of times.
    kind:
        ``"hsm"`` or ``"dsm"``: the kernel whose :math:`\ell_t` is returned.

    Returns
    -------
    (ell_t, var_vv):
        Python floats for a number ``t``; float64 tensors of ``t``'s shape on ``t``'s device otherwise.

    Examples
    --------
    >>> import torch
    >>> from splitdyn_cld import CLD
    >>> from splitdyn_cld.kernels import ell, score_coefficients
    >>> cld = CLD()
    >>> l, v = score_coefficients(cld, 0.3)
    >>> abs(l - ell(cld, 0.3).item()) <= 1e-12 * l
    True
    >>> score_coefficients(cld, torch.tensor([0.1, 0.9]))[0].dtype
    torch.float64
    """
    _check_kind(kind)
    _require_cld(cld)
    critical = is_critically_damped(cld)
    if isinstance(t, Real) and not isinstance(t, bool):
        time = float(t)
        if not 0.0 <= time <= cld.T:  # NaN too; check_time allows a 1e-12 relative slack above T and below 0
            check_time("t", time, cld.T)
        if not critical:
            return ell(cld, time, kind).item(), velocity_variance(cld, time).item()
        z = 4.0 * _scalar_integrated_rate(cld, time) / cld.friction
        xx, det, var_vv = _stabilised_ell_terms(cld, z, _scalar_tails(z), kind)
        if xx <= 0.0 or det <= 0.0:
            _check_definite(torch.tensor(xx), torch.tensor(det), cld)
        return math.sqrt(xx / det), var_vv
    if isinstance(t, torch.Tensor) and t.is_floating_point():
        times = t.detach().to(torch.float64)
    else:
        times = as_float64_time("t", t)  # refuses what is not a real time, with the usual message
    checked = times.device.type == "cpu" and not torch.compiler.is_compiling()
    if checked:
        check_time("t", times, cld.T)
    B = _tensor_integrated_rate(cld, times) if critical else None
    if B is None:
        host = times.cpu()
        return ell(cld, host, kind).to(times.device), velocity_variance(cld, host).to(times.device)
    zt = 4.0 * B / cld.friction
    xx, det, var_vv = _stabilised_ell_terms(cld, zt, _tensor_tails(zt), kind)
    if checked:
        _check_definite(xx, det, cld)
    return (xx / det).sqrt(), var_vv


def _stabilised_ell_terms(cld: CLD, z, tails, kind: str):
    """``(xx', det', vv_hsm')``: the ``kind`` kernel's stabilised xx entry and determinant (as
    :func:`_stabilised_entries`) and the HSM kernel's stabilised v-v entry, from ``z`` and its tails (tensors
    or Python floats)."""
    w, E, Gt = tails
    s = 0.5 * z
    eps = cld.eps_num
    xx, _, vv_hsm, det = _entries_from_tails(cld, s, w, E, Gt, 0.0, cld.gamma * cld.mass)
    vv = vv_hsm
    if kind == "dsm":
        xx, _, vv, det = _entries_from_tails(cld, s, w, E, Gt, 0.0, 0.0)
    return xx + eps, det + eps * (xx + vv) + eps * eps, vv_hsm + eps
