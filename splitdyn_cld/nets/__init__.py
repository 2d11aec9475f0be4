"""Score networks for image CLD-SGMs: the NCSN++ / DDPM++ U-Net of Song et al. (2021) in plain PyTorch.

* :class:`~splitdyn_cld.nets.unet.ScoreUNet` and its configuration :class:`~splitdyn_cld.nets.unet.UNetConfig`
  (:mod:`splitdyn_cld.nets.unet`);
* the named presets of the paper's Table 6 and small ones, :func:`~splitdyn_cld.nets.configs.get_config` /
  :data:`~splitdyn_cld.nets.configs.CONFIGS`
  (:mod:`splitdyn_cld.nets.configs`);
* the building blocks (FIR resampling, residual and attention blocks, time embeddings) in
  :mod:`splitdyn_cld.nets.layers`.

No custom CUDA extensions or JIT-compiled operators are used.
"""

from .configs import CONFIGS, config_names, get_config
from .unet import ScoreUNet, UNetConfig, count_parameters

__all__ = ["CONFIGS", "ScoreUNet", "UNetConfig", "config_names", "count_parameters", "get_config"]
