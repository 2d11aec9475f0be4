r"""UniPC for any linear SDE: a multistep predictor and a corrector that reuses the next evaluation.

UniPC (Zhao et al. 2023) integrates the probability-flow ODE with data prediction. In the notation of
:mod:`splitdyn.steps.exponential` a step from forward time :math:`t_i` to :math:`t_{i+1}` is

.. math::

    u_{t_{i+1}} = K_i\,u_{t_i} + \int_{t_i}^{t_{i+1}} K(t_{i+1}, \tau)\,b(\tau)\,\hat x_0(\tau)\,d\tau,\qquad
    K(s, \tau) = R_sR_\tau^{-1},\quad b = -\tfrac12 GG^\top\Sigma^{-1}\varphi,

with the :math:`k`-vector (matrix, for CLD) weights of ``splitdyn.steps.exponential_weights``. Write
:math:`m_j = \hat x_0(\tilde u_j, t_j)` for the estimate at grid node :math:`j`, evaluated once, at the
*predicted* state :math:`\tilde u_j`.

- **Predictor UniP-p**: :math:`\tilde u_{i+1} = K_i u^c_i + \sum_{j<p} W^P_{ij}\,m_{i-j}`, the weights of the
  Lagrange polynomial through :math:`t_i, \dots, t_{i-p+1}` (the exponential integrator of order
  :math:`p`; for VP, DPM-Solver++ pM).
- **Corrector UniC-p**: once :math:`m_{i+1}` is evaluated at :math:`\tilde u_{i+1}` (for the next predictor
  anyway), :math:`u^c_{i+1} = K_i u^c_i + \sum_{j\le p} W^C_{ij}\,m_{i+1-j}`, the weights of the polynomial
  through :math:`t_{i+1}, t_i, \dots, t_{i-p+1}` (one node more, the new one). The next predictor starts from
  :math:`u^c_{i+1}` with the same :math:`m_{i+1}`: the corrector raises the order from :math:`p` to
  :math:`p + 1` with no extra evaluation. The last step is a predictor step (nothing evaluates its result).

Where UniPC solves the order conditions for :math:`\rho` (UniP-3, UniC-2, UniC-3) its update is exactly the
integral of the Lagrange polynomial: a linear rule exact for polynomials of the degree the nodes allow is
unique. Only the two-node rules, UniP-2 and UniC-1, use the simplified :math:`\rho = \tfrac12` with a
function :math:`B(h)`; the general-:math:`k` form replaces the linear term's weight by :math:`\tfrac12 B`
with :math:`B` the total weight (``"bh2"``, :math:`B(h) = e^h - 1` for VP) or the weight density frozen at
the end point (``"bh1"``, :math:`B(h) = h` for VP); see
:func:`~splitdyn.steps.exponential.linear_rule_weights`. For VP with ``interpolation="log_snr"`` this is
diffusers' ``UniPCMultistepScheduler`` with ``predict_x0=True`` (tested to :math:`10^{-6}`); for CLD it is
new, with polynomials in :math:`t`.

Orders: step ``i`` of an ``n``-step grid uses :math:`p_i = \min(p, i + 1)` nodes (warm-up) and, with
``lower_order_final``, :math:`\min(p_i, n - i)` (diffusers' default). The weak order is :math:`p + 1`
(``lower_order_final``: :math:`\min(p + 1, 2)`, the last step being DDIM's). One score evaluation per step:
an ``n``-step grid costs ``n`` evaluations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..checks import check_count, check_flag
from .base import AffineMap, Intervals, Plan, Step
from .exponential import (
    check_linear_reverse,
    lagrange_weights,
    linear_rule_weights,
    weight_integrand,
)
from .exponential_weights import (
    DiffusionGeometry,
    interpolation_variable,
    log_quadrature,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..reverse import ReverseSDE

__all__ = ["UniPC", "unipc_tables", "unipc_orders"]

F64 = torch.float64


def unipc_orders(n: int, order: int, lower_order_final: bool = False) -> list[int]:
    """The predictor order :math:`p_i` of each of ``n`` steps (warm-up, and ``lower_order_final``)."""
    return [min(order, i + 1, n - i) if lower_order_final else min(order, i + 1) for i in range(n)]


def unipc_tables(geometry: DiffusionGeometry, t: torch.Tensor, s: torch.Tensor, order: int, variant: str = "bh2",
                 variable: str = "time", lower_order_final: bool = False) -> dict[str, Any]:
    r"""Float64 tables of UniPC over the steps :math:`t_i \to s_i` (forward times of a grid, ``t[i + 1] = s[i]``).

    Returns
    -------
    dict
        ``"K"`` ``(n, k, k)``; ``"predictor"`` ``(n, q, k, 1)``, the weights of :math:`m_i, m_{i-1}, \dots`
        in step ``i``; ``"corrector"`` ``(n, q + 1, k, 1)``, row ``i >= 1`` the weights of
        :math:`m_i, m_{i-1}, \dots` that correct :math:`u_{t_i}` from :math:`u^c_{t_{i-1}}` (row 0 zero);
        ``"history"`` the Tweedie rows ``(D, E)`` at :math:`t_i`; ``"orders"`` the :math:`p_i`.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    n = len(t)
    rho = interpolation_variable(geometry.sde, variable)
    tau, omega = log_quadrature(t, s)
    R_all = geometry.factor(torch.cat([s, tau.reshape(-1), t]))  # one integration for all the factors
    left, values = weight_integrand("ode", geometry, s, tau, "R", R_all[:-n])
    orders = unipc_orders(n, order, lower_order_final)
    predictor_nodes = [t[i - p + 1: i + 1].flip(0) for i, p in enumerate(orders)]
    P = lagrange_weights(left, values, omega, tau, rho, predictor_nodes, order)
    two = [i for i, p in enumerate(orders) if p == 2]
    if two:
        P[two, :2] = linear_rule_weights(variant, geometry, variable, left[two], values[two], omega[two], t[two],
                                         s[two], t[[i - 1 for i in two]])
    # corrector of step i + 1 over interval i: nodes s_i = t_{i+1}, t_i, ..., t_{i-p_i+1}
    corrector_nodes = [torch.cat([s[i: i + 1], predictor_nodes[i]]) for i in range(n)]
    C = lagrange_weights(left, values, omega, tau, rho, corrector_nodes, order + 1)
    one = [i for i, p in enumerate(orders) if p == 1]
    if one:
        base_new = linear_rule_weights(variant, geometry, variable, left[one], values[one], omega[one], t[one],
                                       s[one], s[one])
        C[one, 0], C[one, 1] = base_new[:, 1], base_new[:, 0]  # columns: the new node first
        C[one, 2:] = 0
    corrector = torch.cat([torch.zeros_like(C[:1]), C[:-1]])  # applied at step i + 1
    K = torch.linalg.solve(R_all[-n:].transpose(-1, -2), R_all[:n].transpose(-1, -2)).transpose(-1, -2)
    return {"K": K, "predictor": P, "corrector": corrector, "history": geometry.tweedie(t),
            "orders": torch.tensor(orders)}


class _UniPCPlan(Plan):
    def __init__(self, step: "UniPC", intervals: Intervals, like: torch.Tensor) -> None:
        reverse = step.reverse
        n = len(intervals)
        if n > 1 and not intervals.contiguous:
            raise ValueError("UniPC is a multistep method: it needs contiguous intervals (a grid)")
        if bool((intervals.spans <= 0).any()):
            raise ValueError("UniPC needs increasing reverse times (positive spans)")
        T = reverse.T
        t = T - intervals.starts
        s = T - (intervals.starts + intervals.spans)
        if bool((s <= 0).any()):
            raise ValueError("UniPC stops at a forward cutoff eps > 0 (then denoise)")
        tables = unipc_tables(step.geometry, t, s, step.order, step.variant, step.interpolation,
                              step.lower_order_final)
        q = step.order
        K = tables["K"]
        D, E = tables["history"]
        Kc = torch.cat([torch.eye(K.shape[-1], dtype=F64)[None], K[:-1]])
        self.tables = tables
        self.predictor = AffineMap([K] + [tables["predictor"][:, j] for j in range(q)], like)
        self.corrector = AffineMap([Kc] + [tables["corrector"][:, j] for j in range(q + 1)], like)
        self.estimate = AffineMap([D, E], like)
        self.order, self.k = q, reverse.num_components
        self.reverse = reverse
        self.score_times = t.tolist()
        self.n = n
        self.counters = (reverse.counter,)
        self.history: list[torch.Tensor] = []
        self.corrected: torch.Tensor | None = None
        self.joint = None

    def _advance(self, u, s, i, history, corrected):
        """(prediction, corrected state, new history) from the predicted state ``u`` and its score ``s``."""
        m = self.estimate(i, u, s)
        if i > 0:
            u = self.corrector(i, corrected, m, *history)
        history = [m] + history[:-1]
        return self.predictor(i, u, *history), u, history

    def __call__(self, u, i, noise=None):  # deterministic: no noise
        if i == 0:
            zero = torch.zeros((u.shape[0], 1, *u.shape[2:]), dtype=u.dtype, device=u.device)
            self.history, self.corrected = [zero] * self.order, None
        s = self.reverse.evaluate_score(u, self.score_times[i])
        out, self.corrected, self.history = self._advance(u, s, i, self.history, self.corrected)
        return out

    def gaussian_moments(self, mean, covariance, i):
        """Exact moments for an affine score; the plan tracks the joint law of the state, the last corrected
        state and the history (call it for ``i = 0, 1, ...`` in turn)."""
        d = mean[0, 0].numel()
        size, q = self.k * d, self.order
        mean64 = mean.reshape(-1).to(F64)
        if i == 0 or self.joint is None:
            zmean = torch.cat([mean64, torch.zeros(size + q * d, dtype=F64)])
            zcov = torch.block_diag(covariance, torch.zeros(size + q * d, size + q * d, dtype=F64))
        else:
            zmean, zcov = self.joint[0].clone(), self.joint[1].clone()
            zmean[:size], zcov[:size, :size] = mean64, covariance

        def f(z):
            u = z[:size].reshape(mean.shape)
            corrected = z[size: 2 * size].reshape(mean.shape)
            history = [z[2 * size + j * d: 2 * size + (j + 1) * d].reshape(1, 1, *mean.shape[2:]) for j in range(q)]
            s = self.reverse.evaluate_score(u, self.score_times[i])
            out, corrected, history = self._advance(u, s, i, history, corrected)
            return torch.cat([out.reshape(-1), corrected.reshape(-1)] + [h.reshape(-1) for h in history])

        J = torch.func.jacrev(f)(zmean)
        new_mean, new_cov = f(zmean), J @ zcov @ J.T
        self.joint = (new_mean, new_cov)
        return new_mean[:size].reshape(mean.shape), new_cov[:size, :size]


class UniPC(Step):
    r"""UniPC (predictor UniP-``order``, corrector UniC) with data prediction for any linear SDE.

    Parameters
    ----------
    reverse:
        A :class:`~splitdyn.reverse.ReverseSDE` of a linear forward SDE.
    order:
        The predictor's order :math:`p` (1, 2 or 3; diffusers' ``solver_order``); the corrector makes the
        scheme order :math:`p + 1`.
    variant:
        ``"bh1"`` (:math:`B(h) = h`) or ``"bh2"`` (:math:`B(h) = e^h - 1`, diffusers' default): the weights of
        the two-node rules (UniP-2, UniC-1).
    interpolation:
        ``"time"`` (polynomials of :math:`\hat x_0` in :math:`t`) or ``"log_snr"`` (in :math:`\lambda`: UniPC
        as published, processes with ``log_snr``).
    lower_order_final:
        Lower the predictor's order on the last steps (:math:`p_i \le n - i`; diffusers' default, its weak
        order is then :math:`\min(p + 1, 2)`).
    initial_covariance:
        :math:`\Sigma_0` (default: the process's).
    """

    nfe = 1
    strong_order = None

    def __init__(self, reverse: "ReverseSDE", order: int = 2, variant: str = "bh2", *, interpolation: str = "time",
                 lower_order_final: bool = False, initial_covariance=None) -> None:
        self.reverse = check_linear_reverse(reverse)
        self.order = check_count("order", order)
        if self.order > 3:
            raise ValueError(f"order must be 1, 2 or 3, got {order}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
        interpolation_variable(reverse.sde, interpolation)
        self.variant, self.interpolation = variant, interpolation
        self.lower_order_final = check_flag("lower_order_final", lower_order_final)
        self.geometry = DiffusionGeometry(reverse.sde, initial_covariance, reverse.score_components)

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        return float(min(self.order + 1, 2) if self.lower_order_final else self.order + 1)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _UniPCPlan(self, intervals, like)

    def __repr__(self) -> str:
        return (f"UniPC(order={self.order}, variant={self.variant!r}, interpolation={self.interpolation!r}, "
                f"lower_order_final={self.lower_order_final})")
