r"""Linear SDEs and their exact Gaussian transition kernels.

A linear SDE on states :math:`u \in \mathbb{R}^{k \times d}` made of ``k`` coupled components per coordinate
(position and velocity for CLD, ``k = 2``; the data alone for VP/VE diffusions, ``k = 1``) is

.. math::

    du = \beta(t)\,(F \otimes I_d)\,u\,dt + \sqrt{\beta(t)}\,(G \otimes I_d)\,dw,

with ``k x k`` matrices :math:`F` (drift) and :math:`G` (diffusion, ``k x m``). Its transition kernel is Gaussian,
:math:`u_t \mid u_s \sim \mathcal{N}(\Phi(t, s) u_s, Q(t, s) \otimes I_d)`, with (Van Loan, 1978)

.. math::

    \exp\!\left(\Delta B \begin{pmatrix} F & GG^\top \\ 0 & -F^\top \end{pmatrix}\right)
    = \begin{pmatrix} \Phi & M_{12} \\ 0 & \Phi^{-\top} \end{pmatrix},\qquad
    Q = M_{12}\,\Phi^\top,\qquad \Delta B = B(t) - B(s).

States are tensors of shape ``(batch, k, *event_shape)``: the component axis is dim 1.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable

import torch

from .linalg import apply_matrix  # noqa: F401 - re-exported for compatibility
from .checks import (as_float64, as_float64_matrix, as_float64_time, check_callable, check_count, check_positive,
                     check_state, check_time, check_tolerance)
from .moments import moment_kernels
from .schedules import ConstantBeta, ReversedRescaling, TimeRescaling

__all__ = [
    "LinearSDEBase",
    "LinearSDE",
    "TimeVaryingLinearSDE",
    "van_loan_kernel",
    "stationary_covariance",
]

_SERIES_THRESHOLD = 0.5  # switch to the Taylor series of Q when |dB| * ||F|| is below this
_SERIES_TERMS = 30


def _series_coefficients(F: torch.Tensor, GGt: torch.Tensor, terms: int) -> torch.Tensor:
    """C_n = L^{n-1}(GG^T) / n! with L(X) = F X + X F^T, so that Q(h) = sum_n h^n C_n."""
    coefficients = []
    current = GGt.clone()
    for n in range(1, terms + 1):
        coefficients.append(current / float(math.factorial(n)))
        current = F @ current + current @ F.T
    return torch.stack(coefficients)


def _exp_series(F: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`e^{hF} = \sum_n h^n F^n / n!` for a batch ``h`` of spans with ``|h| ||F|| < 0.5`` (float64)."""
    k = F.shape[-1]
    powers = h[:, None] ** torch.arange(0, _SERIES_TERMS + 1, dtype=torch.float64)
    terms = [torch.eye(k, dtype=torch.float64)]
    for n in range(1, _SERIES_TERMS + 1):
        terms.append(terms[-1] @ F / float(n))
    return torch.einsum("bn,nij->bij", powers, torch.stack(terms))


def van_loan_kernel(F: torch.Tensor, GGt: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Transition matrix and noise covariance of :math:`du = F u\,db + G\,dw_b` over a span ``delta`` of ``b``.

    Parameters
    ----------
    F, GGt:
        ``k x k`` matrices :math:`F` and :math:`GG^\top` (cast to float64: the kernels are always float64).
    delta:
        Non-negative spans :math:`\Delta B` (a number or a tensor of any shape, cast to float64). A negative
        span is refused: the formulas would return a negative "covariance" (go backwards in time with the
        reverse-time SDE instead). Negative rounding noise of at most ``1e-12`` relative is treated as zero.

    Returns
    -------
    (Phi, Q):
        Tensors of shape ``delta.shape + (k, k)``. :math:`\Phi` and :math:`Q` by Van Loan's block exponential
        (``torch.linalg.matrix_exp``), except where :math:`|\Delta B|\,\|F\| < 0.5`, where the Taylor series
        :math:`\Phi = \sum_n \Delta B^n F^n / n!` and :math:`Q = \sum_n \Delta B^n L^{n-1}(GG^\top)/n!`,
        :math:`L(X) = FX + XF^\top`, keep every entry to full relative precision: entries such as CLD's
        :math:`Q_{xx} = O(\Delta B^3)` would otherwise lose digits to the block exponential's norm-wise
        rounding error, and ``matrix_exp`` itself loses up to four digits of :math:`\Phi` at some small
        norms. Where
        :math:`|\Delta B|\,\|F\| > 1` the span is halved :math:`m` times and the result doubled back with
        the semigroup property, since the block exponential's error grows like :math:`e^{2|\Delta B|\|F\|}`.
    """
    F, GGt, delta = _check_van_loan_arguments(F, GGt, delta)
    k = F.shape[-1]
    shape = delta.shape
    flat = delta.reshape(-1)
    norm_F = torch.linalg.matrix_norm(F, ord=1).item()
    # Scaling and squaring on the semigroup: the block exponential's norm-wise rounding error grows like
    # exp(2 |dB| ||F||), so evaluate over dB / 2^m and double m times with
    # Phi(2h) = Phi(h)^2, Q(2h) = Phi(h) Q(h) Phi(h)^T + Q(h).
    # Each span gets its own number of doublings, so a short span batched with a long one keeps full accuracy.
    scaled = flat.abs() * norm_F
    doublings = torch.where(scaled > 1.0, torch.ceil(torch.log2(scaled.clamp_min(1.0))), torch.zeros_like(scaled))
    if bool((doublings > 0).any()):
        Phi = torch.empty(flat.numel(), k, k, dtype=torch.float64)
        Q = torch.empty_like(Phi)
        for m in torch.unique(doublings).tolist():
            idx = doublings == m
            Phi_m, Q_m = van_loan_kernel(F, GGt, flat[idx] / 2.0 ** int(m))
            for _ in range(int(m)):
                Q_m = Phi_m @ Q_m @ Phi_m.transpose(-1, -2) + Q_m
                Phi_m = Phi_m @ Phi_m
            Phi[idx], Q[idx] = Phi_m, 0.5 * (Q_m + Q_m.transpose(-1, -2))
        return Phi.reshape(*shape, k, k), Q.reshape(*shape, k, k)
    block = torch.zeros(2 * k, 2 * k, dtype=torch.float64)
    block[:k, :k] = F
    block[:k, k:] = GGt
    block[k:, k:] = -F.T
    exp_block = torch.linalg.matrix_exp(flat[:, None, None] * block)
    Phi = exp_block[:, :k, :k].clone()
    Q = exp_block[:, :k, k:] @ Phi.transpose(-1, -2)
    small = flat.abs() * norm_F < _SERIES_THRESHOLD
    if norm_F == 0:
        small = torch.ones_like(flat, dtype=torch.bool)
    if bool(small.any()):
        h = flat[small]
        powers = h[:, None] ** torch.arange(1, _SERIES_TERMS + 1, dtype=torch.float64)
        Q[small] = torch.einsum("bn,nij->bij", powers, _series_coefficients(F, GGt, _SERIES_TERMS))
        Phi[small] = _exp_series(F, h)
    Q = 0.5 * (Q + Q.transpose(-1, -2))
    return Phi.reshape(*shape, k, k), Q.reshape(*shape, k, k)


def _check_van_loan_arguments(F, GGt, delta) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(F, GGt, delta)`` as float64 CPU tensors, checked (square ``k x k`` pair, finite, ``delta >= 0``)."""
    F = as_float64_matrix("F", F, square=True)
    GGt = as_float64_matrix("GGt", GGt, (int(F.shape[0]), int(F.shape[1])))
    delta = as_float64("delta", delta, "a non-negative number or tensor of spans")
    if delta.numel() and float(delta.min()) < -1e-12 * max(1.0, float(delta.abs().max())):
        raise ValueError(f"delta must be non-negative (a forward span), got {float(delta.min())}: a negative span "
                         "gives a negative noise covariance")
    return F, GGt, delta.clamp_min(0.0)


def stationary_covariance(F: torch.Tensor, GGt: torch.Tensor) -> torch.Tensor:
    r"""Solve the Lyapunov equation :math:`F\Sigma + \Sigma F^\top + GG^\top = 0` (float64).

    Raises ``ValueError`` when :math:`F` has an eigenvalue with non-negative real part (no stationary law).
    """
    F = as_float64_matrix("F", F, square=True)
    GGt = as_float64_matrix("GGt", GGt, (int(F.shape[0]), int(F.shape[1])))
    k = F.shape[-1]
    eig = torch.linalg.eigvals(F)
    if bool((eig.real >= 0).any()):
        raise ValueError(
            f"the drift matrix has eigenvalues {eig.tolist()} with non-negative real part: the SDE has no "
            "stationary distribution"
        )
    eye = torch.eye(k, dtype=torch.float64)
    # Row-major vec: vec(F S) = (F kron I) vec(S), vec(S F^T) = (I kron F) vec(S).
    system = torch.kron(F, eye) + torch.kron(eye, F)
    sigma = torch.linalg.solve(system, -GGt.reshape(-1)).reshape(k, k)
    return 0.5 * (sigma + sigma.T)


class LinearSDEBase(ABC):
    r"""Common interface of linear SDEs :math:`du = F(t) u\,dt + G(t)\,dw` acting per coordinate.

    Subclasses provide :meth:`drift_matrix`, :meth:`diffusion_matrix`, :meth:`transition_matrix` and
    :meth:`noise_covariance`; everything else (drift, diffusion, perturbation kernels, reverse-time SDEs,
    oracles, samplers) is written against this interface.

    Attributes
    ----------
    num_components:
        ``k``, the number of coupled components per coordinate.
    T:
        The time horizon; times must lie in ``[0, T]``.
    """

    num_components: int
    T: float

    # -- coefficients -------------------------------------------------------------------------------
    @abstractmethod
    def _drift_matrix(self, t: torch.Tensor) -> torch.Tensor:
        """F(t) for a float64 tensor of times, without range checks (ODE solvers may probe past T)."""

    @abstractmethod
    def _diffusion_matrix(self, t: torch.Tensor) -> torch.Tensor:
        """G(t) for a float64 tensor of times, without range checks."""

    def drift_matrix(self, t, *, check_range: bool = True) -> torch.Tensor:
        r"""The ``k x k`` drift matrix :math:`F(t)` (float64, shape ``t.shape + (k, k)``); ``check_range=False``
        lets ODE solvers probe just past ``[0, T]``."""
        return self._drift_matrix(check_time("t", t, self.T) if check_range else as_float64_time("t", t))

    def diffusion_matrix(self, t, *, check_range: bool = True) -> torch.Tensor:
        r"""The ``k x m`` diffusion matrix :math:`G(t)` (float64, shape ``t.shape + (k, m)``)."""
        return self._diffusion_matrix(check_time("t", t, self.T) if check_range else as_float64_time("t", t))

    def diffusion_covariance(self, t) -> torch.Tensor:
        r""":math:`G(t)G(t)^\top` (float64, shape ``t.shape + (k, k)``)."""
        G = self.diffusion_matrix(t)
        return G @ G.transpose(-1, -2)

    def drift(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The drift :math:`f(u, t) = (F(t) \otimes I_d)\,u` for a state of shape ``(batch, k, *event)``.

        ``t`` is a scalar or a tensor of shape ``(batch,)``.
        """
        check_state("u", u, self.num_components)
        return apply_matrix(self.drift_matrix(self._batch_time(t, u)), u)

    def _batch_time(self, t, u: torch.Tensor) -> torch.Tensor:
        t = check_time("t", t, self.T)
        if t.ndim == 0:
            return t
        if t.shape != (u.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({u.shape[0]},), got {tuple(t.shape)}")
        return t

    @property
    def noise_dimension(self) -> int:
        """``m``, the number of Brownian components per coordinate."""
        return int(self.diffusion_matrix(torch.tensor(0.0, dtype=torch.float64)).shape[-1])

    # -- kernels ------------------------------------------------------------------------------------
    @abstractmethod
    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        r"""Transition (mean) matrix :math:`\Phi(t, s)`, so that :math:`E[u_t \mid u_s] = \Phi(t, s) u_s`."""

    @abstractmethod
    def noise_covariance(self, t, s=0.0) -> torch.Tensor:
        r"""Noise covariance :math:`Q(t, s) = \int_s^t \Phi(t, r) G G^\top(r) \Phi(t, r)^\top dr`."""

    def kernel(self, t, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Both :math:`(\Phi(t, s), Q(t, s))`; subclasses may compute them together."""
        return self.transition_matrix(t, s), self.noise_covariance(t, s)

    def _check_interval(self, t, s) -> tuple[torch.Tensor, torch.Tensor]:
        t = check_time("t", t, self.T)
        s = check_time("s", s, self.T)
        t, s = torch.broadcast_tensors(t, s)
        if bool((t < s).any()):
            raise ValueError("kernels need t >= s (use the reverse-time SDE to go backwards in time)")
        return t, s


class LinearSDE(LinearSDEBase):
    r"""Time-rescaled linear SDE :math:`du = \beta(t) F u\,dt + \sqrt{\beta(t)}\,G\,dw` with constant ``F, G``.

    Parameters
    ----------
    drift_matrix:
        :math:`F`, a ``k x k`` matrix (anything ``torch.as_tensor`` accepts).
    diffusion_matrix:
        :math:`G`, a ``k x m`` matrix.
    beta:
        The time rescaling: a positive number (constant rate) or a :class:`~splitdyn.schedules.TimeRescaling`
        (e.g. :class:`~splitdyn.schedules.LinearBeta` for the VPSDE).
    T:
        Time horizon.

    Examples
    --------
    An Ornstein-Uhlenbeck process (the VPSDE with constant rate):

    >>> import torch
    >>> from splitdyn import LinearSDE
    >>> sde = LinearSDE([[-0.5]], [[1.0]], beta=2.0)
    >>> sde.transition_matrix(1.0)
    tensor([[0.3679]], dtype=torch.float64)
    >>> sde.noise_covariance(1.0)
    tensor([[0.8647]], dtype=torch.float64)
    """

    def __init__(self, drift_matrix, diffusion_matrix, beta: float | TimeRescaling = 1.0, T: float = 1.0) -> None:
        F = as_float64_matrix("drift_matrix", drift_matrix, square=True)
        G = as_float64_matrix("diffusion_matrix", diffusion_matrix)
        if G.shape[0] != F.shape[0]:
            raise ValueError(f"diffusion_matrix must have shape (k, m) = ({F.shape[0]}, m), got {tuple(G.shape)}")
        if not isinstance(beta, TimeRescaling):
            beta = ConstantBeta(beta)
        self.F = F
        self.G = G
        self.GGt = G @ G.T
        self.rescaling = beta
        self.T = check_positive("T", T)
        self.num_components = F.shape[0]

    def __repr__(self) -> str:
        return f"LinearSDE(F={self.F.tolist()}, G={self.G.tolist()}, beta={self.rescaling!r}, T={self.T})"

    def beta(self, t) -> torch.Tensor:
        r"""The rate :math:`\beta(t)` (float64)."""
        return self.rescaling.beta(check_time("t", t, self.T))

    @property
    def schedule(self) -> TimeRescaling:
        """The :class:`~splitdyn.schedules.Schedule` of :math:`\beta(t)`: the same object as ``rescaling``, under
        the name every process uses."""
        return self.rescaling

    def _drift_matrix(self, t: torch.Tensor) -> torch.Tensor:
        return self.rescaling.beta(t)[..., None, None] * self.F

    def _diffusion_matrix(self, t: torch.Tensor) -> torch.Tensor:
        return self.rescaling.beta(t).sqrt()[..., None, None] * self.G

    def kernel(self, t, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self._check_interval(t, s)
        return self.increment_kernel(self.rescaling.increment(t, s))

    def increment_kernel(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\Phi, Q)` over an integrated rate :math:`\Delta B` (any non-negative float64 tensor): the kernel
        depends on the interval only through it. Van Loan here; processes with closed forms override it."""
        return van_loan_kernel(self.F, self.GGt, delta)

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        t, s = self._check_interval(t, s)
        delta = self.rescaling.increment(t, s)
        Phi = torch.linalg.matrix_exp(delta[..., None, None] * self.F)
        # torch.linalg.matrix_exp loses up to three digits at small norms: use the series there (as the kernel)
        small = delta.abs() * torch.linalg.matrix_norm(self.F, ord=1) < _SERIES_THRESHOLD
        if bool(small.any()):
            Phi[small] = _exp_series(self.F, delta[small])
        return Phi

    def noise_covariance(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[1]

    def stationary_covariance(self) -> torch.Tensor:
        r"""The stationary covariance :math:`\Sigma_\infty` solving :math:`F\Sigma + \Sigma F^\top + GG^\top = 0`.

        It does not depend on :math:`\beta(t)`. For CLD it is :math:`\mathrm{diag}(1, M)`.
        """
        return stationary_covariance(self.F, self.GGt)

    def reverse_linear_part(self, precision=None) -> "LinearSDE":
        r"""The linear part of the reverse-time SDE, as a linear SDE in reverse time :math:`\tau = T - t`.

        Writing the score as :math:`\nabla \log p = (\nabla \log p + P u) - P u` for a reference precision
        :math:`P` (default: the stationary precision :math:`\Sigma_\infty^{-1}`), the reverse drift
        :math:`-f + GG^\top \nabla\log p` splits into the linear part
        :math:`\tilde\beta(\tau)\,(-F - GG^\top P)\,u` with noise :math:`\sqrt{\tilde\beta(\tau)}\,G\,d\bar w`,
        returned here with :math:`\tilde\beta(\tau) = \beta(T - \tau)`, and the score part
        :math:`\tilde\beta(\tau)\,GG^\top(\nabla\log p + P u)` (see :meth:`splitdyn.reverse.ReverseSDE.score_part`).
        For CLD this is the paper's :math:`\hat{\mathcal L}^*_A` (eq. 76, kernels eq. 85-90).

        Parameters
        ----------
        precision:
            ``k x k`` reference precision :math:`P`; default :meth:`reference_precision` (the inverse stationary
            covariance, or zero for an SDE without a stationary law).
        """
        k = int(self.F.shape[0])
        P = self.reference_precision() if precision is None else as_float64_matrix("precision", precision, (k, k))
        return LinearSDE(-self.F - self.GGt @ P, self.G, ReversedRescaling(self.rescaling, self.T), self.T)

    def reference_precision(self) -> torch.Tensor:
        r"""The precision :math:`\Sigma_\infty^{-1}` of the stationary law, used to split reverse drifts; zero when
        there is no stationary law (e.g. the VE SDE, :math:`F = 0`): :math:`P = 0` is a valid split too (the
        linear part is then :math:`-F`, the score part :math:`GG^\top s`)."""
        if bool((torch.linalg.eigvals(self.F).real >= 0).any()):
            return torch.zeros_like(self.F)
        return torch.linalg.inv(self.stationary_covariance())


class TimeVaryingLinearSDE(LinearSDEBase):
    r"""General linear SDE :math:`du = F(t) u\,dt + G(t)\,dw` with callables for :math:`F(t)` and :math:`G(t)`.

    The kernels are obtained by integrating the moment ODEs :math:`\dot\Phi = F\Phi` and
    :math:`\dot Q = FQ + QF^\top + GG^\top` with torchdiffeq (see :func:`splitdyn.moments.moment_kernels`).

    Parameters
    ----------
    drift_matrix, diffusion_matrix:
        Callables mapping a float64 scalar tensor ``t`` to a ``k x k`` (``k x m``) tensor (or nested list). Both
        are called once at ``t = 0`` by the constructor to check their shapes.
    num_components:
        ``k``.
    T:
        Time horizon.
    rtol, atol:
        Tolerances of the moment-ODE solve (``dopri5``).
    """

    def __init__(
        self,
        drift_matrix: Callable[[torch.Tensor], torch.Tensor],
        diffusion_matrix: Callable[[torch.Tensor], torch.Tensor],
        num_components: int,
        T: float = 1.0,
        rtol: float = 1e-11,
        atol: float = 1e-13,
    ) -> None:
        self._F = check_callable("drift_matrix", drift_matrix, "a callable of time returning a k x k matrix")
        self._G = check_callable("diffusion_matrix", diffusion_matrix, "a callable of time returning a k x m matrix")
        self.num_components = check_count("num_components", num_components)
        self.T = check_positive("T", T)
        self.rtol = check_tolerance("rtol", rtol)
        self.atol = check_tolerance("atol", atol)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self._noise_dimension = None
        self._noise_dimension = int(self._diffusion_matrix(zero).shape[-1])
        self._drift_matrix(zero)

    def _evaluate(self, fn, name: str, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        k = self.num_components
        values = []
        for ti in t.reshape(-1):
            value = fn(ti)
            if value is None or isinstance(value, (str, bytes)):
                raise TypeError(f"{name} must return a matrix (tensor or nested list), got {type(value).__name__}")
            value = as_float64(f"{name}(t) at t = {float(ti)}", value, "a real matrix")
            m = k if name == "drift_matrix" else self._noise_dimension
            if value.ndim != 2 or value.shape[0] != k or (m is not None and value.shape[1] != m) or value.shape[1] == 0:
                expected = f"({k}, {k})" if name == "drift_matrix" else f"({k}, {m if m is not None else 'm'})"
                raise ValueError(
                    f"{name} must return a matrix of shape {expected} (num_components = {k}), got shape "
                    f"{tuple(value.shape)} at t = {float(ti)}"
                )
            values.append(value)
        stacked = torch.stack(values)
        return stacked.reshape(*t.shape, *stacked.shape[1:])

    def _drift_matrix(self, t: torch.Tensor) -> torch.Tensor:
        return self._evaluate(self._F, "drift_matrix", t)

    def _diffusion_matrix(self, t: torch.Tensor) -> torch.Tensor:
        return self._evaluate(self._G, "diffusion_matrix", t)

    def kernel(self, t, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self._check_interval(t, s)
        return moment_kernels(self, t, s, rtol=self.rtol, atol=self.atol)

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[0]

    def noise_covariance(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[1]
