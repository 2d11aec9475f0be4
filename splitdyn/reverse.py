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

from .checks import check_positive, check_state
from .linear_sde import LinearSDEBase, apply_matrix

__all__ = ["ScoreFunction", "ReverseSDE", "ProbabilityFlowODE", "TorchsdeAdapter"]

_CACHE_SIZE = 4096  # per-time coefficient matrices kept by a reverse SDE / probability flow

#: Type of a score function: ``score(u, t) -> tensor`` with ``u`` of shape ``(batch, k, *event)`` and ``t``
#: a float or a ``(batch,)`` tensor of forward times; it returns the score of the requested components.
ScoreFunction = Callable[[torch.Tensor, object], torch.Tensor]


class _ScoreTerm:
    """Shared handling of the score and of :math:`GG^\\top s` for reverse SDEs and probability flows."""

    def __init__(self, sde, score: ScoreFunction, score_components: Sequence[int] | None = None) -> None:
        for attr in ("drift", "diffusion_matrix", "num_components", "T"):
            if not hasattr(sde, attr):
                raise TypeError(f"sde must define {attr}, got {type(sde).__name__}")
        if not callable(score):
            raise TypeError("score must be a callable score(u, t)")
        k = sde.num_components
        if score_components is not None:
            score_components = [int(c) for c in score_components]
            if not score_components or any(c < 0 or c >= k for c in score_components):
                raise ValueError(f"score_components must be indices in [0, {k}), got {score_components}")
        self.sde = sde
        self.score = score
        self.score_components = score_components
        self.T = float(sde.T)
        self.num_components = k
        self.evaluations = 0
        self._cache: dict = {}

    def _ggt(self, t, u: torch.Tensor) -> torch.Tensor:
        """GG^T(t) restricted to the score's columns, as a (k, c) or (batch, k, c) tensor in u's dtype."""
        key = (float(t), u.dtype, u.device) if not isinstance(t, torch.Tensor) else None
        if key is not None and key in self._cache:
            return self._cache[key]
        ggt = self.sde.diffusion_covariance(t) if hasattr(self.sde, "diffusion_covariance") else None
        if ggt is None:
            G = self.sde.diffusion_matrix(t)
            ggt = G @ G.transpose(-1, -2)
        if self.score_components is not None:
            ggt = ggt[..., self.score_components]
        ggt = ggt.to(dtype=u.dtype, device=u.device)
        if key is not None:
            self._remember(key, ggt)
        return ggt

    def _forward_drift(self, u: torch.Tensor, t) -> torch.Tensor:
        """:math:`f(u, t)`; for a linear SDE at a float time, from a per-time cache of :math:`F(t)` in u's dtype."""
        if isinstance(t, torch.Tensor) or not hasattr(self.sde, "drift_matrix"):
            return self.sde.drift(u, t)
        check_state("u", u, self.num_components)
        key = ("F", float(t), u.dtype, u.device)
        if key not in self._cache:
            self._remember(key, self.sde.drift_matrix(float(t)).to(dtype=u.dtype, device=u.device))
        return apply_matrix(self._cache[key], u)

    def _remember(self, key, value: torch.Tensor) -> None:
        """Cache a per-time coefficient; bounded, since adaptive solvers visit ever new times."""
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = value

    def _score(self, u: torch.Tensor, t) -> torch.Tensor:
        self.evaluations += 1
        s = self.score(u, t)
        c = len(self.score_components) if self.score_components is not None else self.num_components
        if s.shape[0] != u.shape[0] or s.shape[1] != c or s.shape[2:] != u.shape[2:]:
            raise ValueError(
                f"score returned shape {tuple(s.shape)}, expected {(u.shape[0], c, *u.shape[2:])} "
                f"(score_components={self.score_components})"
            )
        return s

    def reset_count(self) -> None:
        """Reset the count of score evaluations (:attr:`evaluations`)."""
        self.evaluations = 0

    def _apply_ggt_score(self, u, t, weight: float) -> torch.Tensor:
        out = apply_matrix(self._ggt(t, u), self._score(u, t))
        return out if weight == 1.0 else weight * out


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
        Components the score returns (default: all).

    Attributes
    ----------
    nfe:
        Score evaluations per :meth:`drift` call (1); used by :class:`~splitdyn.propagators.EulerMaruyama`.
    evaluations:
        Running count of score evaluations (reset with :meth:`reset_count`), useful with external solvers.
    """

    nfe = 1

    def drift(self, u: torch.Tensor, tau) -> torch.Tensor:
        r"""Reverse drift :math:`-f(u, T-\tau) + GG^\top s(u, T-\tau)`."""
        t = self.T - tau
        return self._apply_ggt_score(u, t, 1.0) - self._forward_drift(u, t)

    def diffusion_matrix(self, tau) -> torch.Tensor:
        r""":math:`G(T - \tau)` (float64)."""
        return self.sde.diffusion_matrix(self.T - torch.as_tensor(tau, dtype=torch.float64))

    def score_drift(self, precision=None) -> Callable[[torch.Tensor, float], torch.Tensor]:
        r"""The non-linear part :math:`GG^\top(T-\tau)\,(s(u, T-\tau) + P u)` of the reverse drift.

        Together with ``sde.reverse_linear_part(precision)`` it sums to :meth:`drift` (for a linear forward
        SDE); it is the part SSCS integrates with an Euler step (the paper's :math:`\hat{\mathcal L}^*_S`, eq. 77).
        """
        if not hasattr(self.sde, "reference_precision"):
            raise TypeError("score_drift needs a LinearSDE forward process (to split off its linear part)")
        P = self.sde.reference_precision() if precision is None else torch.as_tensor(precision, dtype=torch.float64)
        cache: dict = {}

        def drift(u: torch.Tensor, tau: float) -> torch.Tensor:
            t = self.T - tau
            key = (float(t), u.dtype, u.device)
            if key not in cache:
                G = self.sde.diffusion_matrix(float(t))
                cache[key] = (G @ G.T @ P).to(dtype=u.dtype, device=u.device)
            return self._apply_ggt_score(u, t, 1.0) + apply_matrix(cache[key], u)

        return drift

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
        return self._forward_drift(u, t) - self._apply_ggt_score(u, t, 0.5)

    def __call__(self, t, y: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            t = float(t)
        return self.velocity(y, min(max(t, 0.0), self.T))
