r"""Exponential integrators with data prediction for the reverse dynamics of any linear SDE.

With the notation of ``splitdyn.steps.exponential_weights`` (:math:`\varphi_t`, :math:`\Sigma_t`, the
Tweedie estimate :math:`\hat x_0`, the factor :math:`R_t`), a step from forward time :math:`t` to
:math:`s < t` is

.. math::

    u_s = K(s, t)\,u_t + \sum_{j=0}^{q-1} w_j\,\hat x_0^{(j)} \;[+\; L\xi],\qquad
    w_j = \int_t^s K(s, \tau)\,b(\tau)\,\ell_j(\tau)\,d\tau,

where :math:`\hat x_0^{(j)}` is the estimate at the ``j``-th last grid node (multistep; lower order during
warm-up) and :math:`\ell_j` its Lagrange basis polynomial in :math:`t` or in the log-SNR :math:`\lambda`:

- :class:`ExponentialODE` (probability flow): :math:`K = R_sR_t^{-1}`,
  :math:`b = -\tfrac12GG^\top\Sigma^{-1}\varphi`; for the VP SDE with ``interpolation="log_snr"`` this is
  DPM-Solver++ (1, 2M, 3M; Lu et al. 2022), the 2M variant being the exact integral of the linear
  interpolant (the reference code's ``solver_type="taylor"``, diffusers' ``"heun"``) or, with
  ``linear_rule="bh2"``, the ``"midpoint"`` form (:func:`linear_rule_weights`: UniPC's two-node rules, for
  any ``k``).
- :class:`ExponentialSDE` (reverse SDE): :math:`K = \Sigma_s\Phi(t, s)^\top\Sigma_t^{-1}`,
  :math:`b = -GG^\top\Sigma^{-1}\varphi`, and noise with the posterior covariance
  :math:`P = (I - K\Phi(t,s))\Sigma_s(I - K\Phi(t,s))^\top + KQ(t,s)K^\top`: at order 1 the exact
  posterior step :math:`q(u_s \mid u_t, x_0 = \hat x_0)` (DDPM's ancestral step for VP).
- :class:`NoiseExponentialODE` (gDDIM, Zhang et al. 2023): the noise :math:`\varepsilon = R_t^{-1}(u -
  \varphi_t\hat x_0)` is extrapolated instead, :math:`K = \Phi(s, t)`, matrix weights
  :math:`W_j = \int_t^s \Phi(s,\tau)\tfrac12GG^\top R_\tau^{-\top}\ell_j\,d\tau`. With the factor
  :math:`R` the noise is constant along the exact flow of a single data point; the Cholesky factor
  (``factor="cholesky"``) rotates it, and the scheme loses its accuracy.

All weights are computed once per grid in float64 and stored in the plan; the plan keeps the history of
:math:`\hat x_0` (reset at step 0) and makes one score evaluation per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..checks import check_count
from .base import AffineMap, Intervals, Plan, Step, kron_identity
from .exponential_weights import DiffusionGeometry, interpolation_variable, lagrange_basis, log_quadrature

if TYPE_CHECKING:  # pragma: no cover
    from ..reverse import ReverseSDE

__all__ = ["ExponentialODE", "ExponentialSDE", "NoiseExponentialODE", "exponential_tables", "lagrange_weights",
           "linear_rule_weights", "check_linear_rule", "check_linear_reverse", "weight_integrand", "LINEAR_RULES"]

F64 = torch.float64


def check_linear_reverse(reverse):
    """``reverse`` if it is a reverse SDE (or probability flow) of a linear forward SDE; else a TypeError."""
    for attr in ("sde", "evaluate_score", "score_components", "T"):
        if not hasattr(reverse, attr):
            raise TypeError(f"reverse must be a splitdyn.ReverseSDE (or ProbabilityFlowODE), got {type(reverse).__name__}")
    if not getattr(reverse, "linear", False):
        raise TypeError(f"exponential integrators need a linear forward SDE, got {type(reverse.sde).__name__}")
    return reverse


def weight_integrand(kind: str, geometry: DiffusionGeometry, s: torch.Tensor, tau: torch.Tensor, factor: str,
                     factors: torch.Tensor | None = None):
    """Left factor ``(n, k, k)`` and integrand values ``(n, P, k, m)`` of the weights (see the module docstring).

    ``factors``: :math:`R` at ``torch.cat([s, tau.reshape(-1)])`` if already computed (one integration of
    :meth:`~splitdyn.steps.exponential_weights.DiffusionGeometry.factor` serves a whole plan)."""
    sde = geometry.sde
    n, P = tau.shape
    if factors is None and (kind == "ode" or (kind == "noise" and factor == "R")):
        factors = geometry.factor(torch.cat([s, tau.reshape(-1)]))
    phi, Sigma, Prec = geometry.precision(tau)
    _, GGt = geometry.drift(tau)
    if kind == "ode":
        assert factors is not None
        b = -0.5 * GGt @ Prec @ phi[..., None]
        return factors[:n], torch.linalg.solve(factors[n:].reshape(n, P, *factors.shape[1:]), b)
    Phi_tau_s = sde.transition_matrix(tau, s[:, None].expand(n, P))
    if kind == "sde":
        _, Sigma_s = geometry.marginal(s)
        b = -GGt @ Prec @ phi[..., None]
        return Sigma_s, Phi_tau_s.transpose(-1, -2) @ (Prec @ b)
    if factor == "R":
        assert factors is not None
        K = factors[n:].reshape(n, P, geometry.k, geometry.k)
    else:
        K = torch.linalg.cholesky(Sigma)
    eye = torch.eye(geometry.k, dtype=F64).expand(n, -1, -1)
    return eye, torch.linalg.solve(Phi_tau_s, 0.5 * GGt @ torch.linalg.inv(K).transpose(-1, -2))


#: The rules for the weights of two-node steps (:func:`linear_rule_weights`).
LINEAR_RULES = ("exact", "bh1", "bh2")


def check_linear_rule(rule: str, kind: str = "ode") -> str:
    """``rule`` if it is one of :data:`LINEAR_RULES` (``"bh1"``/``"bh2"`` for ``kind="ode"`` only)."""
    if rule not in LINEAR_RULES:
        raise ValueError(f"linear_rule must be one of {LINEAR_RULES}, got {rule!r}")
    if rule != "exact" and kind != "ode":
        raise ValueError(f"linear_rule={rule!r} applies to the probability-flow ODE with data prediction only")
    return rule


def lagrange_weights(left: torch.Tensor, values: torch.Tensor, omega: torch.Tensor, tau: torch.Tensor, rho,
                     nodes: list[torch.Tensor], width: int) -> torch.Tensor:
    r"""Weights :math:`w_j = \text{left}_i\int \ell_j(\rho(\tau))\,\text{values}_i(\tau)\,d\tau` of the
    Lagrange basis through the node times ``nodes[i]`` (``(q_i,)``, any order) of each step, by the quadrature
    ``(tau, omega)``; ``(n, width, k, m)``, zero beyond each step's ``q_i`` nodes. Batched over the steps with
    the same number of nodes."""
    n = tau.shape[0]
    k, m = values.shape[-2], values.shape[-1]
    W = torch.zeros(n, width, k, m, dtype=F64)
    sizes = torch.tensor([len(x) for x in nodes], dtype=torch.long)
    for q in sizes.unique().tolist():
        rows = (sizes == q).nonzero().flatten()
        node_rho = rho(torch.stack([nodes[i] for i in rows.tolist()]))  # (r, q)
        basis = lagrange_basis(node_rho, rho(tau[rows]))  # (r, q, P)
        W[rows, :q] = left[rows][:, None] @ torch.einsum("rp,rjp,rpkm->rjkm", omega[rows], basis, values[rows])
    return W


def _rho_rate(geometry: DiffusionGeometry, variable: str, t: torch.Tensor) -> torch.Tensor:
    r""":math:`d\rho/dt`: 1 for ``"time"``; for ``"log_snr"`` (``k = 1``, :math:`\lambda = \log(\varphi/\sqrt\Sigma)`)
    :math:`\dot\lambda = F - \dot\Sigma/2\Sigma = -g^2/2\Sigma`."""
    if variable == "time":
        return torch.ones_like(t)
    _, Sigma = geometry.marginal(t)
    _, GGt = geometry.drift(t)
    return -0.5 * GGt[..., 0, 0] / Sigma[..., 0, 0]


def linear_rule_weights(rule: str, geometry: DiffusionGeometry, variable: str, left: torch.Tensor,
                        values: torch.Tensor, omega: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                        other: torch.Tensor) -> torch.Tensor:
    r"""UniPC's two-node weights ``(n, 2, k, 1)`` of a probability-flow step :math:`t \to s` on the estimates at
    :math:`t` (first) and at ``other`` (a previous node, or :math:`s` itself for the corrector).

    With :math:`h = \rho_s - \rho_t` in the interpolation variable :math:`\rho`, the linear interpolant
    :math:`\hat x_0(\rho) = m_0 + \frac{\rho - \rho_t}{h}D` with :math:`D = (m_1 - m_0)/r`,
    :math:`r = (\rho_\text{other} - \rho_t)/h`, integrates to :math:`w\,m_0 + w_D D` with the total weight
    :math:`w = \int_t^s K(s,\tau)b(\tau)\,d\tau` (order 1's) and :math:`w_D = \int_t^s K(s,\tau)b(\tau)
    \frac{\rho(\tau) - \rho_t}{h}\,d\tau` (``"exact"``). UniPC (Zhao et al. 2023) replaces :math:`w_D` by
    :math:`\tfrac12 B`, the integral with the weight frozen (a consistent change: :math:`D = O(h)` and
    :math:`w_D - \tfrac12 B = O(h^2)`):

    - ``"bh2"``: :math:`B = w`, the polynomial's mean over the step (:math:`B(h) = e^h - 1` for VP; this is
      DPM-Solver++(2M)'s ``"midpoint"`` form);
    - ``"bh1"``: :math:`B = h\,b(s)/\dot\rho(s)`, the weight density in :math:`\rho` frozen at the end
      point (:math:`B(h) = h` for VP, where :math:`b(s)/\dot\lambda(s) = \alpha_s`).
    """
    check_linear_rule(rule)
    rho = interpolation_variable(geometry.sde, variable)
    w = left @ torch.einsum("rp,rpkm->rkm", omega, values)
    h = rho(s) - rho(t)
    if rule == "bh2":
        B = w
    else:
        phi, _, Prec = geometry.precision(s)
        _, GGt = geometry.drift(s)
        b = -0.5 * GGt @ Prec @ phi[..., None]
        B = (h / _rho_rate(geometry, variable, s))[:, None, None] * b
    r = ((rho(other) - rho(t)) / h)[:, None, None]
    return torch.stack([w - 0.5 * B / r, 0.5 * B / r], 1)


def exponential_tables(kind: str, geometry: DiffusionGeometry, t: torch.Tensor, s: torch.Tensor, order: int,
                       variable: str = "time", factor: str = "R",
                       linear_rule: str = "exact") -> dict[str, torch.Tensor]:
    r"""Float64 tables of an exponential integrator over the steps :math:`t_i \to s_i` (forward times, a grid).

    Parameters
    ----------
    kind:
        ``"ode"`` (data prediction, probability flow), ``"sde"`` (data prediction, reverse SDE) or ``"noise"``
        (gDDIM's noise prediction, probability flow).
    geometry:
        The :class:`~splitdyn.steps.exponential_weights.DiffusionGeometry` of the forward SDE.
    t, s:
        Float64 ``(n,)`` forward times with ``s[i] < t[i]`` and ``t[i + 1] = s[i]`` (the history nodes of step
        ``i`` are ``t[i], t[i - 1], ...``).
    order:
        The polynomial order ``q`` (1, 2 or 3); step ``i`` uses ``min(q, i + 1)`` nodes.
    variable, factor:
        The interpolation variable (``"time"``, ``"log_snr"``) and, for ``kind="noise"``, the factor of the
        noise (``"R"`` or ``"cholesky"``).
    linear_rule:
        The weights of the steps that use two nodes (``kind="ode"`` only): ``"exact"`` (the integral of the
        linear interpolant) or UniPC's ``"bh1"`` / ``"bh2"`` (see :func:`linear_rule_weights`; ``"bh2"`` is
        DPM-Solver++(2M)'s ``"midpoint"`` form).

    Returns
    -------
    dict
        ``"K"`` ``(n, k, k)`` (the linear part), ``"W"`` ``(n, q, k, m)`` (zero beyond each step's nodes),
        ``"noise"`` ``(n, k, k)`` (a factor of the SDE's posterior covariance, zero for the ODEs),
        ``"history"`` the rows ``(D, E)`` mapping ``(u_t, s_c)`` to :math:`\hat x_0` (``m = 1``) or
        :math:`\varepsilon` (``m = k``).
    """
    if kind not in ("ode", "sde", "noise"):
        raise ValueError(f"kind must be 'ode', 'sde' or 'noise', got {kind!r}")
    if not isinstance(geometry, DiffusionGeometry):
        raise TypeError(f"geometry must be a DiffusionGeometry, got {type(geometry).__name__}")
    check_linear_rule(linear_rule, kind)
    order = check_count("order", order)
    n, k = len(t), geometry.k
    rho = interpolation_variable(geometry.sde, variable)
    tau, omega = log_quadrature(t, s)
    R_all = None  # R at s, tau and t from one integration
    if kind == "ode" or (kind == "noise" and factor == "R"):
        R_all = geometry.factor(torch.cat([s, tau.reshape(-1), t]))
    left, values = weight_integrand(kind, geometry, s, tau, factor, None if R_all is None else R_all[:-n])
    nodes = [t[max(0, i - order + 1): i + 1].flip(0) for i in range(n)]  # t_i, t_{i-1}, ... (warm-up: fewer)
    W = lagrange_weights(left, values, omega, tau, rho, nodes, order)
    if linear_rule != "exact":
        two = [i for i in range(n) if len(nodes[i]) == 2]
        if two:
            W[two, :2] = linear_rule_weights(linear_rule, geometry, variable, left[two], values[two], omega[two],
                                             t[two], s[two], t[[i - 1 for i in two]])
    phi_t, Sigma_t = geometry.marginal(t)
    D, E = geometry.tweedie(t)
    noise = torch.zeros(n, k, k, dtype=F64)
    if kind == "ode":
        assert R_all is not None
        R_t, R_s = R_all[-n:], R_all[:n]
        K = torch.linalg.solve(R_t.transpose(-1, -2), R_s.transpose(-1, -2)).transpose(-1, -2)
    else:
        Phi, Q = geometry.sde.kernel(t, s)
        if kind == "sde":
            _, Sigma_s = geometry.marginal(s)
            K = Sigma_s @ Phi.transpose(-1, -2) @ torch.cholesky_inverse(torch.linalg.cholesky(Sigma_t))
            I_KPhi = torch.eye(k, dtype=F64) - K @ Phi
            P = I_KPhi @ Sigma_s @ I_KPhi.transpose(-1, -2) + K @ Q @ K.transpose(-1, -2)
            noise = _psd_factor(0.5 * (P + P.transpose(-1, -2)))
        else:
            K = torch.linalg.inv(Phi)
            F = torch.linalg.cholesky(Sigma_t) if R_all is None else R_all[-n:]
            Finv = torch.linalg.inv(F)
            D, E = Finv @ (torch.eye(k, dtype=F64) - phi_t[..., None] @ D), -Finv @ phi_t[..., None] @ E
    return {"K": K, "W": W, "noise": noise, "history": (D, E)}


def _psd_factor(P: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(P)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt())


class _ExponentialPlan(Plan):
    def __init__(self, step: "_ExponentialStep", intervals: Intervals, like: torch.Tensor) -> None:
        reverse = step.reverse
        n = len(intervals)
        if step.order > 1 and n > 1 and not intervals.contiguous:
            raise ValueError("a multistep exponential integrator needs contiguous intervals (a grid)")
        if bool((intervals.spans <= 0).any()):
            raise ValueError("exponential integrators need increasing reverse times (positive spans)")
        T = reverse.T
        t = T - intervals.starts
        s = T - (intervals.starts + intervals.spans)
        if bool((s <= 0).any()):
            raise ValueError("exponential integrators stop at a forward cutoff eps > 0 (then denoise)")
        tables = exponential_tables(step.kind, step.geometry, t, s, step.order, step.interpolation, step.factor,
                                    step.linear_rule)
        W = tables["W"]
        D, E = tables["history"]
        main = [tables["K"] + W[:, 0] @ D, W[:, 0] @ E] + [W[:, j] for j in range(1, step.order)]
        self.noisy = step.kind == "sde"
        if self.noisy:
            main.append(tables["noise"])
        self.tables = tables
        self.map = AffineMap(main, like)
        self.history_map = AffineMap([D, E], like) if step.order > 1 else None
        self.order, self.k, self.m = step.order, reverse.num_components, int(D.shape[-2])
        self.reverse = reverse
        self.score_times = t.tolist()
        self.n = n
        self.counters = (reverse.counter,)
        self.history: list[torch.Tensor] = []
        self.joint = None

    def __call__(self, u, i, noise=None):  # noise: a NoiseSource, needed by the SDE only
        if i == 0:
            zero = torch.zeros((u.shape[0], self.m, *u.shape[2:]), dtype=u.dtype, device=u.device)
            self.history = [zero] * (self.order - 1)
        s = self.reverse.evaluate_score(u, self.score_times[i])
        inputs = [u, s, *self.history]
        if self.noisy:
            if noise.brownian:  # the exact posterior step's noise is not a function of the path's increments
                raise TypeError("the exponential SDE step draws independent normals from the noise source's generator,"
                                " so it cannot follow a Brownian path (noise=BrownianNoise(...)); use a splitting or "
                                "Euler-type step for path-wise runs")
            inputs.append(noise.independent_normal(u.shape, u))
        out = self.map(i, *inputs)
        if self.order > 1:
            self.history = [self.history_map(i, u, s)] + self.history[:-1]
        return out

    def gaussian_moments(self, mean, covariance, i):
        """Exact moments for an affine score; the plan tracks the joint law of the state and its history
        (call it for ``i = 0, 1, ...`` in turn)."""
        d = mean[0, 0].numel()
        size, hist = self.k * d, self.m * d
        H = self.order - 1
        mean64 = mean.reshape(-1).to(F64)
        if i == 0 or self.joint is None:
            zmean = torch.cat([mean64, torch.zeros(H * hist, dtype=F64)])
            zcov = torch.block_diag(covariance, torch.zeros(H * hist, H * hist, dtype=F64))
        else:
            zmean, zcov = self.joint[0].clone(), self.joint[1].clone()
            zmean[:size], zcov[:size, :size] = mean64, covariance

        def f(z):
            u = z[:size].reshape(mean.shape)
            history = [z[size + j * hist: size + (j + 1) * hist].reshape(1, self.m, *mean.shape[2:]) for j in range(H)]
            s = self.reverse.evaluate_score(u, self.score_times[i])
            inputs = [u, s, *history] + ([torch.zeros_like(u)] if self.noisy else [])
            parts = [self.map(i, *inputs).reshape(-1)]
            if H:
                parts += [self.history_map(i, u, s).reshape(-1)] + [h.reshape(-1) for h in history[:-1]]
            return torch.cat(parts)

        J = torch.func.jacrev(f)(zmean)
        new_mean, new_cov = f(zmean), J @ zcov @ J.T
        L = self.tables["noise"][i]
        new_cov[:size, :size] += kron_identity(L @ L.T, d)
        self.joint = (new_mean, new_cov)
        return new_mean[:size].reshape(mean.shape), new_cov[:size, :size]


class _ExponentialStep(Step):
    kind: str = "ode"
    strong_order = None

    def __init__(self, reverse: "ReverseSDE", order: int = 2, *, interpolation: str = "time",
                 initial_covariance=None, factor: str = "R", linear_rule: str = "exact") -> None:
        self.reverse = check_linear_reverse(reverse)
        self.order = check_count("order", order)
        if self.order > 3:
            raise ValueError(f"order must be 1, 2 or 3, got {order}")
        interpolation_variable(reverse.sde, interpolation)  # checks the name and the process
        if factor not in ("R", "cholesky"):
            raise ValueError(f"factor must be 'R' or 'cholesky', got {factor!r}")
        if factor != "R" and self.kind != "noise":
            raise ValueError("factor (the noise's square root) applies to NoiseExponentialODE only")
        self.interpolation, self.factor = interpolation, factor
        self.linear_rule = check_linear_rule(linear_rule, self.kind)
        self.geometry = DiffusionGeometry(reverse.sde, initial_covariance, reverse.score_components)
        self.nfe = 1

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        # the reverse SDE's multistep extrapolates x0_hat along a Brownian path: order 3 measures weak order 2
        # (tests/test_steps.py, power-3 grid, n = 128, 256, 512: local orders 2.17, 2.09)
        return float(min(self.order, 2) if self.kind == "sde" else self.order)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _ExponentialPlan(self, intervals, like)

    def __repr__(self) -> str:
        rule = "" if self.linear_rule == "exact" else f", linear_rule={self.linear_rule!r}"
        return f"{type(self).__name__}(order={self.order}, interpolation={self.interpolation!r}{rule})"


class ExponentialODE(_ExponentialStep):
    r"""Exponential integrator of the probability-flow ODE with data prediction, multistep order 1-3.

    Parameters
    ----------
    reverse:
        A :class:`~splitdyn.reverse.ReverseSDE` of a linear forward SDE (its score and score components).
    order:
        Number of :math:`\hat x_0` nodes of the Lagrange polynomial (1: DDIM; 2, 3: multistep).
    interpolation:
        ``"time"`` (polynomial in :math:`t`) or ``"log_snr"`` (in :math:`\lambda`: DPM-Solver++ for VP).
    initial_covariance:
        :math:`\Sigma_0` (default: the process's, e.g. CLD's :math:`\mathrm{diag}(0, \gamma M)`).
    linear_rule:
        Weights of the steps with two nodes (order 2, and order 3's warm-up): ``"exact"`` (the integral of the
        linear interpolant: DPM-Solver++(2M)'s ``"heun"``/Taylor form for VP with ``"log_snr"``), ``"bh2"``
        (DPM-Solver++(2M)'s ``"midpoint"`` form, diffusers' default) or ``"bh1"`` (UniPC's :math:`B(h) = h`);
        see :func:`linear_rule_weights`.
    """

    kind = "ode"


class ExponentialSDE(_ExponentialStep):
    r"""Exponential integrator of the reverse SDE with data prediction: the exact posterior step
    :math:`q(u_s \mid u_t, x_0 = \hat x_0)` at order 1, a Lagrange polynomial of :math:`\hat x_0` beyond.

    Parameters are those of :class:`ExponentialODE`.
    """

    kind = "sde"


class NoiseExponentialODE(_ExponentialStep):
    r"""gDDIM: exponential integrator of the probability-flow ODE extrapolating the noise
    :math:`\varepsilon = R_t^{-1}(u - \varphi_t\hat x_0)`.

    Parameters are those of :class:`ExponentialODE`, and ``factor``: ``"R"`` (gDDIM's, stable) or
    ``"cholesky"`` (:math:`L_t`, for comparison: the noise then rotates along the flow).
    """

    kind = "noise"
