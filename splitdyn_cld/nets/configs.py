r"""Named :class:`~splitdyn_cld.nets.unet.UNetConfig` presets: the paper's Table 6 models and small ones.

* ``cifar10`` (107,593,859 parameters): NCSN++, the paper's main CIFAR-10 model. nf 128, multipliers
  (1, 2, 2, 2), 8 residual blocks per level, attention at 16, BigGAN blocks, FIR ``[1, 3, 3, 1]``, progressive
  input ``"residual"``, skip rescale, Fourier embedding of :math:`\log t` (scale 16), dropout 0.1, 32x32x3.
* ``cifar10_ablation`` (39,393,795): DDPM++, the Table 6 ablation model. As ``cifar10`` but 2 blocks per
  level, no FIR, no progressive input, positional embedding of :math:`999\,t`.
* ``celebahq256`` (65,466,371): DDPM++. nf 128, multipliers (1, 1, 2, 2, 2, 2, 2), 2 blocks per level,
  attention at 16, BigGAN blocks, no FIR, no progressive input, positional embedding, dropout 0.1, 256x256x3.
* ``digits`` (1,776,481): a small NCSN++ for scikit-learn's 8x8 digits. nf 32, multipliers (1, 2, 2), 2 blocks
  per level, attention at 4, FIR, progressive input ``"residual"``, Fourier embedding, dropout 0.1, 8x8x1.
* ``tiny`` (190,241): for tests. nf 16, multipliers (1, 2), 1 block per level, attention at 4, 8x8x1,
  no dropout.

The paper (Table 6) reports about 108M, 39M and 68M parameters for the first three; the counts above include
the 6 input / 3 output channels of CLD and are checked by the tests to lie within 5% of those numbers.

* ``cifar10_ablation`` follows Table 6 literally (2 residual blocks per resolution, positional embedding, no
  FIR, progressive input "none") and lands at 39.4M (+1.0%). With NCSN++ settings (FIR, progressive input
  residual, Fourier embedding) 2 blocks give 40.4M; 3 blocks give 50.6M and 4 blocks 61.8M (the latter is the
  size of Song et al.'s DDPM++ continuous model), both outside 5%.
* ``celebahq256`` keeps the power-of-two width nf = 128: 65.5M (-3.7% of 68M). nf = 130 would give 67.5M but
  breaks the 32-group GroupNorm layout and tensor-core friendly widths; nf = 132 gives 69.6M.

The Fourier frequencies are a buffer, not a parameter, and are not counted.
"""

from __future__ import annotations

import dataclasses

from .unet import UNetConfig

__all__ = ["CONFIGS", "get_config", "config_names"]

CONFIGS: dict[str, UNetConfig] = {
    "cifar10": UNetConfig(
        image_channels=3, image_size=32, channels=128, channel_multipliers=(1, 2, 2, 2), num_res_blocks=8,
        attention_resolutions=(16,), dropout=0.1, embedding="fourier", fourier_scale=16.0, resblock="biggan",
        fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True, progressive_input="residual",
    ),
    "cifar10_ablation": UNetConfig(
        image_channels=3, image_size=32, channels=128, channel_multipliers=(1, 2, 2, 2), num_res_blocks=2,
        attention_resolutions=(16,), dropout=0.1, embedding="positional", resblock="biggan", fir=False,
        skip_rescale=True, progressive_input="none",
    ),
    "celebahq256": UNetConfig(
        image_channels=3, image_size=256, channels=128, channel_multipliers=(1, 1, 2, 2, 2, 2, 2),
        num_res_blocks=2, attention_resolutions=(16,), dropout=0.1, embedding="positional", resblock="biggan",
        fir=False, skip_rescale=True, progressive_input="none",
    ),
    "digits": UNetConfig(
        image_channels=1, image_size=8, channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=2,
        attention_resolutions=(4,), dropout=0.1, embedding="fourier", fourier_scale=16.0, resblock="biggan",
        fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True, progressive_input="residual",
    ),
    "tiny": UNetConfig(
        image_channels=1, image_size=8, channels=16, channel_multipliers=(1, 2), num_res_blocks=1,
        attention_resolutions=(4,), dropout=0.0, embedding="fourier", fourier_scale=16.0, resblock="biggan",
        fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True, progressive_input="residual",
    ),
}
"""The named configurations (see the module documentation); use :func:`get_config` to read them."""


def config_names() -> list[str]:
    """Names accepted by :func:`get_config`, sorted.

    Returns
    -------
    list of str
    """
    return sorted(CONFIGS)


def get_config(name: str, **overrides) -> UNetConfig:
    """The named configuration, optionally with some fields replaced.

    Parameters
    ----------
    name:
        One of :func:`config_names` (``"cifar10"``, ``"cifar10_ablation"``, ``"celebahq256"``, ``"digits"``,
        ``"tiny"``).
    **overrides:
        Fields of :class:`~splitdyn_cld.nets.unet.UNetConfig` to change, e.g. ``channels=16, num_res_blocks=1``.

    Returns
    -------
    ~splitdyn_cld.nets.unet.UNetConfig

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    TypeError
        For an override that is not a field of :class:`~splitdyn_cld.nets.unet.UNetConfig`.

    Examples
    --------
    >>> from splitdyn_cld.nets import get_config
    >>> get_config("cifar10").num_res_blocks
    8
    >>> get_config("cifar10", channels=16).channels
    16
    """
    if name not in CONFIGS:
        raise KeyError(f"unknown network config {name!r}; known: {', '.join(config_names())}")
    fields = {f.name for f in dataclasses.fields(UNetConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown UNetConfig field(s) {unknown}; fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(CONFIGS[name], **overrides)
