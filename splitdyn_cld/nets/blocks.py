r"""Residual and attention blocks of the NCSN++ / DDPM++ score networks (Song et al., 2021), in plain PyTorch.

:class:`BigGANResBlock` (with up/down variants, FIR resampling), :class:`DDPMResBlock` and
:class:`AttentionBlock`, built from the layers of :mod:`splitdyn_cld.nets.layers`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Resampler, conv1x1, conv3x3, dense, group_norm

__all__ = ["BigGANResBlock", "DDPMResBlock", "AttentionBlock"]


# ---------------------------------------------------------------------------------------------------------------
# Residual and attention blocks
# ---------------------------------------------------------------------------------------------------------------


class BigGANResBlock(nn.Module):
    r"""BigGAN-style residual block with optional up/down-sampling (the NCSN++ / DDPM++ block).

    ``h = conv(act(norm(x)))`` (resampling ``h`` and ``x`` between the activation and the convolution when
    ``up``/``down``), then ``h += dense(act(temb))`` (the time embedding as a per-channel bias), then
    ``h = conv(dropout(act(norm(h))))`` with an almost-zero initialised convolution. The skip path is a 1x1
    convolution whenever the channels or the resolution change. The output is :math:`(x + h)/\sqrt{2}` with
    ``skip_rescale`` (else :math:`x + h`).

    Parameters
    ----------
    in_channels:
        Input channels.
    out_channels:
        Output channels (default ``in_channels``).
    temb_dim:
        Size of the time embedding (``None``: no time conditioning).
    dropout:
        Dropout probability before the second convolution.
    up, down:
        Double / halve the resolution (at most one of them).
    fir, fir_kernel:
        Resample with the FIR filter (else nearest neighbour / average pooling).
    skip_rescale:
        Divide the sum by :math:`\sqrt{2}`.
    init_scale:
        Variance scale of the second convolution (0: almost-zero, so the block starts as the identity path).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_dim: int | None = None,
                 dropout: float = 0.0, up: bool = False, down: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 init_scale: float = 0.0) -> None:
        super().__init__()
        self.resample = Resampler(fir, fir_kernel)
        if up and down:
            raise ValueError("a residual block cannot both upsample and downsample")
        out_channels = out_channels or in_channels
        self.up, self.down, self.skip_rescale = bool(up), bool(down), bool(skip_rescale)
        self.act = nn.SiLU()
        self.norm0 = group_norm(in_channels)
        self.conv0 = conv3x3(in_channels, out_channels)
        self.temb_proj = dense(temb_dim, out_channels) if temb_dim is not None else None
        self.norm1 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv3x3(out_channels, out_channels, init_scale=init_scale)
        needs_skip = in_channels != out_channels or up or down
        self.skip = conv1x1(in_channels, out_channels) if needs_skip else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to ``x`` ``(B, C_in, H, W)`` with the time embedding ``temb`` ``(B, temb_dim)``."""
        h = self.act(self.norm0(x))
        if self.up:
            h, x = self.resample.up(h), self.resample.up(x)
        elif self.down:
            h, x = self.resample.down(h), self.resample.down(x)
        h = self.conv0(h)
        if self.temb_proj is not None:
            if temb is None:
                raise ValueError("this block was built with temb_dim and needs a time embedding")
            h = h + self.temb_proj(self.act(temb))[:, :, None, None]
        h = self.conv1(self.dropout(self.act(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        out = x + h
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out


class DDPMResBlock(nn.Module):
    r"""DDPM-style residual block (Ho et al., 2020) without resampling.

    Same computation as :class:`BigGANResBlock` without ``up``/``down``; the skip path (when the channels
    change) is a 1x1 convolution, or a 3x3 one with ``conv_shortcut``.

    Parameters
    ----------
    in_channels:
        Input channels.
    out_channels:
        Output channels (default ``in_channels``).
    temb_dim:
        Size of the time embedding (``None``: no time conditioning).
    dropout:
        Dropout probability before the second convolution.
    conv_shortcut:
        Use a 3x3 convolution on the skip path.
    skip_rescale:
        Divide the sum by :math:`\sqrt{2}`.
    init_scale:
        Variance scale of the second convolution.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_dim: int | None = None,
                 dropout: float = 0.0, conv_shortcut: bool = False, skip_rescale: bool = True,
                 init_scale: float = 0.0) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.skip_rescale = bool(skip_rescale)
        self.act = nn.SiLU()
        self.norm0 = group_norm(in_channels)
        self.conv0 = conv3x3(in_channels, out_channels)
        self.temb_proj = dense(temb_dim, out_channels) if temb_dim is not None else None
        self.norm1 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv3x3(out_channels, out_channels, init_scale=init_scale)
        if in_channels == out_channels:
            self.skip = None
        else:
            self.skip = conv3x3(in_channels, out_channels) if conv_shortcut else conv1x1(in_channels, out_channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to ``x`` ``(B, C_in, H, W)`` with the time embedding ``temb`` ``(B, temb_dim)``."""
        h = self.conv0(self.act(self.norm0(x)))
        if self.temb_proj is not None:
            if temb is None:
                raise ValueError("this block was built with temb_dim and needs a time embedding")
            h = h + self.temb_proj(self.act(temb))[:, :, None, None]
        h = self.conv1(self.dropout(self.act(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        out = x + h
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out


class AttentionBlock(nn.Module):
    r"""Single-head self-attention over the pixels, with a residual connection.

    ``q, k, v`` are 1x1 convolutions of the group-normalised input; the attention uses
    :func:`torch.nn.functional.scaled_dot_product_attention` (softmax of :math:`qk^\top/\sqrt{C}`), followed by
    an almost-zero initialised 1x1 output projection. The output is :math:`(x + h)/\sqrt{2}` with
    ``skip_rescale``.

    Parameters
    ----------
    channels:
        Number of channels.
    skip_rescale:
        Divide the residual sum by :math:`\sqrt{2}`.
    init_scale:
        Variance scale of the output projection.
    """

    def __init__(self, channels: int, skip_rescale: bool = True, init_scale: float = 0.0) -> None:
        super().__init__()
        self.skip_rescale = bool(skip_rescale)
        self.norm = group_norm(channels)
        self.q = conv1x1(channels, channels)
        self.k = conv1x1(channels, channels)
        self.v = conv1x1(channels, channels)
        self.proj = conv1x1(channels, channels, init_scale=init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the ``H * W`` positions of ``x`` ``(B, C, H, W)``."""
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, 1, c, hh * ww).transpose(-1, -2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c)
        h = self.proj(a.transpose(-1, -2).reshape(b, c, hh, ww))
        out = x + h
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out
