r"""Noise sources: where stochastic plans take their Gaussian draws from.

A plan is called as ``plan(u, i, noise)`` and always receives a :class:`NoiseSource`: the entry points
(:func:`~splitdyn.integrate.integrate`, :func:`~splitdyn.sample`, ``Step.__call__``) wrap a plain ``torch.Generator`` (or ``None``) once, with
:func:`as_noise_source`, in a :class:`GaussianNoise`: independent standard normals from ``torch.randn``
(the fast path; a plan may draw them in whatever layout it prefers from ``noise.generator`` when
``noise.brownian`` is false). :class:`BrownianNoise` wraps a ``torchsde``
Brownian motion :math:`W` (``BrownianInterval``, ``BrownianTree`` or ``BrownianPath``) of size
``(batch, m * d)`` over the dynamics' own time (reverse time :math:`\tau` for samplers, the convention of
:class:`~splitdyn.interop.TorchsdeSolver`), so that our steps and ``torchsde`` run on the same path and
strong errors across step sizes can be measured (``integrate(..., noise=BrownianNoise(bm))``).

**Euler-type steps** use the normalised increment :math:`\xi = (W(t + h) - W(t)) / \sqrt h`: Euler-Maruyama
then equals ``torchsde``'s ``euler`` on the same path to rounding.

**Exact linear flows** need more than the increment. The exact noise of a step,
:math:`N = \int_t^{t+h} \Phi(t + h, s)\,G(s)\,dW_s`, is not a function of :math:`\Delta W` alone. The plan
draws it from its conditional law given what the Brownian motion provides:

.. math::

    N = B_0\,\Delta W + B_1\,U + R\,\zeta, \qquad U = \int_t^{t+h} (W_s - W_t)\,ds,

where :math:`(B_0, B_1)` project :math:`N` onto :math:`(\Delta W, U)` (:math:`B_1 = 0` when the Brownian
motion has no space-time Lévy area, ``levy_area_approximation="none"``), :math:`RR^\top` is the covariance
of the remainder and :math:`\zeta` is an independent standard normal from the source's own ``generator``.
The joint law of path and state is exact (up to a 16-node Gauss-Legendre quadrature of
:math:`s \mapsto \Phi(t+h, s) G(s)`, float64). The remainder has size :math:`O(h^{3/2})` with the increment
alone and :math:`O(h^{5/2})` with the space-time Lévy area (``levy_area_approximation="space-time"``), so a
splitting sampler converges strongly to the path's solution with order 1 in the first case and is limited
by its other sub-steps in the second.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from ..gaussian import psd_cholesky

__all__ = ["NoiseSource", "GaussianNoise", "BrownianNoise", "as_noise_source", "brownian_flow_tables"]

_LEVY = ("space-time", "davie", "foster")
_NODES, _WEIGHTS = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(16))


class NoiseSource(ABC):
    """Where a plan takes the Gaussian draws of interval :math:`[t, t + h]` from (see the module docstring)."""

    #: Whether the draws are increments of one Brownian path (then exact flows condition on them).
    brownian: bool = False
    #: The ``torch.Generator`` of the draws independent of any path (``None``: the device's default one).
    generator: torch.Generator | None = None

    @abstractmethod
    def standard_normal(self, shape: Sequence[int], start: float, span: float, like: torch.Tensor,
                        columns: Sequence[int] | None = None) -> torch.Tensor:
        r""":math:`\xi` of shape ``(batch, len(columns), *event)`` for the interval ``[start, start + span]``.

        ``shape`` is the full ``(batch, m, *event)``; ``columns`` selects noise channels (default all).
        """

    def independent_normal(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """Standard normals independent of the path (remainders of exact flows, Langevin corrector noise)."""
        return torch.randn(tuple(shape), generator=self.generator, dtype=like.dtype, device=like.device)

    def get_state(self, device: torch.device) -> object:
        """What :meth:`set_state` needs to draw the same numbers again on ``device`` (``None`` if it cannot)."""
        return _generator_state(self.generator, device)

    def set_state(self, state: object, device: torch.device) -> None:
        """Rewind to a state from :meth:`get_state` (so that a replay draws the same noise)."""
        _set_generator_state(self.generator, state, device)


def _generator_state(generator: torch.Generator | None, device: torch.device) -> object:
    if generator is not None:
        return generator.get_state()
    if device.type == "cpu":
        return torch.random.get_rng_state()
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return None  # another backend's default generator: a replay cannot draw the same noise


def _set_generator_state(generator: torch.Generator | None, state: object, device: torch.device) -> None:
    if not isinstance(state, torch.Tensor):  # None: nothing to rewind to
        return
    if generator is not None:
        generator.set_state(state)
    elif device.type == "cpu":
        torch.random.set_rng_state(state)
    elif device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


class GaussianNoise(NoiseSource):
    """Independent standard normals from ``torch.randn`` with ``generator`` (``None``: the default one).

    What every plain ``torch.Generator`` (or ``None``) given to an entry point becomes (:func:`as_noise_source`).
    """

    brownian = False

    def __init__(self, generator: torch.Generator | None = None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def standard_normal(self, shape, start, span, like, columns=None):
        if columns is not None:
            shape = (shape[0], len(columns), *shape[2:])
        return torch.randn(tuple(shape), generator=self.generator, dtype=like.dtype, device=like.device)

    def __repr__(self) -> str:
        return f"GaussianNoise({'default generator' if self.generator is None else self.generator})"


def as_noise_source(generator: object, device: torch.device | str | None = None,
                    name: str = "generator") -> NoiseSource:
    """The :class:`NoiseSource` for what a caller passed as ``name``: a source as is, a ``torch.Generator`` or
    ``None`` wrapped in a :class:`GaussianNoise`; anything else is refused by name. With ``device``, a
    generator on another device type is refused (``torch.randn`` would fail deep inside a step)."""
    if isinstance(generator, NoiseSource):
        return generator
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator (or None), got {type(generator).__name__}"
                        + (f" {generator!r}" if isinstance(generator, (int, float, str)) else ""))
    if generator is not None and device is not None and torch.device(device).type != generator.device.type:
        raise ValueError(f"{name} is a generator on {generator.device}, but the state is on {torch.device(device)}: "
                         "pass torch.Generator(device=...) on the state's device")
    return GaussianNoise(generator)


class BrownianNoise(NoiseSource):
    r"""Increments of a ``torchsde`` Brownian motion, for every stochastic step (see the module docstring).

    Parameters
    ----------
    bm:
        A ``torchsde`` Brownian motion of size ``(batch, m * d)`` (noise channel major, as
        :class:`~splitdyn.reverse.TorchsdeAdapter` flattens) covering the grid, in the dynamics' own time.
    generator:
        ``torch.Generator`` for the draws that are independent of the path.
    """

    brownian = True

    def __init__(self, bm: object, generator: torch.Generator | None = None) -> None:
        if not callable(bm) or not hasattr(bm, "shape"):
            raise TypeError(f"bm must be a torchsde Brownian motion (BrownianInterval, ...), got {type(bm).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.bm = bm
        self.generator = generator
        #: Whether the path provides the space-time Lévy area (then exact flows use it).
        self.levy_area = getattr(bm, "levy_area_approximation", "none") in _LEVY

    def _query(self, start: float, span: float, like: torch.Tensor, m: int, with_area: bool):
        batch = like.shape[0]
        if tuple(self.bm.shape) != (batch, m * int(np.prod(like.shape[2:], dtype=np.int64))):
            raise ValueError(f"bm must have size (batch, m * d) = ({batch}, {m} * {tuple(like.shape[2:])}), "
                             f"got {tuple(self.bm.shape)}")
        shape = (batch, m, *like.shape[2:])
        if with_area:
            W, U = self.bm(start, start + span, return_U=True)
            return W.reshape(shape).to(like.dtype), U.reshape(shape).to(like.dtype)
        return self.bm(start, start + span).reshape(shape).to(like.dtype), None

    def increments(self, start: float, span: float, like: torch.Tensor, m: int):
        r""":math:`(\Delta W, U)` over ``[start, start + span]``, each ``(batch, m, *event)``; ``U`` is ``None``
        without a space-time Lévy area."""
        return self._query(start, span, like, m, self.levy_area)

    def standard_normal(self, shape, start, span, like, columns=None):
        W, _ = self._query(start, span, like, int(shape[1]), False)
        if columns is not None and len(columns) != shape[1]:
            W = W[:, list(columns)]
        return W / span ** 0.5


def brownian_flow_tables(sde, starts: torch.Tensor, spans: torch.Tensor, levy_area: bool):
    r"""Float64 ``(B0, B1, R)`` of the exact flow's noise given :math:`(\Delta W, U)` (module docstring).

    For intervals ``[starts[i], starts[i] + spans[i]]`` of the linear SDE ``sde``: ``B0``, ``B1`` of shape
    ``(n, k, m)`` (``B1`` zero without ``levy_area``) and ``R`` of shape ``(n, k, k)`` with :math:`RR^\top`
    the covariance of the remainder, all from a Gauss-Legendre quadrature of
    :math:`r \mapsto \Phi(t + h, t + h - r)\,G(t + h - r)` (:math:`r` the time to the interval's end).
    """
    t, h = starts.to(torch.float64), spans.to(torch.float64)
    n, J = t.numel(), _NODES.numel()
    r = 0.5 * h[:, None] * (1.0 + _NODES[None, :])  # (n, J): time back from the interval's end
    w = 0.5 * h[:, None] * _WEIGHTS[None, :]
    end = (t + h)[:, None].expand(n, J)
    s = end - r
    Phi = sde.transition_matrix(end.reshape(-1), s.reshape(-1)).reshape(n, J, *sde.drift_matrix(t[:1]).shape[-2:])
    G = sde.diffusion_matrix(s.reshape(-1))
    PG = Phi @ G.reshape(n, J, *G.shape[-2:])  # (n, J, k, m)
    hh = h[:, None, None]
    A0 = (w[..., None, None] * PG).sum(1)
    if levy_area:
        A1 = (w[..., None, None] * r[..., None, None] * PG).sum(1)
        B0 = 4.0 * A0 / hh - 6.0 * A1 / hh ** 2
        B1 = -6.0 * A0 / hh ** 2 + 12.0 * A1 / hh ** 3
    else:
        B0, B1 = A0 / hh, torch.zeros_like(A0)
    rest = PG - B0[:, None] - B1[:, None] * r[..., None, None]  # the part of the integrand N misses
    cov = (w[..., None, None] * rest @ rest.transpose(-1, -2)).sum(1)
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    return B0, B1, psd_cholesky(cov, "the remainder covariance of the exact flow's noise")
