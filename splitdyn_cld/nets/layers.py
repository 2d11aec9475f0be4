r"""Building blocks of the NCSN++ / DDPM++ score networks (Song et al., 2021), in plain PyTorch.

Everything here is ordinary :mod:`torch.nn` code: no custom CUDA extensions and no JIT-compiled operators. The
FIR (finite impulse response) resampling of NCSN++ (Zhang, 2019, "Making convolutional networks
shift-invariant again") is a depthwise :func:`torch.nn.functional.conv2d` /
:func:`torch.nn.functional.conv_transpose2d` with a separable kernel such as ``[1, 3, 3, 1]``.

Contents
--------
* Initialisation: :func:`variance_scaling_` (the "fan_avg, uniform" scheme of the reference architectures),
  :func:`conv3x3`, :func:`conv1x1`, :func:`dense`.
* Normalisation and nonlinearity: :func:`group_norm` (``num_groups = min(C // 4, 32)``), :class:`torch.nn.SiLU`
  (Swish).
* Time embeddings: :class:`GaussianFourierEmbedding` (random Fourier features, used on :math:`\log t`) and
  :func:`sinusoidal_embedding` / :class:`SinusoidalEmbedding` (transformer-style positional embedding, used on
  :math:`999\,t`).
* Resampling: :func:`fir_kernel_2d`, :func:`fir_downsample`, :func:`fir_upsample`, :class:`Downsample`,
  :class:`Upsample`, :class:`Resampler`.
* The residual and attention blocks built from these are in :mod:`splitdyn_cld.nets.blocks`.

Boundary handling of the FIR filters
------------------------------------
The filters pad with *replicated* edge pixels rather than zeros, so a constant image stays exactly constant
under :func:`fir_downsample` and :func:`fir_upsample` (zero padding would darken a one-pixel border at every
level). This differs from the zero-padded reference implementation only at the image border and changes no
parameter count.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "variance_scaling_",
    "conv3x3",
    "conv1x1",
    "dense",
    "group_norm",
    "GaussianFourierEmbedding",
    "sinusoidal_embedding",
    "SinusoidalEmbedding",
    "fir_kernel_2d",
    "fir_downsample",
    "fir_upsample",
    "Downsample",
    "Upsample",
    "Resampler",
]

_TINY_SCALE = 1e-10  # "zero" init scale: keeps the variance-scaling formula finite, output ~ 0


# ---------------------------------------------------------------------------------------------------------------
# Initialisation helpers
# ---------------------------------------------------------------------------------------------------------------


def variance_scaling_(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    r"""Fill ``tensor`` in place from :math:`U[-a, a]` with :math:`a = \sqrt{3 \cdot \text{scale} / \text{fan}_\text{avg}}`.

    This is the "variance scaling, fan_avg, uniform" initialiser of the NCSN++/DDPM++ reference architectures:
    the weights have variance ``scale / fan_avg`` with ``fan_avg = (fan_in + fan_out) / 2``, where for a
    convolution weight ``(out, in, kh, kw)`` the fans are ``in * kh * kw`` and ``out * kh * kw``. A ``scale`` of
    0 is replaced by ``1e-10`` (a "zero" initialisation that still breaks exact symmetry). Works on tensors of
    the ``meta`` device (nothing is allocated).

    Parameters
    ----------
    tensor:
        A weight of at least two dimensions ``(out, in, *kernel)``.
    scale:
        Variance scale (``>= 0``).

    Returns
    -------
    torch.Tensor
        ``tensor`` itself.
    """
    if tensor.ndim < 2:
        raise ValueError(f"variance_scaling_ needs a weight with >= 2 dimensions, got shape {tuple(tensor.shape)}")
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    scale = _TINY_SCALE if scale == 0 else float(scale)
    receptive = math.prod(tensor.shape[2:]) if tensor.ndim > 2 else 1
    fan_in, fan_out = tensor.shape[1] * receptive, tensor.shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def _init_(module: nn.Module, init_scale: float) -> nn.Module:
    variance_scaling_(module.weight, init_scale)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True,
            init_scale: float = 1.0) -> nn.Conv2d:
    """A 3x3 convolution with padding 1, initialised by :func:`variance_scaling_` (zero bias).

    Parameters
    ----------
    in_channels, out_channels:
        Channel counts.
    stride:
        Convolution stride (2 halves the resolution).
    bias:
        Whether to add a bias.
    init_scale:
        Variance scale of the weights (0 for an almost-zero initialisation).

    Returns
    -------
    torch.nn.Conv2d
    """
    return _init_(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias), init_scale)


def conv1x1(in_channels: int, out_channels: int, bias: bool = True, init_scale: float = 1.0) -> nn.Conv2d:
    """A 1x1 convolution (a per-pixel dense layer), initialised by :func:`variance_scaling_` (zero bias).

    Parameters
    ----------
    in_channels, out_channels:
        Channel counts.
    bias:
        Whether to add a bias.
    init_scale:
        Variance scale of the weights (0 for an almost-zero initialisation).

    Returns
    -------
    torch.nn.Conv2d
    """
    return _init_(nn.Conv2d(in_channels, out_channels, 1, bias=bias), init_scale)


def dense(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    """A linear layer initialised by :func:`variance_scaling_` with a zero bias.

    Parameters
    ----------
    in_features, out_features:
        Feature counts.
    init_scale:
        Variance scale of the weights.

    Returns
    -------
    torch.nn.Linear
    """
    return _init_(nn.Linear(in_features, out_features), init_scale)


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """Group normalisation with ``min(channels // 4, 32)`` groups (the reference architectures' choice).

    When that number does not divide ``channels`` the largest smaller divisor is used (at least one group),
    so that any channel count works.

    Parameters
    ----------
    channels:
        Number of channels to normalise.
    eps:
        Numerical stabiliser.

    Returns
    -------
    torch.nn.GroupNorm
    """
    groups = max(min(channels // 4, 32), 1)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=eps)


# ---------------------------------------------------------------------------------------------------------------
# Time embeddings
# ---------------------------------------------------------------------------------------------------------------


class GaussianFourierEmbedding(nn.Module):
    r"""Random Fourier features :math:`[\sin(2\pi s w), \cos(2\pi s w)]` with fixed :math:`w \sim N(0, \sigma^2)`.

    NCSN++ applies it to :math:`s = \log t` (:class:`~splitdyn_cld.nets.unet.ScoreUNet` takes the logarithm) with
    :math:`\sigma = 16`. The frequencies ``W`` are a persistent, non-trainable buffer: saved in the state dict,
    not counted as parameters and never updated by an optimiser.

    Parameters
    ----------
    embedding_size:
        Number of frequencies; the output has ``2 * embedding_size`` features.
    scale:
        Standard deviation :math:`\sigma` of the frequencies.
    """

    def __init__(self, embedding_size: int, scale: float = 16.0) -> None:
        super().__init__()
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        self.embedding_size = int(embedding_size)
        self.scale = float(scale)
        self.register_buffer("W", torch.randn(self.embedding_size) * self.scale)

    @property
    def out_features(self) -> int:
        """Number of output features, ``2 * embedding_size``."""
        return 2 * self.embedding_size

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Embed the scalars ``s`` of shape ``(B,)`` into ``(B, 2 * embedding_size)`` features."""
        proj = s.float()[:, None] * self.W[None, :].float() * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_positions: float = 10_000.0) -> torch.Tensor:
    r"""Transformer-style sinusoidal embedding of (real-valued) positions.

    Feature :math:`j < \lfloor d/2 \rfloor` is :math:`\sin(p\,\omega_j)` and feature :math:`\lfloor d/2
    \rfloor + j` is :math:`\cos(p\,\omega_j)` with :math:`\omega_j = \text{max\_positions}^{-j / (\lfloor d/2
    \rfloor - 1)}`; an odd ``dim`` gets one zero feature at the end.

    Parameters
    ----------
    positions:
        Shape ``(B,)``. DDPM++ uses :math:`999\,t` for :math:`t \in (0, 1]` (the continuous-time analogue of the
        discrete steps ``0..999``).
    dim:
        Number of output features (``>= 2``).
    max_positions:
        Longest wavelength scale.

    Returns
    -------
    torch.Tensor
        ``(B, dim)`` float32 features.
    """
    if positions.ndim != 1:
        raise ValueError(f"positions must have shape (B,), got {tuple(positions.shape)}")
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    half = dim // 2
    rate = math.log(max_positions) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=positions.device) * -rate)
    args = positions.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class SinusoidalEmbedding(nn.Module):
    r"""Module form of :func:`sinusoidal_embedding` applied to ``position_scale * t``.

    Parameters
    ----------
    dim:
        Number of output features.
    position_scale:
        Multiplier of the input (999 maps :math:`t \in (0, 1]` to the DDPM step range).
    max_positions:
        Longest wavelength scale.
    """

    def __init__(self, dim: int, position_scale: float = 999.0, max_positions: float = 10_000.0) -> None:
        super().__init__()
        self.dim = int(dim)
        self.position_scale = float(position_scale)
        self.max_positions = float(max_positions)

    @property
    def out_features(self) -> int:
        """Number of output features, ``dim``."""
        return self.dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed times ``t`` of shape ``(B,)`` into ``(B, dim)`` features."""
        return sinusoidal_embedding(t * self.position_scale, self.dim, self.max_positions)


# ---------------------------------------------------------------------------------------------------------------
# FIR resampling
# ---------------------------------------------------------------------------------------------------------------


def fir_kernel_2d(kernel: Sequence[float], device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The separable 2-D filter ``outer(k, k) / sum(k)**2`` of a 1-D kernel such as ``[1, 3, 3, 1]``.

    Parameters
    ----------
    kernel:
        1-D filter taps (at least two, positive sum).
    device, dtype:
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(K, K)`` filter whose entries sum to one.
    """
    k = torch.as_tensor([float(v) for v in kernel], dtype=dtype, device=device)
    if k.ndim != 1 or k.numel() < 2:
        raise ValueError(f"kernel must be a sequence of at least two numbers, got {kernel!r}")
    total = sum(float(v) for v in kernel)
    if total <= 0:
        raise ValueError(f"kernel must have a positive sum, got {kernel!r}")
    return torch.outer(k, k) / (total * total)


def _depthwise(kernel2d: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    return kernel2d.to(dtype).flip(0, 1)[None, None].expand(channels, 1, *kernel2d.shape).contiguous()


def _replicate_pad(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Replicate-pad the last two axes by gathering with clamped indices.

    Same values as ``F.pad(x, (before, after, before, after), mode="replicate")``, but built from indexing,
    whose backward ``torch.compile`` handles: inductor (torch 2.13) fails on ``replication_pad2d_backward``.
    """
    h, w = x.shape[-2:]
    rows = torch.arange(-before, h + after, device=x.device).clamp_(0, h - 1)
    cols = torch.arange(-before, w + after, device=x.device).clamp_(0, w - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def fir_downsample(x: torch.Tensor, kernel2d: torch.Tensor) -> torch.Tensor:
    """Low-pass filter with ``kernel2d`` and keep every second pixel: ``(B, C, H, W) -> (B, C, H/2, W/2)``.

    A depthwise :func:`torch.nn.functional.conv2d` with stride 2 after replicate padding of
    ``(K - 1) // 2`` pixels before and ``(K - 2) // 2`` after (``K`` the kernel length), so constants are preserved
    exactly (the kernel sums to one, see :func:`fir_kernel_2d`).

    Parameters
    ----------
    x:
        Images with even height and width.
    kernel2d:
        ``(K, K)`` filter from :func:`fir_kernel_2d`.

    Returns
    -------
    torch.Tensor
    """
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"fir_downsample needs (B, C, H, W) with even H and W, got {tuple(x.shape)}")
    k = kernel2d.shape[-1]
    before, after = (k - 1) // 2, (k - 2) // 2
    if before or after:
        x = _replicate_pad(x, before, after)
    return F.conv2d(x, _depthwise(kernel2d, x.shape[1], x.dtype), stride=2, groups=x.shape[1])


def fir_upsample(x: torch.Tensor, kernel2d: torch.Tensor) -> torch.Tensor:
    """Zero-insertion upsampling by 2 followed by the ``kernel2d`` filter (gain 4): ``(H, W) -> (2H, 2W)``.

    A depthwise :func:`torch.nn.functional.conv_transpose2d` with stride 2 on the input replicate-padded by
    ``ceil(K / 4)`` pixels, cropped back to ``(2H, 2W)``; constants are preserved exactly. With ``[1, 3, 3, 1]``
    each output pixel mixes its two nearest input pixels per axis with weights ``3/4`` and ``1/4``
    (bilinear interpolation at half-pixel offsets).

    Parameters
    ----------
    x:
        Images ``(B, C, H, W)``.
    kernel2d:
        ``(K, K)`` filter from :func:`fir_kernel_2d`.

    Returns
    -------
    torch.Tensor
    """
    if x.ndim != 4:
        raise ValueError(f"fir_upsample needs (B, C, H, W), got {tuple(x.shape)}")
    k = kernel2d.shape[-1]
    h, w = x.shape[-2:]
    q = (k + 3) // 4
    x = _replicate_pad(x, q, q)
    weight = _depthwise(kernel2d * 4, x.shape[1], x.dtype).flip(-2, -1)
    y = F.conv_transpose2d(x, weight, stride=2, groups=x.shape[1])
    start = 2 * q + (k - 2) // 2
    return y[..., start:start + 2 * h, start:start + 2 * w]


class Resampler(nn.Module):
    """Parameter-free 2x resampling; holds the 2-D FIR filter as a non-persistent buffer (moves, not saved)."""

    def __init__(self, fir: bool, fir_kernel: Sequence[float]) -> None:
        super().__init__()
        self.fir = bool(fir)
        self.fir_kernel = tuple(float(v) for v in fir_kernel)
        if self.fir:
            self.register_buffer("kernel2d", fir_kernel_2d(self.fir_kernel), persistent=False)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return fir_downsample(x, self.kernel2d) if self.fir else F.avg_pool2d(x, 2)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return fir_upsample(x, self.kernel2d) if self.fir else F.interpolate(x, scale_factor=2.0, mode="nearest")


class Downsample(nn.Module):
    """Halve the resolution: FIR filter (or 2x2 average pooling) and an optional 3x3 convolution.

    Parameters
    ----------
    in_channels:
        Input channels.
    out_channels:
        Output channels (only with ``with_conv``; defaults to ``in_channels``).
    with_conv:
        Follow the resampling by a 3x3 convolution (without FIR: a stride-2 3x3 convolution instead of pooling).
    fir:
        Use the FIR filter ``fir_kernel`` (else average pooling).
    fir_kernel:
        1-D FIR taps.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.resample = Resampler(fir, fir_kernel)
        out_channels = out_channels or in_channels
        if not with_conv and out_channels != in_channels:
            raise ValueError("Downsample without a convolution cannot change the number of channels")
        self.with_conv = bool(with_conv)
        if with_conv:
            self.conv = conv3x3(in_channels, out_channels, stride=1 if fir else 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``."""
        if self.with_conv and not self.resample.fir:
            return self.conv(x)
        x = self.resample.down(x)
        return self.conv(x) if self.with_conv else x


class Upsample(nn.Module):
    """Double the resolution: FIR filter (or nearest neighbour) and an optional 3x3 convolution.

    Parameters
    ----------
    in_channels:
        Input channels.
    out_channels:
        Output channels (only with ``with_conv``; defaults to ``in_channels``).
    with_conv:
        Follow the resampling by a 3x3 convolution.
    fir:
        Use the FIR filter ``fir_kernel`` (else nearest-neighbour upsampling).
    fir_kernel:
        1-D FIR taps.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.resample = Resampler(fir, fir_kernel)
        out_channels = out_channels or in_channels
        if not with_conv and out_channels != in_channels:
            raise ValueError("Upsample without a convolution cannot change the number of channels")
        self.with_conv = bool(with_conv)
        if with_conv:
            self.conv = conv3x3(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``."""
        x = self.resample.up(x)
        return self.conv(x) if self.with_conv else x
