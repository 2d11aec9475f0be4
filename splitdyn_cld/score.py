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

import torch

from splitdyn.checks import as_float64_time, check_callable, check_count, check_flag, check_nonempty_batch, check_state

from .kernels import ell, velocity_variance
from .process import CLD

__all__ = ["MixedScore"]


def _per_sample(values: torch.Tensor, u: torch.Tensor, one: bool = False,
                shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Float64 ``(batch,)`` CPU coefficients as ``(batch, 1, ..., 1)`` (or ``shape``) in ``u``'s dtype and device.

    ``one``: all entries belong to one time (a scalar ``t`` expanded over the batch); the value is then filled
    on the device instead of copied there: the same numbers, but no host-to-device copy, which would
    synchronise and cannot be captured in a CUDA graph.
    """
    shape = (u.shape[0], *([1] * (u.ndim - 1))) if shape is None else shape
    if one:
        return torch.empty(shape, dtype=u.dtype, device=u.device).fill_(values.reshape(-1)[0])  # read on the host
    return values.to(dtype=u.dtype, device=u.device).reshape(shape)


def _one_time(times: torch.Tensor) -> bool:
    """Whether ``times`` is one time expanded over the batch (see :meth:`MixedScore._times`)."""
    return times.ndim == 1 and (times.shape[0] == 1 or times.stride(0) == 0)


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
    ``t`` may be a float or a ``(batch,)`` tensor. The coefficients are computed in float64 on the CPU and cast
    to ``u``'s dtype: a CUDA tensor ``t`` is copied to the host once per call (pass a float or a CPU tensor to
    avoid the synchronisation). For one time (a float, as the samplers pass) the coefficients and the
    network's times are filled on the device rather than copied there, so a sampler loop calling the model
    can be captured in a CUDA graph (:class:`splitdyn.CapturedLoop`). The output is directly usable as
    ``cld.reverse(score)``.

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

    def _times(self, u: torch.Tensor, t) -> torch.Tensor:
        check_state("u", u, 2)
        check_nonempty_batch("u", u)
        times = as_float64_time("t", t)
        if times.ndim == 0:
            return times.expand(u.shape[0])
        if times.shape != (u.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({u.shape[0]},), got {tuple(times.shape)}")
        return times

    def _network(self, u: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        out = self.net(u, _per_sample(times, u, _one_time(times), (u.shape[0],)))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"net must return a torch.Tensor, got {type(out).__name__}")
        expected = (u.shape[0], 1, *u.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(f"net returned shape {tuple(out.shape)}, expected {expected} (the velocity channel)")
        return out

    def coefficients(self, t, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(ell_t, Sigma_vv_t)`` in float64 (CPU), shape of ``t`` (or ``(batch,)`` for a scalar ``t``)."""
        times = as_float64_time("t", t)
        if batch is not None and times.ndim == 0:
            batch = check_count("batch", batch)
            times = times.expand(batch)
        return ell(self.cld, times, self.kind), velocity_variance(self.cld, times, "hsm")

    def network_output(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The raw network output :math:`\alpha'_\theta(u, t)`, shape ``(batch, 1, *event)``."""
        return self._network(u, self._times(u, t))

    def alpha(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The noise prediction :math:`\alpha_\theta = \mathrm{net} + \ell_t^{-1} v/\Sigma^{vv}_t` (``mixed``) or
        :math:`\mathrm{net}`, so that :math:`s_\theta = -\ell_t\,\alpha_\theta` (eq. 9 regresses it on
        :math:`\varepsilon_v`)."""
        times = self._times(u, t)
        out = self._network(u, times)
        if not self.mixed:
            return out
        ell_t, var_vv = self.coefficients(times)
        return out + u[:, 1:2] / _per_sample(ell_t * var_vv, u, _one_time(times))

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The velocity score :math:`s_\theta(u, t)`, shape ``(batch, 1, *event)``."""
        times = self._times(u, t)
        out = self._network(u, times)
        ell_t, var_vv = self.coefficients(times)
        one = _one_time(times)
        score = -_per_sample(ell_t, u, one) * out
        if self.mixed:
            score = score - u[:, 1:2] / _per_sample(var_vv, u, one)
        return score
