"""The image score model: the :class:`UNetVelocityNet` adapter from CLD states to a
:class:`~splitdyn_cld.nets.ScoreUNet`, the CLD process and network configuration of a run, and the autocast
precision."""

from __future__ import annotations

import torch

from ..process import CLD
from ..score import MixedScore
from .settings import TrainSettings

__all__ = ["UNetVelocityNet", "build_cld", "net_config_for", "build_score_model", "image_shape_of",
           "resolve_precision"]


class UNetVelocityNet(torch.nn.Module):
    r"""Adapter from the CLD state ``u`` ``(B, 2, C, H, W)`` to a UNet on ``(B, 2C, H, W)`` and back.

    The UNet output :math:`\alpha'_\theta` ``(B, C, H, W)`` is returned as ``(B, 1, C, H, W)`` in ``u``'s dtype.

    Parameters
    ----------
    unet:
        A network ``unet(x, t)`` with ``x`` ``(B, 2C, H, W)`` and ``t`` ``(B,)``.
    autocast_dtype:
        ``torch.bfloat16`` / ``torch.float16`` to run the network under :func:`torch.autocast`, or ``None``.
    """

    def __init__(self, unet: torch.nn.Module, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.autocast_dtype = autocast_dtype

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if u.ndim != 5 or u.shape[1] != 2:
            raise ValueError(f"u must have shape (batch, 2, C, H, W), got {tuple(u.shape)}")
        b, _, c, h, w = u.shape
        x = u.reshape(b, 2 * c, h, w)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=u.device.type, dtype=self.autocast_dtype):
                out = self.unet(x, t)
        else:
            out = self.unet(x, t)
        return out.to(u.dtype).reshape(b, 1, c, h, w)


def build_cld(settings: TrainSettings) -> CLD:
    """The CLD process of a run (critical damping :math:`\\Gamma = 2\\sqrt{M}`)."""
    return CLD(mass=settings.mass, beta=settings.beta, gamma=settings.gamma, eps_num=settings.eps_num)


def net_config_for(settings: TrainSettings):
    """The network configuration of a run: ``settings.config`` with its ``dropout`` / ``image_size`` overrides."""
    from ..nets import get_config

    overrides = {}
    if settings.dropout is not None:
        overrides["dropout"] = settings.dropout
    if settings.image_size is not None:
        overrides["image_size"] = settings.image_size
    return get_config(settings.config, **overrides)


def build_score_model(net_config, cld: CLD, mixed: bool = True, autocast_dtype: torch.dtype | None = None,
                      kind: str = "hsm") -> tuple[MixedScore, UNetVelocityNet]:
    """A :class:`MixedScore` (``kind``: the ``"hsm"`` or ``"dsm"`` kernel's :math:`\\ell_t`) around a fresh
    :class:`~splitdyn_cld.nets.ScoreUNet`; also returns the adapter."""
    from ..nets import ScoreUNet

    net = UNetVelocityNet(ScoreUNet(net_config), autocast_dtype)
    return MixedScore(net, cld, mixed=mixed, kind=kind), net


def image_shape_of(net_config) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images a network configuration generates."""
    return int(net_config.image_channels), int(net_config.image_size), int(net_config.image_size)


def resolve_precision(precision: str, device: torch.device) -> tuple[str, torch.dtype | None]:
    """``"auto"`` -> bf16 on CUDA, fp32 elsewhere; returns the name and the autocast dtype (``None`` for fp32)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if precision not in dtypes:
        raise ValueError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {precision!r}")
    return precision, dtypes[precision]
