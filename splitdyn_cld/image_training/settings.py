r"""Settings of an image training run: :class:`TrainSettings`, the Table 6 presets :data:`PRESETS`,
:func:`settings_for`, and the settings that define a run (:data:`RUN_DEFINING_SETTINGS`), which a resumed run
must share with its checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from splitdyn.checks import check_count, check_flag, check_nonnegative, check_positive

__all__ = ["TrainSettings", "PRESETS", "settings_for", "RUN_DEFINING_SETTINGS", "default_out"]

_DATASETS = ("digits", "cifar10", "folder", "synthetic")
_PRECISIONS = ("auto", "bf16", "fp16", "fp32")

#: Settings that define a training run: resuming with different values is refused unless the user overrides
#: (the network configuration is compared as well). The number of steps, the learning rate, warm-up,
#: clipping, precision, logging and checkpoint intervals may change between a run and its resumption.
RUN_DEFINING_SETTINGS = ("config", "dataset", "image_size", "batch_size", "seed", "mass", "gamma", "beta",
                         "eps_num", "objective", "mixed", "weighting", "t_min", "dropout", "random_flip")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@dataclass
class TrainSettings:
    """Everything a training run needs; the presets in :data:`PRESETS` follow the paper's Table 6.

    Every field is checked on construction (a ``ValueError``/``TypeError`` naming the field).

    Attributes
    ----------
    config:
        Network configuration name for :func:`splitdyn_cld.nets.get_config`.
    dataset:
        ``"digits"`` (scikit-learn, offline), ``"cifar10"``, ``"folder"`` (an image folder, e.g. CelebA-HQ) or
        ``"synthetic"`` (random images of the network's shape, for throughput and stability runs).
    data_root:
        Where ``cifar10`` / ``folder`` data lives.
    out:
        Output directory (checkpoint, logs, sample grids); :func:`settings_for` makes it
        ``outputs/<config>`` (see :func:`default_out`).
    steps:
        Total number of optimisation steps (a resumed run continues up to it).
    batch_size:
        **Global** batch size, split over the ranks.
    lr, warmup, grad_clip:
        Adam learning rate, linear warm-up steps, gradient-norm clipping threshold (0 disables).
    ema_decay:
        EMA rate (with the warm-up :math:`\\min(\\text{rate}, (1+n)/(10+n))`).
    precision:
        ``"auto"`` (bf16 on CUDA, fp32 on the CPU), ``"bf16"``, ``"fp16"`` (with a gradient scaler) or ``"fp32"``.
    mass, gamma, beta, eps_num:
        CLD parameters :math:`M`, :math:`\\gamma`, :math:`\\beta` and the Cholesky stabiliser.
    objective:
        ``"hsm"`` (hybrid score matching, eq. 9 / 53: the initial velocity is marginalised) or ``"dsm"``
        (denoising score matching, eq. 54: :math:`v_0 \\sim \\mathcal N(0, \\gamma M I)` is drawn and
        conditioned on, with the DSM :math:`\\ell_t`); the mixed score uses the same kernel's :math:`\\ell_t`.
    mixed:
        Mixed score parametrisation (Sec. 3.2).
    weighting, t_min:
        HSM weighting (``"ell"``: :math:`\\lambda = \\ell_t^{-2}`; ``"likelihood"``) and the time cutoff.
    random_flip:
        Random horizontal flips (drawn from the training generator, so resume stays exact).
    resume, override_settings:
        Continue from ``<out>/checkpoint.pt``; a checkpoint whose :data:`RUN_DEFINING_SETTINGS` (or network
        configuration) differ is refused unless ``override_settings``.
    threads:
        CPU threads for PyTorch (``torch.set_num_threads``); on a busy machine 1 thread per process avoids
        OpenMP oversubscription, which can slow CPU training several-fold.
    """

    config: str = "digits"
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    out: str = "outputs/digits"
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 100_000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    precision: str = "auto"
    compile: bool = False
    mass: float = 0.25
    gamma: float = 0.04
    beta: float = 4.0
    eps_num: float = 1e-9
    objective: str = "hsm"
    mixed: bool = True
    weighting: str = "ell"
    t_min: float = 1e-5
    random_flip: bool = False
    dropout: float | None = None
    seed: int = 0
    num_workers: int = 0
    log_every: int = 50
    ckpt_every: int = 5000
    snapshot_every: int = 0
    sample_every: int = 0
    sample_count: int = 64
    sample_steps: int = 100
    sample_grid: str = "quadratic"
    resume: bool = False
    override_settings: bool = False
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.config, str):
            raise TypeError(f"config must be a str, got {type(self.config).__name__}")
        _choice("dataset", self.dataset, _DATASETS)
        _choice("precision", self.precision, _PRECISIONS)
        _choice("weighting", self.weighting, ("ell", "likelihood"))
        _choice("objective", self.objective, ("hsm", "dsm"))
        _choice("sample_grid", self.sample_grid, ("uniform", "quadratic"))
        for name in ("steps", "batch_size", "log_every", "sample_steps"):
            check_count(name, getattr(self, name), minimum=1)
        for name in ("warmup", "seed", "num_workers", "ckpt_every", "snapshot_every", "sample_every",
                     "sample_count"):
            check_count(name, getattr(self, name), minimum=0)
        for name in ("image_size", "threads"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), minimum=1)
        for name in ("lr", "mass", "gamma", "beta", "t_min"):
            check_positive(name, getattr(self, name))
        for name in ("grad_clip", "eps_num"):
            check_nonnegative(name, getattr(self, name))
        if not 0.0 < check_positive("ema_decay", self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.t_min >= 1.0:
            raise ValueError(f"t_min must lie in (0, 1), got {self.t_min}")
        if self.dropout is not None and not 0.0 <= check_nonnegative("dropout", self.dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        for name in ("compile", "mixed", "random_flip", "resume", "override_settings", "progress", "tensorboard"):
            check_flag(name, getattr(self, name))
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be None, a str such as 'cpu' or 'cuda', or a torch.device, got "
                            f"{type(self.device).__name__} {self.device!r}")


#: Named training presets (``--config`` of ``examples/train_images.py``): network config plus training
#: hyper-parameters (batch size, learning rate, steps, ...) for each dataset.
#:
#: :meta hide-value:
PRESETS: dict[str, dict[str, Any]] = {
    # Table 6, "CIFAR10 (Main)": 800k iterations, 100k warm-up, lr 2e-4, 16 GPUs x 8 = 128, eps_num 1e-9.
    "cifar10": dict(dataset="cifar10", steps=800_000, warmup=100_000, lr=2e-4, batch_size=128, ema_decay=0.9999,
                    eps_num=1e-9, random_flip=True, ckpt_every=10_000, sample_every=50_000, log_every=100),
    # Table 6, "CIFAR10 (Ablation)": 1M iterations.
    "cifar10_ablation": dict(dataset="cifar10", steps=1_000_000, warmup=100_000, lr=2e-4, batch_size=128,
                             ema_decay=0.9999, eps_num=1e-9, random_flip=True, ckpt_every=10_000,
                             sample_every=50_000, log_every=100),
    # Table 6, "CelebA (Qualitative)": 320k iterations, lr 1e-4, 16 GPUs x 4 = 64, eps_num 1e-6.
    "celebahq256": dict(dataset="folder", image_size=256, steps=320_000, warmup=100_000, lr=1e-4, batch_size=64,
                        ema_decay=0.9999, eps_num=1e-6, random_flip=True, ckpt_every=10_000, sample_every=20_000,
                        sample_count=16, log_every=100),
    # scikit-learn's 8x8 digits: a CPU-sized run (minutes), same CLD and loss as the paper.
    "digits": dict(dataset="digits", steps=1500, warmup=100, lr=1e-3, batch_size=64, ema_decay=0.999,
                   eps_num=1e-6, ckpt_every=500, sample_every=500, log_every=50, sample_steps=100),
    # For tests and smoke runs.
    "tiny": dict(dataset="synthetic", steps=10, warmup=0, lr=1e-3, batch_size=8, ema_decay=0.99, eps_num=1e-6,
                 ckpt_every=5, log_every=1, sample_every=0, sample_count=4, sample_steps=5),
}


def default_out(config: str) -> str:
    """The output folder of a run of ``config`` when none is given: ``outputs/<config>``."""
    return f"outputs/{config}"


def settings_for(config: str, **overrides) -> TrainSettings:
    """The preset for ``config`` (see :data:`PRESETS`) with ``overrides`` (``None`` values are ignored); the
    output folder defaults to :func:`default_out` ``(config)``."""
    if config not in PRESETS:
        raise ValueError(f"config must be one of {sorted(PRESETS)}, got {config!r}")
    values = dict(PRESETS[config], config=config, out=default_out(config))
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown training settings: {unknown}")
    return TrainSettings(**values)
