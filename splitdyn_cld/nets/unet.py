r"""The NCSN++ / DDPM++ U-Net (Song et al., 2021) adapted to CLD: :class:`ScoreUNet` and :class:`UNetConfig`.

CLD (Dockhorn et al., 2022, App. E.2.1) uses the NCSN++ / DDPM++ architectures with the data and velocity
channels stacked at the input (``2C`` input channels instead of ``C``) and the network predicting only ``C``
(velocity) channels: with the mixed score parametrisation the network output is the velocity noise
:math:`\epsilon_v` (see :class:`~splitdyn_cld.score.MixedScore`).

Architecture (NCSN++ when ``resblock="biggan"``, ``fir=True``, ``progressive_input="residual"`` and
``embedding="fourier"``; DDPM++ with ``fir=False``, ``progressive_input="none"``, ``embedding="positional"``):

1. Time embedding: Gaussian Fourier features of :math:`\log t` (scale ``fourier_scale``, ``2 * channels``
   features) or the sinusoidal embedding of :math:`999\,t` (``channels`` features), followed by
   ``dense(4 * channels) -> SiLU -> dense(4 * channels)``. Every residual block adds a projection of
   ``SiLU(temb)`` as a per-channel bias.
2. Encoder: a 3x3 input convolution to ``channels``; per resolution level ``num_res_blocks`` residual blocks to
   ``channels * channel_multipliers[level]`` (each followed by self-attention when the current resolution is
   in ``attention_resolutions``), then (except at the last level) a downsampling residual block
   (``"biggan"``) or a :class:`~splitdyn_cld.nets.layers.Downsample` (``"ddpm"``). Progressive input
   ``"residual"`` carries a downsampled copy of the input along (FIR/average downsampling plus a 3x3
   convolution) and merges it into the features after each downsampling as
   :math:`(\text{pyramid} + h)/\sqrt{2}` (the merged features become the next pyramid);
   ``"input_skip"`` downsamples the raw input (no convolution) and adds a 1x1 convolution of it
   (combine method ``"sum"``).
3. Middle: residual block, attention, residual block.
4. Decoder: per level (coarsest first) ``num_res_blocks + 1`` residual blocks each consuming one stored
   encoder activation (channel concatenation), one attention block at attention resolutions, and (except at
   the finest level) an upsampling residual block / :class:`~splitdyn_cld.nets.layers.Upsample`.
5. Output: GroupNorm, SiLU, 3x3 convolution to ``image_channels``.

Only progressive output ``"none"`` is implemented (the setting of every CLD model in the paper's Table 6).

Initialisation: convolutions and dense layers use variance scaling (fan_avg, uniform) with zero biases; the
last convolution of each residual branch, the attention output projections and the final output convolution
use ``init_scale`` (default 0, i.e. variance ``1e-10 / fan_avg``): at initialisation every residual block
is close to its skip path and the network output is close to zero, as in the reference architecture.
Construction only fills tensors in place, so ``with torch.device("meta"): ScoreUNet(cfg)`` builds the model
without allocating memory (see :func:`count_parameters`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import AttentionBlock, BigGANResBlock, DDPMResBlock
from .layers import (
    Downsample,
    GaussianFourierEmbedding,
    SinusoidalEmbedding,
    Upsample,
    conv1x1,
    conv3x3,
    dense,
    group_norm,
)

__all__ = ["UNetConfig", "ScoreUNet", "count_parameters"]

_EMBEDDINGS = ("fourier", "positional")
_RESBLOCKS = ("biggan", "ddpm")
_PROGRESSIVE_INPUT = ("none", "residual", "input_skip")


@dataclass(frozen=True)
class UNetConfig:
    r"""Hyperparameters of a :class:`ScoreUNet` (frozen; change fields with :meth:`replace`).

    Attributes
    ----------
    image_channels:
        Data channels ``C`` (3 for RGB, 1 for the digits). The network takes ``2C`` channels (data and
        velocity) and returns ``C``.
    image_size:
        Height and width of the (square) images; must be divisible by ``2 ** (len(channel_multipliers) - 1)``.
    channels:
        Base width ``nf`` of the network (channels of the first level).
    channel_multipliers:
        Width of each resolution level as a multiple of ``channels``; one level per entry, the resolution
        halving from one level to the next.
    num_res_blocks:
        Residual blocks per level in the encoder (the decoder has one more per level).
    attention_resolutions:
        Resolutions (side lengths) at which self-attention is applied; entries that match no level are
        ignored (so one configuration works at several image sizes).
    dropout:
        Dropout probability inside the residual blocks.
    embedding:
        ``"fourier"`` (Gaussian Fourier features of :math:`\log t`) or ``"positional"`` (sinusoidal embedding
        of ``positional_scale * t``).
    fourier_scale:
        Standard deviation of the Fourier frequencies (16 in NCSN++).
    positional_scale:
        Multiplier of :math:`t` before the sinusoidal embedding (999: the DDPM step range).
    resblock:
        ``"biggan"`` (residual blocks also do the resampling) or ``"ddpm"`` (separate
        :class:`~splitdyn_cld.nets.layers.Downsample` / :class:`~splitdyn_cld.nets.layers.Upsample`).
    fir:
        Resample with the FIR filter ``fir_kernel`` (else average pooling / nearest neighbour).
    fir_kernel:
        1-D FIR taps, ``(1, 3, 3, 1)`` in NCSN++.
    skip_rescale:
        Rescale residual sums by :math:`1/\sqrt{2}`.
    progressive_input:
        ``"none"``, ``"residual"`` (NCSN++ on CIFAR-10) or ``"input_skip"``.
    progressive_output:
        Only ``"none"`` is supported (as in all of the paper's CLD models).
    progressive_combine:
        How ``"input_skip"`` merges the input pyramid; only ``"sum"`` is supported.
    resample_with_conv:
        Whether the ``"ddpm"`` resampling layers include a 3x3 convolution.
    conv_shortcut:
        ``"ddpm"`` blocks use a 3x3 (instead of 1x1) convolution on the skip path when the channels change.
    init_scale:
        Variance scale of the last convolution of every residual branch, of the attention output projections
        and of the output convolution (0 means ``1e-10``: an almost-zero initial output).
    """

    image_channels: int = 3
    image_size: int = 32
    channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 8
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    embedding: str = "fourier"
    fourier_scale: float = 16.0
    positional_scale: float = 999.0
    resblock: str = "biggan"
    fir: bool = True
    fir_kernel: tuple[float, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    progressive_input: str = "residual"
    progressive_output: str = "none"
    progressive_combine: str = "sum"
    resample_with_conv: bool = True
    conv_shortcut: bool = False
    init_scale: float = 0.0

    def __post_init__(self) -> None:
        for name in ("channel_multipliers", "attention_resolutions", "fir_kernel"):
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        for name in ("image_channels", "image_size", "channels", "num_res_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_res_blocks" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.channel_multipliers or any(int(m) != m or m < 1 for m in self.channel_multipliers):
            raise ValueError(f"channel_multipliers must be a non-empty tuple of positive ints, got "
                             f"{self.channel_multipliers!r}")
        levels = len(self.channel_multipliers)
        if self.image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{levels - 1} "
                             f"({levels} resolution levels)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embedding not in _EMBEDDINGS:
            raise ValueError(f"embedding must be one of {_EMBEDDINGS}, got {self.embedding!r}")
        if self.resblock not in _RESBLOCKS:
            raise ValueError(f"resblock must be one of {_RESBLOCKS}, got {self.resblock!r}")
        if self.progressive_input not in _PROGRESSIVE_INPUT:
            raise ValueError(f"progressive_input must be one of {_PROGRESSIVE_INPUT}, got {self.progressive_input!r}")
        if self.progressive_output != "none":
            raise ValueError(f"only progressive_output='none' is supported, got {self.progressive_output!r}")
        if self.progressive_combine != "sum":
            raise ValueError(f"only progressive_combine='sum' is supported, got {self.progressive_combine!r}")
        if len(self.fir_kernel) < 2:
            raise ValueError(f"fir_kernel needs at least two taps, got {self.fir_kernel!r}")
        if self.init_scale < 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale}")

    def replace(self, **changes) -> "UNetConfig":
        """A copy with ``changes`` applied (and validated again), e.g. ``cfg.replace(channels=16)``.

        Parameters
        ----------
        **changes:
            New values of fields.

        Returns
        -------
        ~splitdyn_cld.nets.unet.UNetConfig
        """
        return dataclasses.replace(self, **changes)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Side length of the feature maps at each level, e.g. ``(32, 16, 8, 4)`` for CIFAR-10."""
        return tuple(self.image_size // 2 ** i for i in range(len(self.channel_multipliers)))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(2C, H, W)`` of one network input (data and velocity stacked)."""
        return (2 * self.image_channels, self.image_size, self.image_size)

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image (and of one network output)."""
        return (self.image_channels, self.image_size, self.image_size)


class ScoreUNet(nn.Module):
    r"""NCSN++ / DDPM++ U-Net for CLD: ``(B, 2C, H, W)`` and times ``(B,)`` to ``(B, C, H, W)``.

    See the module documentation for the architecture and the initialisation.

    Parameters
    ----------
    config:
        The hyperparameters (see :class:`UNetConfig` and :func:`~splitdyn_cld.nets.configs.get_config`).

    Examples
    --------
    >>> from splitdyn_cld.nets import ScoreUNet, get_config
    >>> net = ScoreUNet(get_config("tiny"))
    >>> u = torch.randn(2, 2, 8, 8)          # data and velocity channels of two 1x8x8 images
    >>> net(u, torch.tensor([0.5, 1.0])).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        nf = cfg.channels
        temb_dim = 4 * nf
        biggan = cfg.resblock == "biggan"
        fir_args = dict(fir=cfg.fir, fir_kernel=cfg.fir_kernel)
        self.act = nn.SiLU()

        # time embedding
        if cfg.embedding == "fourier":
            self.time_embed = GaussianFourierEmbedding(nf, scale=cfg.fourier_scale)
        else:
            self.time_embed = SinusoidalEmbedding(nf, position_scale=cfg.positional_scale)
        self.temb_dense0 = dense(self.time_embed.out_features, temb_dim)
        self.temb_dense1 = dense(temb_dim, temb_dim)

        def resblock(cin: int, cout: int | None = None, up: bool = False, down: bool = False) -> nn.Module:
            if biggan:
                return BigGANResBlock(cin, cout, temb_dim, cfg.dropout, up=up, down=down,
                                      skip_rescale=cfg.skip_rescale, init_scale=cfg.init_scale, **fir_args)
            assert not (up or down)
            return DDPMResBlock(cin, cout, temb_dim, cfg.dropout, conv_shortcut=cfg.conv_shortcut,
                                skip_rescale=cfg.skip_rescale, init_scale=cfg.init_scale)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, skip_rescale=cfg.skip_rescale, init_scale=cfg.init_scale)

        in_ch_data = 2 * cfg.image_channels
        self.conv_in = conv3x3(in_ch_data, nf)
        skip_channels = [nf]
        ch = nf
        pyramid_ch = in_ch_data
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        self.pyramid_down = nn.ModuleList()
        self.pyramid_combine = nn.ModuleList()
        levels = len(cfg.channel_multipliers)
        for level, (mult, res) in enumerate(zip(cfg.channel_multipliers, cfg.resolutions)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(resblock(ch, nf * mult))
                ch = nf * mult
                attns.append(attention(ch) if res in cfg.attention_resolutions else nn.Identity())
                skip_channels.append(ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if level == levels - 1:
                continue
            if biggan:
                self.downsamplers.append(resblock(ch, down=True))
            else:
                self.downsamplers.append(Downsample(ch, with_conv=cfg.resample_with_conv, **fir_args))
            if cfg.progressive_input == "residual":
                self.pyramid_down.append(Downsample(pyramid_ch, ch, with_conv=True, **fir_args))
                pyramid_ch = ch
            elif cfg.progressive_input == "input_skip":
                self.pyramid_down.append(Downsample(pyramid_ch, with_conv=False, **fir_args))
                self.pyramid_combine.append(conv1x1(pyramid_ch, ch))
            skip_channels.append(ch)

        self.mid_block0 = resblock(ch)
        self.mid_attn = attention(ch)
        self.mid_block1 = resblock(ch)

        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(levels)):
            out = nf * cfg.channel_multipliers[level]
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(resblock(ch + skip_channels.pop(), out))
                ch = out
            self.up_blocks.append(blocks)
            res = cfg.resolutions[level]
            self.up_attn.append(attention(ch) if res in cfg.attention_resolutions else nn.Identity())
            if level != 0:
                if biggan:
                    self.upsamplers.append(resblock(ch, up=True))
                else:
                    self.upsamplers.append(Upsample(ch, with_conv=cfg.resample_with_conv, **fir_args))
        assert not skip_channels

        self.norm_out = group_norm(ch)
        self.conv_out = conv3x3(ch, cfg.image_channels, init_scale=cfg.init_scale)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        r"""The time embedding ``(B, 4 * channels)`` fed to every residual block.

        Parameters
        ----------
        t:
            Times of shape ``(B,)`` in :math:`(0, 1]` (the Fourier embedding takes :math:`\log t`).
        """
        if self.config.embedding == "fourier":
            s = torch.log(t.float().clamp_min(1e-20))
        else:
            s = t.float()
        temb = self.temb_dense0(self.time_embed(s))
        return self.temb_dense1(self.act(temb))

    def forward(self, u: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        r"""Evaluate the network.

        Parameters
        ----------
        u:
            ``(B, 2C, H, W)``: data channels followed by velocity channels.
        t:
            Times in :math:`(0, 1]`, shape ``(B,)`` (or a scalar / shape ``(1,)``, broadcast over the batch).

        Returns
        -------
        torch.Tensor
            ``(B, C, H, W)`` (the velocity-noise prediction in the mixed score parametrisation).
        """
        cfg = self.config
        if u.ndim != 4 or tuple(u.shape[1:]) != cfg.input_shape:
            raise ValueError(f"u must have shape (B, {', '.join(map(str, cfg.input_shape))}) for this "
                             f"configuration, got {tuple(u.shape)}")
        t = torch.as_tensor(t, device=u.device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(1).expand(u.shape[0])
        if t.shape != (u.shape[0],):
            raise ValueError(f"t must have shape ({u.shape[0]},) or be a scalar, got {tuple(t.shape)}")
        temb = self.embed_time(t)

        h = self.conv_in(u)
        hs = [h]
        pyramid = u if cfg.progressive_input != "none" else None
        levels = len(cfg.channel_multipliers)
        for level in range(levels):
            for block, attn in zip(self.down_blocks[level], self.down_attn[level]):
                h = attn(block(h, temb))
                hs.append(h)
            if level == levels - 1:
                continue
            down = self.downsamplers[level]
            h = down(h, temb) if isinstance(down, BigGANResBlock) else down(h)
            if cfg.progressive_input == "residual":
                pyramid = self.pyramid_down[level](pyramid)
                h = pyramid + h
                if cfg.skip_rescale:
                    h = h * (1.0 / math.sqrt(2.0))
                pyramid = h
            elif cfg.progressive_input == "input_skip":
                pyramid = self.pyramid_down[level](pyramid)
                h = h + self.pyramid_combine[level](pyramid)
            hs.append(h)

        h = self.mid_block1(self.mid_attn(self.mid_block0(h, temb)), temb)

        for i, level in enumerate(reversed(range(levels))):
            for block in self.up_blocks[i]:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            h = self.up_attn[i](h)
            if level != 0:
                up = self.upsamplers[i]
                h = up(h, temb) if isinstance(up, BigGANResBlock) else up(h)

        return self.conv_out(self.act(self.norm_out(h)))


def count_parameters(config: UNetConfig, trainable_only: bool = True) -> int:
    """Number of parameters of ``ScoreUNet(config)``, counted on the ``meta`` device (nothing is allocated).

    Parameters
    ----------
    config:
        The network configuration.
    trainable_only:
        Count only parameters with ``requires_grad`` (all of them in :class:`ScoreUNet`; buffers such as the
        Fourier frequencies are never counted).

    Returns
    -------
    int
    """
    with torch.device("meta"):
        model = ScoreUNet(config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
