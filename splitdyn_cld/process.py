r"""Critically-damped Langevin diffusion (CLD), the forward process of the paper (eq. 4-5).

.. math::

    \begin{pmatrix} dx_t \\ dv_t \end{pmatrix}
    = \beta(t)\begin{pmatrix} M^{-1} v_t \\ -x_t - \Gamma M^{-1} v_t \end{pmatrix} dt
    + \begin{pmatrix} 0 \\ \sqrt{2\Gamma\beta(t)}\,dw_t \end{pmatrix},

i.e. the :class:`splitdyn.LinearSDE` with :math:`F = \begin{pmatrix} 0 & M^{-1} \\ -1 & -\Gamma M^{-1}\end{pmatrix}`
and :math:`G = \mathrm{diag}(0, \sqrt{2\Gamma})`. States are ``(batch, 2, *event_shape)`` with data
:math:`x` in component 0 and velocity :math:`v` in component 1. The equilibrium is
:math:`\mathcal{N}(0, \mathrm{diag}(1, M))`; critical damping is :math:`\Gamma^2 = 4M`.
"""

from __future__ import annotations

import math
import warnings

import torch

from splitdyn import LinearSDE, PerturbationKernel, ReverseSDE
from splitdyn.checks import check_finite_tensor, check_nonnegative, check_positive
from splitdyn.schedules import TimeRescaling
from splitdyn.checks import check_data_batch, check_sample_shape

from .kernels import ReverseLinearPart, forward_increment_kernel

__all__ = ["CLD"]


class CLD(LinearSDE):
    r"""The CLD forward SDE with mass :math:`M`, friction :math:`\Gamma`, rate :math:`\beta` and velocity scale :math:`\gamma`.

    Parameters
    ----------
    mass:
        :math:`M > 0` (paper default ``0.25``, i.e. :math:`M^{-1} = 4`).
    friction:
        :math:`\Gamma > 0`; default critical damping :math:`\Gamma = 2\sqrt{M}`. A value that is not
        critically damped gives a warning (under- or over-damped CLD is allowed, just not the paper's).
    beta:
        Constant rate :math:`\beta` or a :class:`~splitdyn.schedules.TimeRescaling` (paper: ``4``).
    gamma:
        Initial velocity variance scale: :math:`v_0 \sim \mathcal{N}(0, \gamma M I)` (paper: ``0.04``).
    eps_num:
        Numerical stabiliser added to the perturbation covariance's diagonal before the Cholesky factorisation
        (paper: ``1e-9`` for CIFAR-10, ``1e-6`` for toys/CelebA-HQ).
    T:
        Time horizon (``1``).
    """

    #: The components a CLD score model returns: the velocity's alone (:math:`GG^\top` vanishes on :math:`x`).
    score_components = (1,)

    def __init__(
        self,
        mass: float = 0.25,
        friction: float | None = None,
        beta: float | TimeRescaling = 4.0,
        gamma: float = 0.04,
        eps_num: float = 1e-6,
        T: float = 1.0,
    ) -> None:
        mass = check_positive("mass", mass)
        if friction is None:
            friction = 2.0 * math.sqrt(mass)
        friction = check_positive("friction", friction)
        if not math.isclose(friction**2, 4.0 * mass, rel_tol=1e-9):
            warnings.warn(
                f"CLD with friction={friction} and mass={mass} is not critically damped "
                f"(friction^2 = {friction**2:.6g} != 4 * mass = {4 * mass:.6g})",
                stacklevel=2,
            )
        self.mass = mass
        self.friction = friction
        self.gamma = check_positive("gamma", gamma)
        self.eps_num = check_nonnegative("eps_num", eps_num)
        super().__init__(
            [[0.0, 1.0 / mass], [-1.0, -friction / mass]],
            [[0.0, 0.0], [0.0, math.sqrt(2.0 * friction)]],
            beta,
            T,
        )

    def __repr__(self) -> str:
        return (
            f"CLD(mass={self.mass}, friction={self.friction}, beta={self.rescaling!r}, gamma={self.gamma}, "
            f"eps_num={self.eps_num}, T={self.T})"
        )

    def initial_covariance(self, kind: str = "hsm") -> torch.Tensor:
        r"""Per-coordinate ``2 x 2`` covariance :math:`\Sigma_0` of :math:`u_0` given what is conditioned on.

        ``"hsm"``: condition on :math:`x_0`, marginalise :math:`v_0`: :math:`\mathrm{diag}(0, \gamma M)`.
        ``"dsm"``: condition on :math:`(x_0, v_0)`: zero.
        """
        if kind == "hsm":
            return torch.tensor([[0.0, 0.0], [0.0, self.gamma * self.mass]], dtype=torch.float64)
        if kind == "dsm":
            return torch.zeros(2, 2, dtype=torch.float64)
        raise ValueError(f"kind must be 'hsm' or 'dsm', got {kind!r}")

    def sample_initial_velocity(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""The initial state :math:`u_0 = (x_0, v_0)` with :math:`v_0 \sim \mathcal{N}(0, \gamma M I)`."""
        check_finite_tensor("x0", x0)
        v0 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return torch.stack([x0, v0 * math.sqrt(self.gamma * self.mass)], dim=1)

    def perturbation_kernel(self, t, x0: torch.Tensor, kind: str = "hsm", v0: torch.Tensor | None = None) -> PerturbationKernel:
        r"""The perturbation kernel :math:`p_t(u_t \mid x_0)` (HSM) or :math:`p_t(u_t \mid x_0, v_0)` (DSM).

        Parameters
        ----------
        t:
            A time or a ``(batch,)`` tensor of per-sample times.
        x0:
            Data of shape ``(batch, *event_shape)``.
        kind:
            ``"hsm"`` or ``"dsm"``; DSM needs ``v0``.
        v0:
            Initial velocities for DSM (e.g. from :meth:`sample_initial_velocity`).
        """
        check_data_batch("x0", x0)
        if kind == "dsm":
            if v0 is None:
                raise ValueError("kind='dsm' conditions on the initial velocity: pass v0")
            mean0 = torch.stack([x0, v0], dim=1)
        else:
            mean0 = torch.stack([x0, torch.zeros_like(x0)], dim=1)
        return PerturbationKernel(self, t, mean0, self.initial_covariance(kind), eps_num=self.eps_num)

    def prior_sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float32, device=None) -> torch.Tensor:
        r"""Samples of the equilibrium :math:`\mathcal{N}(0, \mathrm{diag}(1, M))`, shape ``(batch, 2, *event)``.

        ``shape`` is ``(batch, *event_shape)``.
        """
        shape = check_sample_shape("shape", shape, components=2, dtype=dtype, device=device, generator=generator)
        u = torch.randn((shape[0], 2, *shape[1:]), generator=generator, dtype=dtype, device=device)
        scale = torch.tensor([1.0, math.sqrt(self.mass)], dtype=dtype, device=device)
        return u * scale.reshape(1, 2, *([1] * (len(shape) - 1)))

    @property
    def critically_damped(self) -> bool:
        r"""Whether :math:`\Gamma^2 = 4M` (then the closed-form kernels of :mod:`splitdyn_cld.kernels` apply)."""
        return math.isclose(self.friction**2, 4.0 * self.mass, rel_tol=1e-9)

    def increment_kernel(self, delta):
        r"""The kernel over an integrated rate :math:`\delta B`: the closed forms (eq. 28-33) when critically
        damped, else the generic Van Loan kernel."""
        if not self.critically_damped:
            return super().increment_kernel(delta)
        return forward_increment_kernel(self, delta)

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[0] if self.critically_damped else super().transition_matrix(t, s)

    def reverse_linear_part(self, precision=None):
        r"""The reverse-time linear part (eq. 76); at the default precision and critical damping a
        :class:`~splitdyn_cld.kernels.ReverseLinearPart` with the closed-form kernel of eq. 85-90."""
        if precision is not None or not self.critically_damped:
            return super().reverse_linear_part(precision)
        return ReverseLinearPart(self)

    def reverse(self, velocity_score) -> ReverseSDE:
        r"""The reverse-time SDE given the velocity score :math:`\nabla_v \log p_t(u)` (only it is needed:
        :math:`GG^\top` is zero on :math:`x`)."""
        return ReverseSDE(self, velocity_score, score_components=[1])
