r"""Propagators: maps that advance a state over one (sub-)step :math:`[t, t + h]` of their dynamics' time.

A propagator is anything with ``__call__(u, t, h, generator) -> u`` and an integer attribute ``nfe`` (the
score / network evaluations one call makes). Reverse-time dynamics are written in reverse time
:math:`\tau = T - t`, so a step :math:`[\tau, \tau + h]` is the forward-time interval :math:`[t - h, t]`.

- :class:`ExactLinearFlow` samples the exact Gaussian transition of a linear SDE,
  :math:`u \mapsto \mathcal{N}(\Phi(t + h, t)u,\ Q(t + h, t))` (for CLD: the paper's
  :math:`e^{\frac{h}{2}\hat{\mathcal L}^*_A}`, eq. 85-90).
- :class:`EulerDrift` takes an Euler step of a drift, :math:`u \mapsto u + h\,b(u, t)` (the paper's score
  step :math:`e^{h\hat{\mathcal L}^*_S}`, App. D).
- :class:`EulerMaruyama` takes a full Euler-Maruyama step of an SDE.

Compose them with :mod:`splitdyn.splitting`. Each also propagates Gaussian moments exactly when its map is
affine in ``u`` (:meth:`Propagator.gaussian_moments`), which gives noise-free weak-order measurements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch

from .checks import check_positive, check_state
from .gaussian import psd_cholesky
from .linear_sde import LinearSDEBase, apply_matrix

__all__ = ["Propagator", "ExactLinearFlow", "EulerDrift", "EulerMaruyama"]


def _kron_identity(matrix: torch.Tensor, d: int) -> torch.Tensor:
    return torch.kron(matrix.to(torch.float64), torch.eye(d, dtype=torch.float64))


class Propagator(ABC):
    """One (sub-)step map :math:`u_t \\mapsto u_{t+h}`. Subclasses implement :meth:`__call__`."""

    nfe: int = 0

    @abstractmethod
    def __call__(self, u: torch.Tensor, t: float, h: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Advance ``u`` (shape ``(batch, k, *event)``) from ``t`` to ``t + h``."""

    def gaussian_moments(self, mean: torch.Tensor, covariance: torch.Tensor, t: float, h: float):
        r"""Push :math:`\mathcal{N}(\text{mean}, \text{covariance})` of one state through the step.

        ``mean`` has shape ``(1, k, *event)`` and ``covariance`` is the full ``(n, n)`` float64 covariance of
        the flattened state (``n = k * prod(event)``). Exact when the step is affine-Gaussian in ``u``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not propagate Gaussian moments")


class ExactLinearFlow(Propagator):
    r"""Exact transition of a linear SDE: :math:`u \mapsto \Phi(t+h, t)\,u + L\,\xi`, :math:`LL^\top = Q(t+h, t)`.

    Coefficients are computed once per distinct ``(t, h)`` in float64 and cached, with their casts to each
    dtype/device, so a sampler reused over the same grid does no kernel work.

    Parameters
    ----------
    sde:
        The linear SDE to follow, in its own time variable (e.g. ``sde.reverse_linear_part()``).
    """

    nfe = 0

    def __init__(self, sde: LinearSDEBase) -> None:
        if not isinstance(sde, LinearSDEBase):
            raise TypeError(f"sde must be a LinearSDEBase, got {type(sde).__name__}")
        self.sde = sde
        self._cache: dict = {}

    def coefficients(self, t: float, h: float, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Phi, L)`` for the step, cast to ``dtype``/``device`` (cached)."""
        key = (float(t), float(h))
        if key not in self._cache:
            Phi, Q = self.sde.kernel(key[0] + key[1], key[0])
            self._cache[key] = {None: (Phi, Q, psd_cholesky(Q, "the transition noise covariance"))}
        entry = self._cache[key]
        cast_key = (dtype, torch.device(device) if device is not None else torch.device("cpu"))
        if cast_key not in entry:
            Phi, _, L = entry[None]
            entry[cast_key] = (Phi.to(dtype=dtype, device=cast_key[1]), L.to(dtype=dtype, device=cast_key[1]))
        return entry[cast_key]

    def __call__(self, u, t, h, generator=None):
        Phi, L = self.coefficients(t, h, u.dtype, u.device)
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        return apply_matrix(Phi, u) + apply_matrix(L, noise)

    def gaussian_moments(self, mean, covariance, t, h):
        self.coefficients(t, h)
        Phi, Q, _ = self._cache[(float(t), float(h))][None]
        d = mean[0, 0].numel()
        A = _kron_identity(Phi, d)
        return apply_matrix(Phi, mean), A @ covariance @ A.T + _kron_identity(Q, d)


class EulerDrift(Propagator):
    r"""Euler step of a drift: :math:`u \mapsto u + h\,b(u, t + \theta h)`.

    Parameters
    ----------
    drift:
        Callable ``b(u, t) -> du/dt`` (``t`` a Python float).
    nfe:
        Score evaluations per call of ``drift`` (1 for a score term, 0 for a cheap analytic drift).
    time_point:
        :math:`\theta \in [0, 1]`: where in the step the drift is evaluated. The CLD paper's SSCS uses the
        step's start (``0``, Algorithm 1); ``0.5`` gives the midpoint rule.
    """

    def __init__(self, drift: Callable[[torch.Tensor, float], torch.Tensor], nfe: int = 1, time_point: float = 0.0):
        if not callable(drift):
            raise TypeError("drift must be a callable b(u, t)")
        if not 0.0 <= float(time_point) <= 1.0:
            raise ValueError(f"time_point must lie in [0, 1], got {time_point}")
        self.drift = drift
        self.nfe = int(nfe)
        self.time_point = float(time_point)

    def __call__(self, u, t, h, generator=None):
        return torch.add(u, self.drift(u, t + self.time_point * h), alpha=h)

    def gaussian_moments(self, mean, covariance, t, h):
        s = t + self.time_point * h
        shape = mean.shape
        n = mean.numel()

        def flat_map(x):
            y = x.reshape(shape)
            return (y + h * self.drift(y, s)).reshape(n)

        J = torch.func.jacrev(flat_map)(mean.reshape(n).to(torch.float64)).to(torch.float64)
        return flat_map(mean.reshape(n).to(torch.float64)).reshape(shape), J @ covariance @ J.T


class EulerMaruyama(Propagator):
    r"""Euler-Maruyama step :math:`u \mapsto u + h\,f(u, t) + \sqrt{h}\,(G(t) \otimes I_d)\,\xi`.

    Parameters
    ----------
    sde:
        Any object with ``drift(u, t)``, ``diffusion_matrix(t)`` (``k x m``, float64) and ``num_components``,
        e.g. a :class:`~splitdyn.linear_sde.LinearSDE` or a :class:`~splitdyn.reverse.ReverseSDE`.
    nfe:
        Score evaluations per drift call (default: ``sde.nfe`` if defined, else 0).
    """

    def __init__(self, sde, nfe: int | None = None) -> None:
        for attr in ("drift", "diffusion_matrix"):
            if not hasattr(sde, attr):
                raise TypeError(f"sde must define {attr}(...), got {type(sde).__name__}")
        self.sde = sde
        self.nfe = int(getattr(sde, "nfe", 0) if nfe is None else nfe)
        self._cache: dict = {}

    def _diffusion(self, t: float, dtype, device) -> torch.Tensor:
        key = (float(t), dtype, device)
        if key not in self._cache:
            self._cache[key] = self.sde.diffusion_matrix(float(t)).to(dtype=dtype, device=device)
        return self._cache[key]

    def __call__(self, u, t, h, generator=None):
        G = self._diffusion(t, u.dtype, u.device)
        noise = torch.randn((u.shape[0], G.shape[-1], *u.shape[2:]), generator=generator, dtype=u.dtype, device=u.device)
        return u + h * self.sde.drift(u, t) + (h**0.5) * apply_matrix(G, noise)

    def gaussian_moments(self, mean, covariance, t, h):
        G = self.sde.diffusion_matrix(float(t)).to(torch.float64)
        new_mean, new_cov = EulerDrift(self.sde.drift, self.nfe).gaussian_moments(mean, covariance, t, h)
        d = mean[0, 0].numel()
        return new_mean, new_cov + h * _kron_identity(G @ G.T, d)
