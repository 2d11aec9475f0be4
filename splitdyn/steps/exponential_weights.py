r"""Float64 coefficients of exponential integrators for linear SDEs: the plan-time host work.

Notation (forward time :math:`t`; per coordinate, ``k`` components): the forward SDE
:math:`du = F(t)u\,dt + G(t)\,dw` starts from :math:`u_0 = (x_0, v_0)` with :math:`v_0 \sim \mathcal N(0, C)`
independent of :math:`x_0`, :math:`\Sigma_0 = \mathrm{blockdiag}(0, C)`. Given :math:`x_0`,

.. math::

    u_t \mid x_0 \sim \mathcal N(\varphi_t x_0,\ \Sigma_t),\qquad \varphi_t = \Phi(t, 0)e_0,\qquad
    \Sigma_t = \Phi(t, 0)\Sigma_0\Phi(t, 0)^\top + Q(t, 0),

and for any data law the score is :math:`\nabla\log p_t(u) = -\Sigma_t^{-1}(u - \varphi_t\hat x_0(u, t))`
with :math:`\hat x_0 = E[x_0 \mid u_t = u]` (Tweedie). From the score components :math:`c` alone (CLD: the
velocity's) :math:`\hat x_0 = a_c^\top(s_c + (\Sigma_t^{-1}u)_c)/a_c^\top a_c`, :math:`a = \Sigma_t^{-1}\varphi_t`
(:meth:`DiffusionGeometry.tweedie`).

The probability-flow ODE is :math:`\dot u = A(t)u - \tfrac12 GG^\top\Sigma_t^{-1}\varphi_t\hat x_0` with
:math:`A = F + \tfrac12 GG^\top\Sigma_t^{-1}`; its linear part moves from :math:`t` to :math:`s` by
:math:`R_sR_t^{-1}`, where :math:`\dot R = AR` and :math:`RR^\top = \Sigma` (:meth:`DiffusionGeometry.factor`,
:math:`R = LU` with :math:`L` the Cholesky factor and :math:`U` orthogonal, integrated in :math:`\log t` by
fourth-order Magnus steps, so :math:`RR^\top = \Sigma` holds to rounding). The reverse SDE's linear part
:math:`F + GG^\top\Sigma_t^{-1}` moves by the closed form :math:`\Sigma_s\Phi(t, s)^\top\Sigma_t^{-1}`.

Weights of a Lagrange polynomial :math:`\sum_j \ell_j(\tau)\hat x_0^{(j)}` through the last nodes are
integrals :math:`w_j = \int_t^s K(s, \tau)\,b(\tau)\,\ell_j(\tau)\,d\tau`, computed by composite
Gauss-Legendre quadrature in :math:`\log\tau` (:func:`log_quadrature`), where :math:`\Sigma_\tau` is nearly
singular near the cutoff.
"""

from __future__ import annotations

import math

import torch

from ..checks import as_float64, as_float64_time, check_components, check_count, check_positive
from ..linear_sde import LinearSDEBase

__all__ = [
    "DiffusionGeometry",
    "log_quadrature",
    "lagrange_basis",
    "interpolation_variable",
    "cumulative_products",
    "GAUSS_NODES",
    "PANEL_WIDTH",
    "MAGNUS_STEP",
]

#: Gauss-Legendre nodes per quadrature panel.
GAUSS_NODES = 12
#: Largest quadrature panel, in :math:`\log t`.
PANEL_WIDTH = 0.25
#: Largest Magnus step for the factor :math:`R`, in :math:`\log t`.
MAGNUS_STEP = 0.005

F64 = torch.float64


class DiffusionGeometry:
    r"""The float64 Gaussian geometry of a linear SDE given :math:`x_0`: :math:`\varphi_t`, :math:`\Sigma_t`,
    the Tweedie maps and the factor :math:`R_t`.

    Parameters
    ----------
    sde:
        A :class:`~splitdyn.linear_sde.LinearSDEBase`; the data is component 0.
    initial_covariance:
        :math:`\Sigma_0`, ``(k, k)`` with a zero first row and column (CLD: ``cld.initial_covariance("hsm")``).
        Default: ``sde.initial_covariance()`` when the SDE defines it, else zero.
    score_components:
        The components :math:`c` the score returns (default all).
    """

    def __init__(self, sde: LinearSDEBase, initial_covariance=None, score_components=None) -> None:
        if not isinstance(sde, LinearSDEBase):
            raise TypeError(f"sde must be a splitdyn.LinearSDEBase (a linear SDE), got {type(sde).__name__}")
        k = int(sde.num_components)
        if initial_covariance is None:
            getter = getattr(sde, "initial_covariance", None)
            initial_covariance = getter() if callable(getter) else torch.zeros(k, k, dtype=F64)
        S0 = as_float64("initial_covariance", initial_covariance)
        if tuple(S0.shape) != (k, k):
            raise ValueError(f"initial_covariance must have shape ({k}, {k}), got {tuple(S0.shape)}")
        if bool(S0[0].any()) or bool(S0[:, 0].any()):
            raise ValueError("initial_covariance must have a zero first row and column (x_0 is conditioned on)")
        if not torch.allclose(S0, S0.T, rtol=1e-12, atol=0.0):
            raise ValueError(f"initial_covariance must be symmetric, got {S0.tolist()}")
        if k > 1 and bool((torch.linalg.eigvalsh(S0[1:, 1:]) < 0).any()):
            raise ValueError(f"initial_covariance must be positive semi-definite, got {S0.tolist()}")
        self.sde = sde
        self.k = k
        self.T = float(sde.T)
        self.initial_covariance = S0
        self.components = (list(range(k)) if score_components is None
                           else check_components("score_components", score_components, k))

    # -- marginals -------------------------------------------------------------------------------------
    def marginal(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\varphi_t, \Sigma_t)` of shapes ``t.shape + (k,)`` and ``t.shape + (k, k)``."""
        t = as_float64_time("t", t)
        Phi, Q = self.sde.kernel(t)
        Sigma = Phi @ self.initial_covariance @ Phi.transpose(-1, -2) + Q
        return Phi[..., :, 0], 0.5 * (Sigma + Sigma.transpose(-1, -2))

    def precision(self, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r""":math:`(\varphi_t, \Sigma_t, \Sigma_t^{-1})`."""
        phi, Sigma = self.marginal(t)
        return phi, Sigma, torch.cholesky_inverse(torch.linalg.cholesky(Sigma))

    def tweedie(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Rows :math:`D_t` (``(..., 1, k)``) and :math:`E_t` (``(..., 1, c)``) with :math:`\hat x_0 = D_t u + E_t s_c`."""
        phi, _, P = self.precision(t)
        c = self.components
        a = (P @ phi[..., None])[..., c, :]  # (..., c, 1)
        w = a / (a * a).sum(-2, keepdim=True)
        return w.transpose(-1, -2) @ P[..., c, :], w.transpose(-1, -2)

    def drift(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`F(t)` and :math:`GG^\top(t)`."""
        t = as_float64_time("t", t)
        return self.sde.drift_matrix(t), self.sde.diffusion_covariance(t)

    # -- the factor R ------------------------------------------------------------------------------------
    def _skew_rate(self, log_t: torch.Tensor) -> torch.Tensor:
        """:math:`t\\,S(t)` with :math:`S` the skew generator of :math:`U` (``dU/d\\log t = tSU``)."""
        t = log_t.exp().clamp_max(self.T)
        _, Sigma, P = self.precision(t)
        F, GGt = self.drift(t)
        L = torch.linalg.cholesky(Sigma)
        A = F + 0.5 * GGt @ P
        M = torch.linalg.solve_triangular(L, A @ L, upper=False)
        upper = torch.triu(M, diagonal=1)
        return t[..., None, None] * (upper - upper.transpose(-1, -2))

    def factor(self, t) -> torch.Tensor:
        r""":math:`R_t` with :math:`\dot R = (F + \tfrac12GG^\top\Sigma^{-1})R`, :math:`RR^\top = \Sigma`, :math:`R_T = \mathrm{chol}(\Sigma_T)`.

        ``t`` is a float64 tensor of forward times in :math:`(0, T]`; returns ``t.shape + (k, k)``.
        """
        t = as_float64_time("t", t)
        if bool((t <= 0).any()) or bool((t > self.T * (1 + 1e-12)).any()):
            raise ValueError(f"factor needs forward times in (0, T = {self.T}]")
        _, Sigma = self.marginal(t.clamp_max(self.T))
        L = torch.linalg.cholesky(Sigma)
        if self.k == 1:
            return L
        flat = t.reshape(-1).clamp_max(self.T)
        knots, inverse = torch.unique(torch.cat([flat, torch.tensor([self.T], dtype=F64)]), return_inverse=True)
        knots = knots.flip(0).log()  # decreasing log t from log T
        inverse = (len(knots) - 1 - inverse)[:-1]
        gaps = knots[1:] - knots[:-1]
        pieces = torch.ceil(gaps.abs() / MAGNUS_STEP).clamp_min(1).to(torch.long)
        starts = torch.repeat_interleave(knots[:-1], pieces)
        h = torch.repeat_interleave(gaps / pieces, pieces)
        first = torch.repeat_interleave(torch.cumsum(pieces, 0) - pieces, pieces)
        offsets = (torch.arange(int(pieces.sum()), dtype=torch.long) - first).to(F64)
        a = starts + offsets * h
        c = math.sqrt(3.0) / 6.0
        S1, S2 = self._skew_rate(a + (0.5 - c) * h), self._skew_rate(a + (0.5 + c) * h)
        hh = h[:, None, None]
        omega = 0.5 * hh * (S1 + S2) + (math.sqrt(3.0) / 12.0) * hh**2 * (S2 @ S1 - S1 @ S2)
        products = cumulative_products(torch.linalg.matrix_exp(omega))
        U = torch.cat([torch.eye(self.k, dtype=F64)[None], products[torch.cumsum(pieces, 0) - 1]])[inverse]
        return L @ U.reshape(*t.shape, self.k, self.k)


def cumulative_products(steps: torch.Tensor) -> torch.Tensor:
    """``C[j] = steps[j] @ ... @ steps[0]`` for ``(N, k, k)`` matrices, by recursive doubling (log N batched
    products instead of N sequential ones)."""
    C, d = steps, 1
    while d < len(C):
        C = torch.cat([C[:d], C[d:] @ C[:-d]])
        d *= 2
    return C


def log_quadrature(t_from: torch.Tensor, t_to: torch.Tensor, width: float = PANEL_WIDTH,
                   nodes: int = GAUSS_NODES) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Composite Gauss-Legendre rules for :math:`\int_{t_\text{from}}^{t_\text{to}} f(\tau)\,d\tau` in :math:`\log\tau`.

    Returns nodes :math:`\tau` and signed weights (the Jacobian :math:`\tau` included), shape ``(n, P)``;
    every interval gets panels of at most ``width`` in :math:`\log\tau` (padding has zero weight).
    """
    width, nodes = check_positive("width", width), check_count("nodes", nodes)
    t_from, t_to = as_float64_time("t_from", t_from).reshape(-1), as_float64_time("t_to", t_to).reshape(-1)
    if t_from.shape != t_to.shape or bool((t_from <= 0).any()) or bool((t_to <= 0).any()):
        raise ValueError("t_from and t_to must be positive times of the same shape (n,)")
    a, b = t_from.log(), t_to.log()
    panels = torch.ceil((b - a).abs() / width).clamp_min(1).to(torch.long)
    x, w = _gauss_legendre(nodes)
    j = torch.arange(int(panels.max()), dtype=F64)  # panel index, (J,); panels j >= p_i are padding
    p = panels.to(F64)[:, None]
    lower = a[:, None] + (b - a)[:, None] * j / p
    upper = a[:, None] + (b - a)[:, None] * (j + 1) / p
    mid, half = 0.5 * (upper + lower), 0.5 * (upper - lower)  # (n, J)
    ell = mid[..., None] + half[..., None] * x  # (n, J, nodes)
    used = (j < p)[..., None].expand_as(ell)
    tau = torch.where(used, ell.exp(), t_to[:, None, None]).reshape(len(a), -1)
    weight = torch.where(used, half[..., None] * w * ell.exp(), torch.zeros((), dtype=F64)).reshape(len(a), -1)
    return tau, weight


def _gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights on [-1, 1] (Golub-Welsch, float64)."""
    k = torch.arange(1, n, dtype=F64)
    beta = k / torch.sqrt(4 * k**2 - 1)
    J = torch.diag(beta, 1) + torch.diag(beta, -1)
    x, V = torch.linalg.eigh(J)
    return x, 2 * V[0] ** 2


def lagrange_basis(nodes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\ell_j(x) = \prod_{m \ne j}(x - x_m)/(x_j - x_m)` for nodes ``(n, q)`` and points ``(n, P)``: ``(n, q, P)``."""
    q = nodes.shape[-1]
    out = torch.ones(nodes.shape[0], q, x.shape[-1], dtype=F64)
    for j in range(q):
        for m in range(q):
            if m != j:
                out[:, j] *= (x - nodes[:, m, None]) / (nodes[:, j, None] - nodes[:, m, None])
    return out


def interpolation_variable(sde, variable: str):
    r"""The variable the Lagrange polynomial of :math:`\hat x_0` is built in: ``"time"`` (:math:`t`) or
    ``"log_snr"`` (:math:`\lambda(t) = \log(\alpha/\sigma)`, processes with ``log_snr``; DPM-Solver++)."""
    if variable == "time":
        return lambda t: t
    if variable == "log_snr":
        if not callable(getattr(sde, "log_snr", None)):
            raise TypeError(f"interpolation='log_snr' needs a process with log_snr(t) (e.g. VPSDE), got {type(sde).__name__}")
        return lambda t: sde.log_snr(t)
    raise ValueError(f"interpolation must be 'time' or 'log_snr', got {variable!r}")
