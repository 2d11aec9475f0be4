r"""The mass matrix :math:`M` of the kinetic energy :math:`|p|^2_{M^{-1}}/2` (a scalar, diagonal or dense metric).

Samplers with momenta (HMC, generalized HMC, kinetic Langevin) use a kinetic energy
:math:`K(p) = \tfrac12 p^\top M^{-1} p` and draw momenta :math:`p \sim \mathcal N(0, M)`; preconditioned
MALA proposes with covariance :math:`2hM^{-1}`. The best :math:`M^{-1}` is the target's covariance
(Neal 2011, Sec. 4.1), which is what warm-up estimates (:mod:`splitdyn.mcmc.adaptation`). A
:class:`MassMatrix` is given by its *inverse* :math:`C = M^{-1}` (as in Stan and blackjax):

- a positive number (a scalar :math:`M^{-1} = cI`);
- a positive tensor of the event shape (diagonal :math:`M^{-1}`);
- a symmetric positive definite ``(d, d)`` matrix for ``d`` event coordinates (dense :math:`M^{-1}`), with
  the factors :math:`C = LL^\top` and :math:`M = C^{-1}` computed once in float64.

Positions and momenta have shape ``(chains, *event)``; the dense metric acts on the flattened event.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["MassMatrix", "as_mass_matrix"]


class MassMatrix:
    r"""A scalar, diagonal or dense mass matrix given by its inverse :math:`C = M^{-1}`.

    Parameters
    ----------
    inverse_mass:
        A positive number, a positive tensor of the event shape (diagonal), or an SPD ``(d, d)`` tensor with
        ``d`` the number of event coordinates (dense; pass ``dense=True`` when ``d`` equals the event's
        first dimension and the event is 2-D, to remove the ambiguity).
    dense:
        Read a 2-D ``inverse_mass`` as a dense matrix (default: a 2-D square tensor is dense unless
        ``dense=False``).

    Attributes
    ----------
    kind:
        ``"scalar"``, ``"diagonal"`` or ``"dense"``.
    """

    def __init__(self, inverse_mass: Any = 1.0, dense: bool | None = None) -> None:
        if isinstance(inverse_mass, bool):
            raise TypeError("inverse_mass must be a positive number or tensor, got bool")
        if isinstance(inverse_mass, (int, float)):
            c = float(inverse_mass)
            if not math.isfinite(c) or c <= 0:
                raise ValueError(f"inverse_mass must be a finite positive number, got {c}")
            self.kind, self.scalar = "scalar", c
            return
        if not isinstance(inverse_mass, torch.Tensor):
            raise TypeError(f"inverse_mass must be a positive number or a torch.Tensor, got {type(inverse_mass).__name__}")
        C = inverse_mass.detach().to(torch.float64)
        if C.numel() == 0 or not bool(torch.isfinite(C).all()):
            raise ValueError("inverse_mass must be a non-empty tensor of finite values")
        is_dense = dense if dense is not None else (C.ndim == 2 and C.shape[0] == C.shape[1] and C.shape[0] > 1)
        if is_dense:
            if C.ndim != 2 or C.shape[0] != C.shape[1]:
                raise ValueError(f"a dense inverse_mass must be a square (d, d) matrix, got shape {tuple(C.shape)}")
            if not torch.allclose(C, C.T, rtol=1e-10, atol=1e-12):
                raise ValueError("a dense inverse_mass must be symmetric")
            L, info = torch.linalg.cholesky_ex(C)
            if int(info) != 0:
                raise ValueError("a dense inverse_mass must be positive definite (its Cholesky factorisation failed)")
            self.kind = "dense"
            self.inverse64, self.cholesky64 = C, L  # C = L L^T
            eye = torch.eye(C.shape[0], dtype=torch.float64)
            self.mass64 = torch.cholesky_inverse(L)  # M = C^{-1}
            # rows p = xi @ R with R = L^{-1}: cov(p) = R^T R = L^{-T} L^{-1} = C^{-1} = M
            self.momentum_factor64 = torch.linalg.solve_triangular(L, eye, upper=False)
            self.dimension = C.shape[0]
        else:
            if bool((C <= 0).any()):
                raise ValueError("a diagonal inverse_mass must be positive everywhere")
            self.kind = "diagonal"
            self.inverse64 = C
        self._cast: dict = {}

    def tensor(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The float64 table ``name`` (``"inverse"``, ``"mass"``, ``"cholesky"``, ``"momentum_factor"``) cast to
        ``like``'s dtype and device, once per (dtype, device)."""
        key = (name, like.dtype, like.device)
        value = self._cast.get(key)
        if value is None:
            value = getattr(self, name + "64").to(like.device, like.dtype)
            self._cast[key] = value
        return value

    def check(self, event_shape: tuple) -> "MassMatrix":
        """Check that the metric fits an event of shape ``event_shape``; returns ``self``."""
        d = math.prod(event_shape)
        if self.kind == "diagonal":
            try:
                torch.broadcast_shapes(tuple(self.inverse64.shape), tuple(event_shape))
            except RuntimeError:
                raise ValueError(f"a diagonal inverse_mass of shape {tuple(self.inverse64.shape)} does not fit events "
                                 f"of shape {tuple(event_shape)}") from None
            if tuple(torch.broadcast_shapes(tuple(self.inverse64.shape), tuple(event_shape))) != tuple(event_shape):
                raise ValueError(f"a diagonal inverse_mass of shape {tuple(self.inverse64.shape)} does not fit events "
                                 f"of shape {tuple(event_shape)}")
        elif self.kind == "dense" and self.dimension != d:
            raise ValueError(f"a dense inverse_mass of shape {tuple(self.inverse64.shape)} does not fit events of "
                             f"{d} coordinates")
        return self

    def _dense(self, v: torch.Tensor, name: str) -> torch.Tensor:
        flat = v.reshape(v.shape[0], -1)
        return (flat @ self.tensor(name, v)).reshape(v.shape)

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        r""":math:`M^{-1}p` (a new tensor)."""
        if self.kind == "scalar":
            return p * self.scalar
        if self.kind == "diagonal":
            return p * self.tensor("inverse", p)
        return self._dense(p, "inverse")

    def drift(self, q: torch.Tensor, p: torch.Tensor, h: float, in_place: bool = False) -> torch.Tensor:
        r""":math:`q + hM^{-1}p` (A, the position drift), into ``q`` when ``in_place``."""
        if self.kind == "scalar":
            return q.add_(p, alpha=h * self.scalar) if in_place else torch.add(q, p, alpha=h * self.scalar)
        if self.kind == "diagonal":
            inverse = self.tensor("inverse", p)
            return q.addcmul_(p, inverse, value=h) if in_place else torch.addcmul(q, p, inverse, value=h)
        return q.add_(self.velocity(p), alpha=h) if in_place else torch.add(q, self.velocity(p), alpha=h)

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        r""":math:`\tfrac12 p^\top M^{-1} p` per chain, shape ``(chains,)``."""
        flat = p.reshape(p.shape[0], -1)
        if self.kind == "scalar":
            return 0.5 * self.scalar * flat.square().sum(1)
        return 0.5 * (flat * self.velocity(p).reshape(p.shape[0], -1)).sum(1)

    def mass_norm(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`v^\top M v` per chain (the squared norm of a position increment in the metric)."""
        flat = v.reshape(v.shape[0], -1)
        if self.kind == "scalar":
            return flat.square().sum(1) / self.scalar
        if self.kind == "diagonal":
            return (v * v / self.tensor("inverse", v)).reshape(v.shape[0], -1).sum(1)
        return (flat * self._dense(v, "mass").reshape(v.shape[0], -1)).sum(1)

    def scale_momentum(self, xi: torch.Tensor) -> torch.Tensor:
        r""":math:`M^{1/2}\xi`-distributed: a draw of :math:`\mathcal N(0, M)` from standard normals ``xi``."""
        if self.kind == "scalar":
            return xi if self.scalar == 1.0 else xi / math.sqrt(self.scalar)
        if self.kind == "diagonal":
            return xi / self.tensor("inverse", xi).sqrt()
        return self._dense(xi, "momentum_factor")

    def scale_position(self, xi: torch.Tensor) -> torch.Tensor:
        r"""A draw of :math:`\mathcal N(0, M^{-1})` from standard normals ``xi`` (:math:`L\xi`, :math:`C = LL^\top`)."""
        if self.kind == "scalar":
            return xi if self.scalar == 1.0 else xi * math.sqrt(self.scalar)
        if self.kind == "diagonal":
            return xi * self.tensor("inverse", xi).sqrt()
        flat = xi.reshape(xi.shape[0], -1)
        return (flat @ self.tensor("cholesky", xi).T).reshape(xi.shape)

    def momentum(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Momenta :math:`p \sim \mathcal N(0, M)` of the shape, dtype and device of ``like``."""
        xi = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
        return self.scale_momentum(xi)

    def inverse(self) -> float | torch.Tensor:
        """:math:`M^{-1}` as data: a float, the diagonal, or the dense float64 matrix."""
        return self.scalar if self.kind == "scalar" else self.inverse64.clone()

    def __repr__(self) -> str:
        if self.kind == "scalar":
            return f"MassMatrix({self.scalar:g})"
        return f"MassMatrix({self.kind}, shape={tuple(self.inverse64.shape)})"


def as_mass_matrix(mass: Any = 1.0, inverse_mass: Any = None) -> MassMatrix:
    r"""A :class:`MassMatrix` from a scalar ``mass`` :math:`M` or an ``inverse_mass`` (number, tensor or
    :class:`MassMatrix`); giving both is refused unless ``mass`` is 1."""
    from ..checks import check_positive

    mass = check_positive("mass", mass)
    if inverse_mass is None:
        return MassMatrix(1.0 / mass)
    if mass != 1.0:
        raise ValueError("pass either mass or inverse_mass, not both")
    return inverse_mass if isinstance(inverse_mass, MassMatrix) else MassMatrix(inverse_mass)
