r"""The mixed score parametrisation of the CLD velocity score (paper Sec. 3.2).

The model writes the velocity score as :math:`s_\theta(u_t, t) = -\ell_t\,\alpha_\theta(u_t, t)` with

.. math::

    \alpha_\theta(u_t, t) = \ell_t^{-1}\,\frac{v_t}{\Sigma^{vv}_t} + \alpha'_\theta(u_t, t),
    \qquad\text{i.e.}\qquad
    s_\theta(u_t, t) = -\frac{v_t}{\Sigma^{vv}_t} - \ell_t\,\alpha'_\theta(u_t, t),

where :math:`\alpha'_\theta` is the network, :math:`\ell_t` is eq. 52 (HSM kernel by default) and
:math:`\Sigma^{vv}_t` is the v-v entry of the covariance of :math:`p_t(u_t \mid x_0 = 0)` with
:math:`\Sigma_0 = \mathrm{diag}(0, \gamma M)` (plus :math:`\epsilon_{num}`, see
:func:`~splitdyn_cld.kernels.velocity_variance`): :math:`-v/\Sigma^{vv}_t` is the score of
:math:`\mathcal{N}(0, \Sigma^{vv}_t I)`, exact at :math:`t = 0` (where :math:`v_0 \sim \mathcal N(0, \gamma M I)`
independently of :math:`x_0`) and at equilibrium; the network only models the residual. With ``mixed=False``
the model is :math:`s_\theta = -\ell_t\,\alpha'_\theta` (plain noise prediction). Since the regression target is
:math:`-\ell_t\varepsilon_v` (eq. 51), :math:`\alpha_\theta` predicts the velocity noise :math:`\varepsilon_v`
(eq. 9).
"""

from __future__ import annotations

from numbers import Real

import torch

from splitdyn.checks import as_float64_time, check_callable, check_count, check_flag, check_nonempty_batch, check_state

from .kernels import ell, score_coefficients, velocity_variance
from .process import CLD

__all__ = ["MixedScore"]


def _broadcastable(values: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Float64 coefficients of shape ``()`` or ``(batch,)`` as ``(1 or batch, 1, ..., 1)`` (still float64)."""
    return values.reshape(values.numel(), *([1] * (u.ndim - 1)))


def _cast(value, u: torch.Tensor):
    """A float64 coefficient (Python float or tensor) in ``u``'s dtype, at use."""
    return value if isinstance(value, float) else value.to(u.dtype)


class MixedScore(torch.nn.Module):
    r"""Velocity score model :math:`s_\theta(u, t) = -v/\Sigma^{vv}_t - \ell_t\,\mathrm{net}(u, t)`.

    Parameters
    ----------
    net:
        A module ``net(u, t) -> (batch, 1, *event)`` (the velocity channel(s) only). It receives the full state
        ``u`` of shape ``(batch, 2, *event)`` and the times ``t`` as a ``(batch,)`` tensor in ``u``'s dtype
        and device.
    cld:
        The CLD process (for :math:`\ell_t` and :math:`\Sigma^{vv}_t`).
    mixed:
        Mixed parametrisation (default, the paper's choice); ``False`` gives :math:`s = -\ell_t\,\mathrm{net}`.
    kind:
        Which kernel's :math:`\ell_t` scales the network: ``"hsm"`` (default) or ``"dsm"`` (the paper's
        eq. 54 model for DSM training). :math:`\Sigma^{vv}_t` is always the HSM one.

    Notes
    -----
    ``t`` may be a float or a ``(batch,)`` (or 0-d) tensor. The coefficients :math:`\ell_t` and
    :math:`\Sigma^{vv}_t` come from :func:`~splitdyn_cld.kernels.score_coefficients`, the float64 closed forms
    evaluated where the time lives: for a Python float (what the eager samplers pass) with :mod:`math` on the
    host in a few microseconds, no tensor made; for a tensor on its device without host synchronisation
    (traceable by ``torch.compile``, capturable in a CUDA graph), then cast to ``u``'s dtype. A 0-d tensor or a
    ``(batch,)`` tensor that is one time expanded (stride 0) is evaluated once. The network's ``(batch,)``
    times are filled on ``u``'s device (no host-to-device copy for a float time). The output is directly
    usable as ``cld.reverse(score)``.

    Examples
    --------
    >>> import torch
    >>> from splitdyn_cld import CLD, MixedScore
    >>> cld = CLD()
    >>> model = MixedScore(lambda u, t: torch.zeros_like(u[:, 1:]), cld)  # network output 0
    >>> u = torch.ones(3, 2, 4)
    >>> model(u, 1.0).shape
    torch.Size([3, 1, 4])
    """

    def __init__(self, net, cld: CLD, mixed: bool = True, kind: str = "hsm") -> None:
        super().__init__()
        check_callable("net", net, "a callable net(u, t)")
        if not isinstance(cld, CLD):
            raise TypeError(f"cld must be a CLD, got {type(cld).__name__}")
        if kind not in ("hsm", "dsm"):
            raise ValueError(f"kind must be 'hsm' or 'dsm', got {kind!r}")
        self.net = net
        self.cld = cld
        self.mixed = check_flag("mixed", mixed)
        self.kind = kind

    def extra_repr(self) -> str:
        return f"mixed={self.mixed}, kind={self.kind!r}"

    def _prepare(self, u: torch.Tensor, t):
        """``(network times (batch,), ell, var_vv)``: the float64 coefficients as Python floats (a number ``t``, or
        a CPU 0-d tensor outside ``torch.compile``) or as tensors on ``u``'s device broadcastable against the
        ``(batch, 1, *event)`` output (cast them with :func:`_cast` at use)."""
        check_state("u", u, 2)
        check_nonempty_batch("u", u)
        batch = u.shape[0]
        if isinstance(t, torch.Tensor) and t.ndim == 0 and t.device.type == "cpu" and t.is_floating_point() \
                and not torch.compiler.is_compiling():
            t = t.item()  # a host value: no synchronisation
        if isinstance(t, Real) and not isinstance(t, bool):
            ell_t, var_vv = score_coefficients(self.cld, t, self.kind)
            return torch.full((batch,), float(t), dtype=u.dtype, device=u.device), ell_t, var_vv
        times = t if isinstance(t, torch.Tensor) and t.is_floating_point() else as_float64_time("t", t)
        if times.ndim == 1 and times.shape[0] == batch and (batch == 1 or times.stride(0) == 0):
            times = times[0]  # one time expanded over the batch: evaluated once
        elif times.ndim != 0 and times.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({batch},), got {tuple(times.shape)}")
        times = times.detach().to(device=u.device)
        ell_t, var_vv = score_coefficients(self.cld, times, self.kind)
        net_times = times.to(u.dtype) if times.ndim else u.new_empty((batch,)).copy_(times)
        return net_times, _broadcastable(ell_t, u), _broadcastable(var_vv, u)

    def _network(self, u: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        out = self.net(u, times)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"net must return a torch.Tensor, got {type(out).__name__}")
        expected = (u.shape[0], 1, *u.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(f"net returned shape {tuple(out.shape)}, expected {expected} (the velocity channel)")
        return out

    def coefficients(self, t, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(ell_t, Sigma_vv_t)`` in float64 (CPU), shape of ``t`` (or ``(batch,)`` for a scalar ``t``): the
        reference host computation (:func:`~splitdyn_cld.kernels.ell`,
        :func:`~splitdyn_cld.kernels.velocity_variance`); the forward pass uses
        :func:`~splitdyn_cld.kernels.score_coefficients`, equal to it to a relative ``1e-12``."""
        times = as_float64_time("t", t)
        if batch is not None and times.ndim == 0:
            batch = check_count("batch", batch)
            times = times.expand(batch)
        return ell(self.cld, times, self.kind), velocity_variance(self.cld, times, "hsm")

    def network_output(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The raw network output :math:`\alpha'_\theta(u, t)`, shape ``(batch, 1, *event)``."""
        return self._network(u, self._prepare(u, t)[0])

    def alpha(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The noise prediction :math:`\alpha_\theta = \mathrm{net} + \ell_t^{-1} v/\Sigma^{vv}_t` (``mixed``) or
        :math:`\mathrm{net}`, so that :math:`s_\theta = -\ell_t\,\alpha_\theta` (eq. 9 regresses it on
        :math:`\varepsilon_v`)."""
        times, ell_t, var_vv = self._prepare(u, t)
        out = self._network(u, times)
        if not self.mixed:
            return out
        return out + u[:, 1:2] / _cast(ell_t * var_vv, u)

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The velocity score :math:`s_\theta(u, t)`, shape ``(batch, 1, *event)``."""
        times, ell_t, var_vv = self._prepare(u, t)
        score = self._network(u, times) * _cast(-ell_t, u)
        if self.mixed:
            score = score - u[:, 1:2] / _cast(var_vv, u)
        return score
