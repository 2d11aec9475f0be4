r"""Reverse-time SDEs and probability-flow ODEs built from a forward SDE and a score.

For a forward SDE :math:`du = f(u, t)\,dt + G(t)\,dw` with marginals :math:`p_t`, the reverse-time SDE in
:math:`\tau = T - t` (paper eq. 2, Anderson 1982) is

.. math::

    d\bar u = \big[-f(\bar u, T - \tau) + G G^\top(T - \tau)\,\nabla \log p_{T-\tau}(\bar u)\big]\,d\tau
    + G(T - \tau)\,d\bar w_\tau,

and the probability-flow ODE (paper eq. 58) in forward time is

.. math::

    \frac{du}{dt} = f(u, t) - \tfrac12 G G^\top(t)\,\nabla\log p_t(u).

Both accept a score ``score(u, t)`` (forward time ``t``, a float or a ``(batch,)`` tensor). The score may
return every component or, with ``score_components``, only those on which :math:`GG^\top` acts (CLD's model
predicts the velocity score alone). Both are directly usable by the reference solvers: a
:class:`ReverseSDE` converts to a ``torchsde`` SDE with :meth:`ReverseSDE.as_torchsde`, and a
:class:`ProbabilityFlowODE` is a ``torchdiffeq`` vector field ``func(t, y)``.
"""

from __future__ import annotations

from math import prod
from typing import Callable, Sequence

import torch

from .checks import check_arity, check_positive
from .linalg import apply_matrix
from .protocols import ForwardProcess, require
from .linear_sde import LinearSDE, LinearSDEBase
from .schedules import ConstantBeta
from .steps.base import AffineMap, EvaluationCounter, Intervals
from .steps.drift import Drift, DriftPlan, check_drift_output

__all__ = ["ScoreFunction", "ReverseSDE", "ProbabilityFlowODE", "TorchsdeAdapter", "ScorePart"]

#: Type of a score function: ``score(u, t) -> tensor`` with ``u`` of shape ``(batch, k, *event)`` and ``t``
#: a float or a ``(batch,)`` tensor of forward times; it returns the score of the requested components.
ScoreFunction = Callable[[torch.Tensor, object], torch.Tensor]


def _score_components(value, k: int) -> list[int] | None:
    if value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"score_components must be a sequence of component indices, got {value!r}") from None
    if not items or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < k for c in items):
        raise ValueError(f"score_components must be distinct integer indices in [0, {k}), got {items!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"score_components must not repeat a component, got {items!r}")
    return items


class _ScoreTerm:
    """Shared handling of the score and of :math:`GG^\\top s` for reverse SDEs and probability flows."""

    def __init__(self, sde, score: ScoreFunction, score_components: Sequence[int] | None = None) -> None:
        require("sde", sde, ForwardProcess)
        check_arity("score", score, 2, "score(u, t)")
        k = sde.num_components
        self.sde = sde
        #: counts every call of the score (the one counter of evaluations; see splitdyn.steps.base)
        self.counter = EvaluationCounter()
        #: the user's score, uncounted (for compiled arithmetic, whose wrapper is counted instead)
        self.score_function = score
        #: the score, counted: what every plan calls
        self.score = self.counter.wrap(score)
        self.score_components = _score_components(score_components, k)
        self.T = float(sde.T)
        self.num_components = k
        self._constant: dict = {}

    @property
    def evaluations(self) -> int:
        """Score evaluations so far (the :attr:`counter`'s count; reset with ``reset_count()``)."""
        return self.counter.count

    @property
    def linear(self) -> bool:
        """Whether the forward SDE is linear (:class:`~splitdyn.linear_sde.LinearSDEBase`): then every step
        plans its coefficients as per-step matrix tables."""
        return isinstance(self.sde, LinearSDEBase)

    def score_columns(self, matrix: torch.Tensor) -> torch.Tensor:
        """The columns of a ``(..., k, k)`` matrix that act on the score's components."""
        return matrix if self.score_components is None else matrix[..., self.score_components]

    def coefficient_tables(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Float64 :math:`F(t)`, :math:`GG^\top(t)` restricted to the score's columns, and :math:`G(t)` for a
        tensor of forward times (shapes ``t.shape + (k, k)``, ``(k, c)``, ``(k, m)``); linear SDEs only."""
        if not self.linear:
            raise TypeError(f"coefficient tables need a linear forward SDE, got {type(self.sde).__name__}")
        G = self.sde.diffusion_matrix(t)
        return self.sde.drift_matrix(t), self.score_columns(G @ G.transpose(-1, -2)), G

    def _coefficients(self, t, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F(t), GG^T(t)[:, cols])`` in u's dtype; constant-rate linear SDEs compute them once per dtype."""
        constant = isinstance(self.sde, LinearSDE) and isinstance(self.sde.rescaling, ConstantBeta)
        key = (u.dtype, u.device)
        if constant and key in self._constant:
            return self._constant[key]
        if isinstance(t, torch.Tensor) and t.ndim == 1 and t.numel() == u.shape[0] or not constant:
            F, GGt, _ = self.coefficient_tables(torch.as_tensor(t, dtype=torch.float64).cpu())
        else:
            F, GGt, _ = self.coefficient_tables(torch.tensor(0.0, dtype=torch.float64))
        out = (F.to(dtype=u.dtype, device=u.device), GGt.to(dtype=u.dtype, device=u.device))
        if constant:
            self._constant[key] = out
        return out

    def evaluate_score(self, u: torch.Tensor, t) -> torch.Tensor:
        """Call the score at forward time ``t`` (counted) and check what it returned."""
        return self.check_score_output(self.score(u, t), u)

    def checked_score(self, u: torch.Tensor, t) -> torch.Tensor:
        """The user's score at ``(u, t)``, checked but not counted (for compiled arithmetic: the caller counts
        the compiled function with :attr:`counter`)."""
        return self.check_score_output(self.score_function(u, t), u)

    def check_score_output(self, value, u: torch.Tensor) -> torch.Tensor:
        """``value`` if it is a score for ``u`` (tensor, shape, dtype, device); else an error saying what is wrong."""
        c = len(self.score_components) if self.score_components is not None else self.num_components
        return check_drift_output("score", value, u, (u.shape[0], c, *u.shape[2:]))

    def reset_count(self) -> None:
        """Reset the count of score evaluations (:attr:`evaluations`)."""
        self.counter.count = 0

    def _linear_field(self, u: torch.Tensor, t, score_weight: float, drift_sign: float) -> torch.Tensor:
        if not self.linear:
            s = self.evaluate_score(u, t)
            G = self.sde.diffusion_matrix(t)
            ggt = self.score_columns(G @ G.transpose(-1, -2))
            return drift_sign * self.sde.drift(u, t) + score_weight * apply_matrix(ggt, s)
        F, GGt = self._coefficients(t, u)
        out = apply_matrix(GGt, self.evaluate_score(u, t))
        out = out if score_weight == 1.0 else score_weight * out
        return out + drift_sign * apply_matrix(F, u)


class _ScorePartPlan(DriftPlan):
    def __init__(self, part: "ScorePart", times: torch.Tensor, spans: torch.Tensor, like: torch.Tensor) -> None:
        reverse = part.reverse
        t = reverse.T - times
        G = reverse.sde.diffusion_matrix(t)
        GGt = G @ G.transpose(-1, -2)
        k = GGt.shape[-1]
        h = spans[:, None, None]
        M = torch.eye(k, dtype=torch.float64) + h * (GGt @ part.precision)
        C = h * reverse.score_columns(GGt)
        self.map = AffineMap([M, C], like)
        self.reverse = reverse
        self.score = reverse.score
        self.counters = (reverse.counter,)
        self.score_shape = torch.Size([C.shape[-1], *like.shape[2:]])
        self.score_times = t.tolist()
        rows = (GGt.abs().amax(dim=(0, 2)) > 0)
        self.writes = frozenset(int(c) for c in torch.nonzero(rows).flatten().tolist())

        self.compiled: tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None = None

    def evaluate(self, u, i):
        if self.compiled is not None:
            return self.compiled[0](u, self.tensor_times[i])
        s = self.score(u, self.score_times[i])
        if type(s) is not torch.Tensor or s.dtype != u.dtype or s.shape[1:] != self.score_shape \
                or s.shape[0] != u.shape[0] or s.device != u.device:
            s = self.reverse.check_score_output(s, u)  # the full check: it says what is wrong
        return s

    def advance(self, u, value, i):
        if self.compiled is not None:
            return self.compiled[1](self.map.prepared(i), [u, value])
        return self.map(i, u, value)

    def compile(self, **options) -> None:
        """Compile the score call and the Euler update separately (the value between them may be reused)."""
        self.map = self.map.tensor_only()
        self.tensor_times = torch.tensor(self.score_times, dtype=torch.float64, device=self.map.device)
        score = self.reverse.counter.wrap(torch.compile(self.reverse.checked_score, **options))
        self.compiled = (score, torch.compile(self.map.apply, **options))


class ScorePart(Drift):
    r"""The score part :math:`GG^\top(T-\tau)\,(s(u, T-\tau) + P u)` of a reverse drift, as a planned drift.

    Its Euler step is the paper's :math:`e^{h\hat{\mathcal L}^*_S}` (eq. 77): the plan folds :math:`h_i`,
    :math:`GG^\top` and :math:`P` into per-step tables, one score evaluation per step. Build it with
    :meth:`ReverseSDE.score_part`.
    """

    nfe = 1

    def __init__(self, reverse: "ReverseSDE", precision: torch.Tensor) -> None:
        self.reverse = reverse
        self.precision = precision

    def plan(self, times, spans, like):
        return _ScorePartPlan(self, times, spans, like)

    def __call__(self, u: torch.Tensor, tau) -> torch.Tensor:
        """The drift itself at reverse time ``tau`` (for checks; steps use the planned form)."""
        reverse = self.reverse
        t = reverse.T - torch.as_tensor(tau, dtype=torch.float64)
        G = reverse.sde.diffusion_matrix(t)
        GGt = G @ G.transpose(-1, -2)
        score = reverse.evaluate_score(u, float(t) if t.ndim == 0 else t)
        return apply_matrix(reverse.score_columns(GGt), score) + apply_matrix(GGt @ self.precision, u)

    def __repr__(self) -> str:
        return "ScorePart(reverse SDE)"


class ReverseSDE(_ScoreTerm):
    r"""The reverse-time SDE of ``sde`` with score ``score``, in reverse time :math:`\tau = T - t` (eq. 2).

    Parameters
    ----------
    sde:
        The forward SDE: any object with ``drift(u, t)``, ``diffusion_matrix(t)``, ``num_components``, ``T``
        (every :class:`~splitdyn.linear_sde.LinearSDEBase`).
    score:
        ``score(u, t)`` in forward time.
    score_components:
        Distinct components the score returns (default: all); CLD's model returns the velocity's, ``[1]``.

    Attributes
    ----------
    nfe:
        Score evaluations per :meth:`drift` call (1).
    evaluations:
        Running count of score evaluations (reset with ``reset_count()``), useful with external solvers.
    """

    nfe = 1

    def drift(self, u: torch.Tensor, tau) -> torch.Tensor:
        r"""Reverse drift :math:`-f(u, T-\tau) + GG^\top s(u, T-\tau)`."""
        return self._linear_field(u, self.T - tau, 1.0, -1.0)

    def diffusion_matrix(self, tau) -> torch.Tensor:
        r""":math:`G(T - \tau)` (float64)."""
        return self.sde.diffusion_matrix(self.T - torch.as_tensor(tau, dtype=torch.float64))

    def euler_maruyama_tables(self, intervals: Intervals):
        r"""Per-step float64 tables ``(M, C, L, score_times)`` of Euler-Maruyama over ``intervals`` (reverse
        times): :math:`u' = M_i u + C_i s(u, T - \tau_i) + L_i \xi` with :math:`M_i = I - h_i F`,
        :math:`C_i = h_i GG^\top`, :math:`L_i = \sqrt{h_i} G`; ``None`` for a non-linear forward SDE."""
        if not self.linear:
            return None
        t = self.T - intervals.starts
        F, GGt, G = self.coefficient_tables(t)
        h = intervals.spans[:, None, None]
        M = torch.eye(F.shape[-1], dtype=torch.float64) - h * F
        return M, h * GGt, h.sqrt() * G, t.tolist()

    def score_part(self, precision=None) -> ScorePart:
        r"""The non-linear part :math:`GG^\top(T-\tau)\,(s(u, T-\tau) + P u)` of the reverse drift.

        Together with ``sde.reverse_linear_part(precision)`` it sums to :meth:`drift` (for a
        :class:`~splitdyn.linear_sde.LinearSDE`); it is the part SSCS follows with an Euler step.
        """
        if not hasattr(self.sde, "reference_precision"):
            raise TypeError("score_part needs a LinearSDE forward process (to split off its linear part)")
        P = self.sde.reference_precision() if precision is None else torch.as_tensor(precision, dtype=torch.float64)
        k = self.num_components
        if P.shape != (k, k):
            raise ValueError(f"precision must have shape ({k}, {k}), got {tuple(P.shape)}")
        return ScorePart(self, P)

    def denoise(self, u: torch.Tensor, eps: float) -> torch.Tensor:
        r"""Noise-free Euler step of size ``eps`` from forward time ``eps`` to 0 (paper eq. 107).

        :math:`u_0 = u_\epsilon - \epsilon f(u_\epsilon, \epsilon) + \epsilon\,GG^\top s(u_\epsilon, \epsilon)`;
        one score evaluation.
        """
        eps = check_positive("eps", eps)
        return u + eps * self.drift(u, self.T - eps)

    def as_torchsde(self, event_shape: Sequence[int], noise_type: str = "diagonal") -> "TorchsdeAdapter":
        """This SDE as a ``torchsde`` SDE on flattened states ``(batch, k * prod(event_shape))``."""
        return TorchsdeAdapter(self, tuple(event_shape), noise_type)


class TorchsdeAdapter(torch.nn.Module):
    """A :class:`ReverseSDE` (or any SDE with ``drift`` and ``diffusion_matrix``) in ``torchsde``'s protocol.

    ``torchsde`` wants states of shape ``(batch, n)``; they are reshaped to ``(batch, k, *event_shape)`` for
    the drift. ``noise_type="diagonal"`` needs a diagonal ``G`` (true for CLD and VP/VE diffusions) and costs
    ``O(n)`` per step; ``"additive"``/``"general"`` build the dense ``(G \\otimes I_d)`` (small ``d`` only).
    Attributes ``noise_type`` and ``sde_type = "ito"`` follow torchsde's conventions.
    """

    sde_type = "ito"

    def __init__(self, sde, event_shape: tuple[int, ...], noise_type: str = "diagonal") -> None:
        super().__init__()
        if noise_type not in ("diagonal", "additive", "general"):
            raise ValueError(f"noise_type must be 'diagonal', 'additive' or 'general', got {noise_type!r}")
        self.sde = sde
        self.event_shape = tuple(int(s) for s in event_shape)
        self.noise_type = noise_type
        self.k = sde.num_components
        self.d = prod(self.event_shape)
        G = sde.diffusion_matrix(0.0)
        if noise_type == "diagonal":
            if G.shape[-1] != self.k or not torch.equal(G, torch.diag_embed(torch.diagonal(G, dim1=-2, dim2=-1))):
                raise ValueError("noise_type='diagonal' needs a square diagonal diffusion matrix")

    def _state(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], self.k, *self.event_shape)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sde.drift(self._state(y), float(t)).reshape(y.shape)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        G = self.sde.diffusion_matrix(float(t)).to(dtype=y.dtype, device=y.device)
        if self.noise_type == "diagonal":
            return torch.diagonal(G).repeat_interleave(self.d).expand(y.shape[0], -1)
        dense = torch.kron(G, torch.eye(self.d, dtype=y.dtype, device=y.device))
        return dense.expand(y.shape[0], -1, -1)


class ProbabilityFlowODE(_ScoreTerm):
    r"""Probability-flow ODE :math:`\dot u = f(u, t) - \frac12 GG^\top(t)\,s(u, t)` in forward time (eq. 58).

    Calling it as ``ode(t, y)`` gives the vector field in ``torchdiffeq``'s convention; integrate from ``T``
    down to ``eps`` (torchdiffeq accepts decreasing times) to sample, or from ``eps`` up to ``T`` to encode.

    Parameters
    ----------
    sde, score, score_components:
        As for :class:`ReverseSDE`.
    """

    def velocity(self, u: torch.Tensor, t) -> torch.Tensor:
        """The vector field at state ``u`` and forward time ``t``."""
        return self._linear_field(u, t, -0.5, 1.0)

    def __call__(self, t, y: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            t = float(t)
        return self.velocity(y, min(max(t, 0.0), self.T))
