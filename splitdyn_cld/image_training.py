r"""Training, sampling and checkpointing of image CLD-SGMs (paper App. E.2, Table 6), on one device or many.

The reusable pieces behind ``examples/train_images.py``, ``examples/sample_images.py`` and
``examples/evaluate_images.py``:

* :func:`setup_distributed` reads the ``torchrun`` environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) and
  initialises :mod:`torch.distributed` (NCCL on CUDA, gloo on the CPU); without it everything runs in one
  process.
* :class:`UNetVelocityNet` adapts a :class:`~splitdyn_cld.nets.ScoreUNet` (channels-stacked input
  ``(B, 2C, H, W)``, output ``(B, C, H, W)``) to the state convention ``(B, 2, C, H, W) -> (B, 1, C, H, W)`` of
  :class:`~splitdyn_cld.score.MixedScore`, and runs the network under autocast (bf16/fp16) while the CLD
  kernel arithmetic stays in float32/float64.
* :class:`ResumableDistributedSampler` shards each epoch's permutation over the ranks and can restart in the
  middle of an epoch, so that a resumed run sees exactly the batches an uninterrupted one would.
* :func:`train` is the training loop: HSM loss (eq. 9/53) with the mixed score, Adam with a linear warm-up,
  gradient-norm clipping, EMA, mixed precision, optional ``torch.compile``, DDP, atomic checkpoints with
  every piece of state (model, EMA, optimiser, grad scaler, step, RNG states of every rank, data order) and
  exact resume, CSV (and TensorBoard) logs, sample grids, and a stop with a clear message on a non-finite loss.
* :func:`generate_images` and :func:`load_trained_model` for sampling from a checkpoint.

Batch sizes are **global**: ``batch_size`` images per optimisation step in total, split evenly over the
ranks (it must be divisible by the world size). The paper's 16 GPUs x 8 images is ``batch_size=128``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .losses import hsm_loss
from .process import CLD
from .samplers import SAMPLERS
from .score import MixedScore

__all__ = [
    "TrainSettings",
    "PRESETS",
    "settings_for",
    "DistributedContext",
    "setup_distributed",
    "cleanup_distributed",
    "split_global_batch",
    "shard_sizes",
    "UNetVelocityNet",
    "build_cld",
    "build_score_model",
    "SyntheticImages",
    "build_dataset",
    "ResumableDistributedSampler",
    "resolve_precision",
    "train_step",
    "train",
    "TrainResult",
    "save_image_grid",
    "generate_images",
    "load_trained_model",
    "TrainedModel",
    "CHECKPOINT_NAME",
]

#: File name of the (atomically written) training checkpoint inside the run directory.
CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "splitdyn_cld.image_training/1"


# ---------------------------------------------------------------------------------------------------------------
# Settings (Table 6 presets)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    """Everything a training run needs; the presets in :data:`PRESETS` follow the paper's Table 6.

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
        Output directory (checkpoint, logs, sample grids).
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
    mixed:
        Mixed score parametrisation (Sec. 3.2).
    weighting, t_min:
        HSM weighting (``"ell"``: :math:`\\lambda = \\ell_t^{-2}`; ``"likelihood"``) and the time cutoff.
    random_flip:
        Random horizontal flips (drawn from the training generator, so resume stays exact).
    threads:
        CPU threads for PyTorch (``torch.set_num_threads``); on a busy machine 1 thread per process avoids
        OpenMP oversubscription, which can slow CPU training several-fold.
    """

    config: str = "digits"
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    out: str = "outputs/images"
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
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True


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


def settings_for(config: str, **overrides) -> TrainSettings:
    """The preset for ``config`` (see :data:`PRESETS`) with ``overrides`` (``None`` values are ignored)."""
    if config not in PRESETS:
        raise ValueError(f"config must be one of {sorted(PRESETS)}, got {config!r}")
    values = dict(PRESETS[config], config=config)
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown training settings: {unknown}")
    return TrainSettings(**values)


# ---------------------------------------------------------------------------------------------------------------
# Distributed setup
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup_distributed(device: str | torch.device | None = None, backend: str | None = None) -> DistributedContext:
    """Initialise :mod:`torch.distributed` from the ``torchrun`` environment, or run as a single process.

    Parameters
    ----------
    device:
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). Under ``torchrun`` on CUDA each rank takes
        ``cuda:LOCAL_RANK``.
    backend:
        Process-group backend; default ``"nccl"`` on CUDA and ``"gloo"`` on the CPU.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistributedContext(rank, world_size, local_rank, device, distributed)


def cleanup_distributed(ctx: DistributedContext) -> None:
    """Destroy the process group created by :func:`setup_distributed`."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def split_global_batch(batch_size: int, world_size: int) -> int:
    """Per-rank batch size of a **global** ``batch_size``; it must be divisible by ``world_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size is the global batch size and must be divisible by the world size: "
            f"batch_size={batch_size} is not divisible by WORLD_SIZE={world_size} "
            f"(use e.g. --batch-size {world_size * max(1, round(batch_size / world_size))})"
        )
    return batch_size // world_size


def shard_sizes(total: int, world_size: int) -> list[int]:
    """Split ``total`` items over ``world_size`` ranks as evenly as possible (the first ranks get one more)."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    base, extra = divmod(total, world_size)
    return [base + (r < extra) for r in range(world_size)]


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


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


def _net_config(settings: TrainSettings):
    from .nets import get_config

    overrides = {}
    if settings.dropout is not None:
        overrides["dropout"] = settings.dropout
    if settings.image_size is not None:
        overrides["image_size"] = settings.image_size
    return get_config(settings.config, **overrides)


def build_score_model(net_config, cld: CLD, mixed: bool = True, autocast_dtype: torch.dtype | None = None
                      ) -> tuple[MixedScore, UNetVelocityNet]:
    """A :class:`MixedScore` around a fresh :class:`~splitdyn_cld.nets.ScoreUNet`; also returns the adapter."""
    from .nets import ScoreUNet

    net = UNetVelocityNet(ScoreUNet(net_config), autocast_dtype)
    return MixedScore(net, cld, mixed=mixed), net


def _image_shape(net_config) -> tuple[int, int, int]:
    return int(net_config.image_channels), int(net_config.image_size), int(net_config.image_size)


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


class SyntheticImages(Dataset):
    """Random images in :math:`[-1, 1]` of a given shape (deterministic per index): throughput/stability runs."""

    def __init__(self, shape: tuple[int, int, int], length: int = 50_000, seed: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.length = int(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        return torch.rand(self.shape, generator=g) * 2 - 1


def build_dataset(name: str, root: str | None, image_shape: tuple[int, int, int], *, train: bool = True,
                  seed: int = 0) -> Dataset:
    """The training (or test) images in :math:`[-1, 1]` as a dataset of ``(C, H, W)`` float tensors.

    ``digits`` needs no download (scikit-learn); ``cifar10`` reads the python-pickle CIFAR-10 under ``root``;
    ``folder`` reads every image under ``root`` at the network's resolution (no split: ``train`` is
    ignored); ``synthetic`` is random data. Images are mapped to :math:`[-1, 1]` deterministically
    (:func:`splitdyn_cld.data.to_float`); flips are done on the batch with the training generator.
    """
    from . import data

    if name == "synthetic":
        return SyntheticImages(image_shape, seed=seed + (0 if train else 1))
    if name not in ("digits", "cifar10", "folder"):
        raise ValueError(f"dataset must be 'digits', 'cifar10', 'folder' or 'synthetic', got {name!r}")
    if name in ("cifar10", "folder") and root is None:
        raise ValueError(f"--dataset {name} needs --data-root ("
                         + ("the folder holding cifar-10-batches-py)" if name == "cifar10" else "a folder of images)"))
    images = data.load_uint8(name, root, train=train, image_size=image_shape[-1])
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"dataset {name!r} has images of shape {tuple(images.shape[1:])} but the network "
                         f"config expects {tuple(image_shape)}")
    return data.ImageDataset(images)


class ResumableDistributedSampler(DistributedSampler):
    """:class:`~torch.utils.data.distributed.DistributedSampler` that can start an epoch at a given batch.

    Each epoch is a permutation seeded by ``seed + epoch``, split over the ranks; ``set_epoch(epoch,
    start_batch)`` skips the first ``start_batch`` per-rank batches, so a resumed run continues with exactly the
    batches an uninterrupted run would have drawn.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = int(batch_size)
        self.start_batch = 0
        if self.num_samples < self.batch_size:
            raise ValueError(f"the dataset ({len(dataset)} items) is too small for a per-rank batch of "
                             f"{self.batch_size} on {num_replicas} rank(s)")

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must be in [0, {self.batches_per_epoch}], got {start_batch}")
        self.start_batch = int(start_batch)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return self.num_samples - self.start_batch * self.batch_size


class _BatchStream:
    """Endless per-rank batches with the data-order state ``(epoch, batch)`` for checkpoints."""

    def __init__(self, dataset: Dataset, ctx: DistributedContext, per_rank_batch: int, seed: int, num_workers: int):
        self.dataset = dataset
        self.sampler = ResumableDistributedSampler(dataset, ctx.world_size, ctx.rank, seed, per_rank_batch)
        self.per_rank_batch = per_rank_batch
        self.num_workers = num_workers
        self.pin = ctx.device.type == "cuda"
        self.seed = seed
        self.epoch, self.batch = 0, 0
        self._iterator = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._iterator = None

    def _start(self) -> None:
        if self.batch >= self.sampler.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        self.sampler.set_epoch(self.epoch, self.batch)
        # A dedicated generator: creating the iterator must not consume the global RNG (exact resume).
        loader_generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        loader = DataLoader(self.dataset, batch_size=self.per_rank_batch, sampler=self.sampler, drop_last=True,
                            num_workers=self.num_workers, pin_memory=self.pin, generator=loader_generator,
                            persistent_workers=False)
        self._iterator = iter(loader)

    def __next__(self) -> torch.Tensor:
        if self._iterator is None:
            self._start()
        try:
            item = next(self._iterator)
        except StopIteration:
            self.epoch, self.batch = self.epoch + 1, 0
            self._start()
            item = next(self._iterator)
        self.batch += 1
        return item[0] if isinstance(item, (tuple, list)) else item


# ---------------------------------------------------------------------------------------------------------------
# One optimisation step
# ---------------------------------------------------------------------------------------------------------------


def resolve_precision(precision: str, device: torch.device) -> tuple[str, torch.dtype | None]:
    """``"auto"`` -> bf16 on CUDA, fp32 elsewhere; returns the name and the autocast dtype (``None`` for fp32)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if precision not in dtypes:
        raise ValueError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {precision!r}")
    return precision, dtypes[precision]


def _reduce_mean(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def train_step(score_model: torch.nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, cld: CLD, *,
               parameters: list[torch.nn.Parameter] | None = None, grad_clip: float = 1.0,
               scaler: "torch.amp.GradScaler | None" = None, weighting: str = "ell", t_min: float = 1e-5,
               generator: torch.Generator | None = None, ctx: DistributedContext | None = None,
               step: int = 0) -> dict[str, float]:
    """One HSM step: loss, non-finite check (all ranks agree), backward, unscale, clip, optimiser step.

    Returns ``{"loss": ..., "grad_norm": ...}`` (the loss averaged over the ranks; the gradient norm before
    clipping). Raises :class:`~splitdyn_cld.training.NonFiniteLossError` *before* touching the parameters if
    the loss is NaN/inf, or (without a gradient scaler) if the gradient norm is. Both checks read a value on
    the host: two synchronisations per step on a GPU.
    """
    from .training import NonFiniteLossError, check_finite_loss

    ctx = ctx or DistributedContext(device=x0.device)
    parameters = parameters if parameters is not None else [p for p in score_model.parameters() if p.requires_grad]
    loss = hsm_loss(score_model, x0, cld, weighting=weighting, t_min=t_min, generator=generator)
    reduced = _reduce_mean(loss.detach().float().reshape(1), ctx)
    check_finite_loss(reduced, step)
    loss_value = float(reduced)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
    grad_norm = float(grad_norm)
    if scaler is not None:  # fp16: the scaler skips steps with inf/NaN gradients and lowers its scale
        scaler.step(optimizer)
        scaler.update()
    else:
        if not math.isfinite(grad_norm):  # the same on every rank (gradients are all-reduced)
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the gradient norm is {grad_norm} at step {step} (finite loss {loss_value}): "
                                     "training stopped before the parameters were updated.")
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_value, "grad_norm": grad_norm}


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 1,
                    scale: int | None = None) -> Path:
    """Tile images ``(N, C, H, W)`` in :math:`[-1, 1]` (or uint8) into one PNG (matplotlib, no GUI).

    ``scale`` enlarges every pixel to ``scale x scale`` (nearest neighbour); by default small images are
    enlarged to at least 32 pixels (8x8 digits: 4x).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    from .data import to_uint8

    x = images.cpu() if images.dtype == torch.uint8 else to_uint8(images.cpu())
    scale = scale or max(1, math.ceil(32 / max(x.shape[-2:])))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, top:top + h, left:left + w] = x[i]
    array = canvas.permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if c == 1:
        matplotlib.image.imsave(path, array[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        matplotlib.image.imsave(path, array)
    return path


@torch.no_grad()
def generate_images(score_model, cld: CLD, count: int, image_shape: tuple[int, int, int], *, sampler: str = "sscs",
                    n_steps: int = 100, grid: str = "quadratic", eps: float = 1e-3, batch_size: int = 256,
                    rtol: float = 1e-5, atol: float = 1e-5, denoise: bool = True,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    progress: bool = False) -> tuple[torch.Tensor, float]:
    """Draw ``count`` images with a CLD sampler (``"sscs"``, ``"em"`` or ``"ode"``), clamped to :math:`[-1, 1]`.

    Returns the images ``(count, C, H, W)`` (float32, CPU) and the mean NFE per batch.
    """
    if sampler not in ("sscs", "em", "ode"):
        raise ValueError(f"sampler must be 'sscs', 'em' or 'ode', got {sampler!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    device = torch.device(device)
    outputs, nfes = [], []
    batches = range(0, count, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"{sampler} x{n_steps}" if sampler != "ode" else "ode", leave=False)
    for start in batches:
        n = min(batch_size, count - start)
        kwargs = dict(eps=eps, denoise=denoise, generator=generator, device=device, dtype=torch.float32)
        if sampler == "ode":
            result = SAMPLERS["ode"](cld, score_model, (n, *image_shape), rtol=rtol, atol=atol, **kwargs)
        else:
            result = SAMPLERS[sampler](cld, score_model, (n, *image_shape), n_steps, grid=grid, **kwargs)
        outputs.append(result.x.clamp(-1, 1).float().cpu())
        nfes.append(result.nfe)
    images = torch.cat(outputs) if outputs else torch.empty(0, *image_shape)
    return images, (sum(nfes) / len(nfes) if nfes else 0.0)


# ---------------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    history:
        Per-step ``{"step", "loss", "grad_norm", "lr"}`` of this run (the loss averaged over the ranks).
    step:
        The final step.
    checkpoint, out:
        Paths of the checkpoint and the output folder.
    model, ema:
        The trained :class:`UNetVelocityNet` (unwrapped) and its EMA (an ``AveragedModel``).
    rank:
        This process's rank.
    """

    history: list[dict[str, float]]
    step: int
    checkpoint: Path
    out: Path
    model: torch.nn.Module | None = None
    ema: torch.nn.Module | None = None
    rank: int = 0


def _gather_rng(ctx: DistributedContext, generator: torch.Generator) -> list[dict[str, Any]]:
    from .training import rng_state

    local = rng_state({"loss": generator})
    if not ctx.distributed:
        return [local]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, local)
    return gathered


class _TensorBoard:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                return
            self.writer = SummaryWriter(str(path))

    def log(self, row: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _print(ctx: DistributedContext, *args) -> None:
    if ctx.is_main:
        print(*args, file=sys.stderr, flush=True)


def train(settings: TrainSettings) -> TrainResult:
    r"""Train an image CLD-SGM with ``settings``; under ``torchrun`` call it on every rank (only rank 0 writes).

    Each step draws a per-rank batch of ``batch_size / world_size`` images, evaluates the HSM loss (eq. 9/53,
    :math:`t \sim U[t_{min}, 1)`) of the mixed score, checks it is finite on every rank, back-propagates (DDP
    averages the gradients), clips the gradient norm, takes an Adam step at the warmed-up learning rate and
    updates the EMA.

    Files in ``settings.out`` (rank 0): ``checkpoint.pt`` (atomic; model, EMA, optimiser, grad scaler, step,
    every rank's RNG states, data order, settings, network config), optionally ``checkpoint_<step>.pt``
    snapshots, ``train_log.csv`` (step, loss averaged over the logging interval, gradient norm, learning rate,
    images/s, epoch), ``samples/step_<step>.png`` (SSCS samples of the EMA model) and ``tensorboard/`` if
    TensorBoard is installed. With ``settings.resume`` the run continues from ``checkpoint.pt``, bit for bit on
    the CPU when the world size is unchanged.

    Raises
    ------
    splitdyn_cld.training.NonFiniteLossError
        On a NaN/inf loss, with the step and the path of the last good checkpoint (left untouched).
    """
    split_global_batch(settings.batch_size, _env_int("WORLD_SIZE", 1))  # fail before any process group
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    ctx = setup_distributed(settings.device)
    try:
        return _train(settings, ctx)
    finally:
        cleanup_distributed(ctx)


def _train(s: TrainSettings, ctx: DistributedContext) -> TrainResult:
    from .training import CSVLogger, NonFiniteLossError, load_checkpoint, make_ema, save_checkpoint, set_rng_state, warmup_lr

    per_rank_batch = split_global_batch(s.batch_size, ctx.world_size)
    precision, autocast_dtype = resolve_precision(s.precision, ctx.device)
    out = Path(s.out)
    ckpt_path = out / CHECKPOINT_NAME
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ctx.barrier()

    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    net_config = _net_config(s)
    image_shape = _image_shape(net_config)
    cld = build_cld(s)
    torch.manual_seed(s.seed)  # identical initialisation on every rank (DDP also broadcasts rank 0's weights)
    score_model, net = build_score_model(net_config, cld, s.mixed, autocast_dtype)
    net.to(ctx.device)
    ema = make_ema(net, s.ema_decay, warmup=True)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=s.lr)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")

    trained: torch.nn.Module = net
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(trained, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if s.compile:  # compile the DDP-wrapped module (DDP's graph breaks at bucket boundaries overlap communication)
        trained = torch.compile(trained)
    train_model = MixedScore(trained, cld, mixed=s.mixed)

    dataset = build_dataset(s.dataset, s.data_root, image_shape, train=True, seed=s.seed)
    stream = _BatchStream(dataset, ctx, per_rank_batch, s.seed, s.num_workers)
    generator = torch.Generator(ctx.device).manual_seed(s.seed * 65_537 + 1 + ctx.rank)
    torch.manual_seed(s.seed * 65_537 + 2 + ctx.rank)  # dropout etc.: a stream per rank

    step = 0
    if s.resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location="cpu")  # RNG states must stay on the CPU
        if state.get("format") != _FORMAT:
            raise ValueError(f"{ckpt_path} is not a checkpoint of this training script")
        net.unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        stream.load_state(state["data"])
        step = int(state["step"])
        if state["world_size"] == ctx.world_size:
            set_rng_state(state["rng"][ctx.rank], {"loss": generator})
        else:
            _print(ctx, f"note: checkpoint written with world size {state['world_size']}, resuming on "
                        f"{ctx.world_size}: data order and noise continue but not bit-for-bit")
            stream.load_state({"epoch": stream.epoch + 1, "batch": 0})
        _print(ctx, f"resumed from {ckpt_path} at step {step}")
    elif s.resume:
        _print(ctx, f"--resume: no checkpoint at {ckpt_path}, starting from scratch")

    def save(at_step: int) -> None:
        rng = _gather_rng(ctx, generator)
        if ctx.is_main:
            payload = {
                "format": _FORMAT,
                "step": at_step,
                "model": net.unet.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng,
                "data": stream.state(),
                "world_size": ctx.world_size,
                "settings": dataclasses.asdict(s),
                "net_config": dataclasses.asdict(net_config),
                "precision": precision,
            }
            save_checkpoint(ckpt_path, payload)
            if s.snapshot_every and at_step % s.snapshot_every == 0:
                save_checkpoint(out / f"checkpoint_{at_step:07d}.pt", payload)
        ctx.barrier()

    def sample_grid(at_step: int) -> None:
        if ctx.is_main and s.sample_count > 0:
            ema_model = MixedScore(ema.module, cld, mixed=s.mixed).eval()
            g = torch.Generator(ctx.device).manual_seed(s.seed + 12345)
            images, _ = generate_images(ema_model, cld, s.sample_count, image_shape, sampler="sscs",
                                        n_steps=s.sample_steps, grid=s.sample_grid, batch_size=s.sample_count,
                                        generator=g, device=ctx.device)
            save_image_grid(images, out / "samples" / f"step_{at_step:07d}.png")
        ctx.barrier()

    fields = ["step", "loss", "grad_norm", "lr", "images_per_s", "epoch"]
    logger = CSVLogger(out / "train_log.csv", fieldnames=fields, resume_step=step if step > 0 else None) \
        if ctx.is_main else None
    tensorboard = _TensorBoard(out / "tensorboard", s.tensorboard and ctx.is_main)
    history: list[dict[str, float]] = []
    progress = None
    if ctx.is_main and s.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=s.steps, initial=step, desc="train", dynamic_ncols=True)
    net.train()
    tic, images_seen, interval_losses = time.perf_counter(), 0, []
    try:
        while step < s.steps:
            x0 = next(stream).to(ctx.device, non_blocking=True).float()
            if s.random_flip:
                flip = torch.rand(x0.shape[0], generator=generator, device=ctx.device) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            lr = warmup_lr(step, s.lr, s.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                stats = train_step(train_model, optimizer, x0, cld, parameters=parameters, grad_clip=s.grad_clip,
                                   scaler=scaler if precision == "fp16" else None, weighting=s.weighting,
                                   t_min=s.t_min, generator=generator, ctx=ctx, step=step + 1)
            except NonFiniteLossError as exc:
                last = f"the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else "no checkpoint was written yet"
                raise NonFiniteLossError(
                    f"{exc}\nTraining stopped; {last} (left untouched). Resume it with --resume, e.g. with a lower "
                    f"--lr, a longer --warmup, or --precision bf16/fp32 instead of fp16."
                ) from None
            ema.update_parameters(net)
            step += 1
            images_seen += s.batch_size
            row = {"step": step, "loss": stats["loss"], "grad_norm": stats["grad_norm"], "lr": lr}
            history.append(row)
            interval_losses.append(stats["loss"])
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{stats['loss']:.4g}")
            if step % s.log_every == 0 or step == s.steps:
                elapsed = time.perf_counter() - tic
                row = dict(row, loss=sum(interval_losses) / len(interval_losses),
                           images_per_s=images_seen / max(elapsed, 1e-9), epoch=stream.epoch)
                tic, images_seen, interval_losses = time.perf_counter(), 0, []
                if logger is not None:
                    logger.log(row)
                tensorboard.log(row, step)
            if s.ckpt_every and step % s.ckpt_every == 0 or step == s.steps:
                save(step)
            if s.sample_every and step % s.sample_every == 0 or (step == s.steps and s.sample_every):
                sample_grid(step)
    finally:
        if progress is not None:
            progress.close()
        tensorboard.close()
        if logger is not None:
            logger.close()
    return TrainResult(history=history, step=step, checkpoint=ckpt_path, out=out, model=net, ema=ema, rank=ctx.rank)


# ---------------------------------------------------------------------------------------------------------------
# Loading a trained model
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A model loaded from a training checkpoint (see :func:`load_trained_model`)."""

    score: MixedScore
    cld: CLD
    settings: TrainSettings
    image_shape: tuple[int, int, int]
    step: int


def load_trained_model(path: str | os.PathLike, *, use_ema: bool = True, device: torch.device | str = "cpu",
                       precision: str = "fp32") -> TrainedModel:
    """Rebuild the velocity score model of a checkpoint written by :func:`train` (EMA weights by default)."""
    from .nets import ScoreUNet, UNetConfig
    from .training import load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train one with examples/train_images.py)")
    device = torch.device(device)
    state = load_checkpoint(path, map_location="cpu")
    if state.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by splitdyn_cld.image_training.train")
    settings = TrainSettings(**state["settings"])
    net_config = UNetConfig(**state["net_config"])
    _, autocast_dtype = resolve_precision(precision, device)
    cld = build_cld(settings)
    net = UNetVelocityNet(ScoreUNet(net_config), autocast_dtype)
    if use_ema:
        prefix = "module.unet."
        ema_state = {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}
        net.unet.load_state_dict(ema_state)
    else:
        net.unet.load_state_dict(state["model"])
    net.to(device).eval()
    return TrainedModel(MixedScore(net, cld, mixed=settings.mixed).eval(), cld, settings, _image_shape(net_config),
                        int(state["step"]))
