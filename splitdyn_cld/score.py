r"""The mixed score parametrisation (paper Sec. 3.2).

The velocity score is written :math:`s_\theta(u_t, t) = -\ell_t\,\alpha_\theta(u_t, t)` with
:math:`\alpha_\theta = \ell_t^{-1} v_t / \Sigma^{vv}_t + \alpha'_\theta`, i.e.

.. math::

    s_\theta(u_t, t) = -\frac{v_t}{\Sigma^{vv}_t} - \ell_t\,\alpha'_\theta(u_t, t),

where :math:`-v/\Sigma^{vv}_t` is the velocity score of the HSM kernel for data at the origin
(:math:`\Sigma_0 = \mathrm{diag}(0, \gamma M)`), exact when the data is a point mass and the equilibrium score
at large :math:`t`; the network only models the residual.
"""

from __future__ import annotations

import torch

from .kernels import ell, velocity_variance
from .process import CLD

__all__ = ["MixedScore"]


def _per_sample(values: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    values = values.to(dtype=u.dtype, device=u.device)
    if values.ndim == 0:
        values = values.expand(u.shape[0])
    return values.reshape(u.shape[0], *([1] * (u.ndim - 1)))


class MixedScore(torch.nn.Module):
    """Velocity score model from a network ``net(u, t) -> (batch, 1, *event)``.

    Parameters
    ----------
    net:
        Receives the full state ``u`` of shape ``(batch, 2, *event)`` and times ``t`` of shape ``(batch,)``.
    cld:
        The CLD process (for :math:`\\ell_t` and :math:`\\Sigma^{vv}_t`).
    mixed:
        Use the mixed parametrisation (default); ``False`` gives :math:`s = -\\ell_t\\,\\alpha_\\theta`.
    """

    def __init__(self, net: torch.nn.Module, cld: CLD, mixed: bool = True) -> None:
        super().__init__()
        self.net = net
        self.cld = cld
        self.mixed = bool(mixed)

    def _times(self, u: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
        return t.expand(u.shape[0]) if t.ndim == 0 else t

    def network_output(self, u: torch.Tensor, t) -> torch.Tensor:
        """The raw network output :math:`\\alpha'_\\theta(u, t)`."""
        times = self._times(u, t)
        return self.net(u, times.to(dtype=u.dtype, device=u.device))

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        times = self._times(u, t)
        out = self.net(u, times.to(dtype=u.dtype, device=u.device))
        score = -_per_sample(ell(self.cld, times), u) * out
        if self.mixed:
            score = score - u[:, 1:2] / _per_sample(velocity_variance(self.cld, times), u)
        return score
