r"""Training, sampling and checkpointing of image CLD-SGMs (paper App. E.2, Table 6), on one device or many.

The reusable pieces behind ``examples/train_images.py``, ``examples/sample_images.py`` and
``examples/evaluate_images.py``, one module per concern:

* :mod:`~splitdyn_cld.image_training.settings` -- :class:`~splitdyn_cld.image_training.settings.TrainSettings`, the Table 6 presets :data:`~splitdyn_cld.image_training.settings.PRESETS`
  and :func:`~splitdyn_cld.image_training.settings.settings_for`;
* :mod:`~splitdyn_cld.image_training.distributed` -- :func:`~splitdyn_cld.image_training.distributed.setup_distributed` reads the ``torchrun``
  environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) and initialises :mod:`torch.distributed` (NCCL on
  CUDA, gloo on the CPU); without it everything runs in one process;
* :mod:`~splitdyn_cld.image_training.model` -- :class:`~splitdyn_cld.image_training.model.UNetVelocityNet` adapts a
  :class:`~splitdyn_cld.nets.ScoreUNet` (channels-stacked input ``(B, 2C, H, W)``, output ``(B, C, H, W)``) to
  the state convention ``(B, 2, C, H, W) -> (B, 1, C, H, W)`` of :class:`~splitdyn_cld.score.MixedScore`, and
  runs the network under autocast (bf16/fp16) while the CLD kernel arithmetic stays in float32/float64;
* :mod:`~splitdyn_cld.image_training.data_stream` -- the datasets and :class:`~splitdyn_cld.image_training.data_stream.ResumableDistributedSampler`,
  which shards each epoch's permutation over the ranks and can restart in the middle of an epoch, so that a
  resumed run sees exactly the batches an uninterrupted one would;
* :mod:`~splitdyn_cld.image_training.step` -- :func:`~splitdyn_cld.image_training.step.train_step`, one optimisation step;
* :mod:`~splitdyn_cld.image_training.loop` -- :func:`~splitdyn_cld.image_training.loop.train`, the training loop: HSM loss (eq. 9/53; DSM, eq. 54, with
  ``objective="dsm"``) with the mixed score, Adam with a linear warm-up, gradient-norm clipping, EMA, mixed precision, optional
  ``torch.compile``, DDP, atomic checksummed checkpoints with every piece of state (model, EMA, optimiser,
  grad scaler, step, RNG states of every rank, data order) and exact resume, CSV (and TensorBoard) logs,
  sample grids, and a stop with a clear message on a non-finite loss or batch;
* :mod:`~splitdyn_cld.image_training.checkpoint` -- the resume checks (checksum, format, the settings that
  define the run) and :func:`~splitdyn_cld.image_training.checkpoint.load_trained_model` for sampling from a checkpoint;
* :mod:`~splitdyn_cld.image_training.sampling` -- :func:`~splitdyn_cld.image_training.sampling.generate_images` and :func:`~splitdyn_cld.image_training.sampling.save_image_grid`;
* :mod:`~splitdyn_cld.image_training.logs` -- rank-0 messages and the optional TensorBoard logger.

Batch sizes are **global**: ``batch_size`` images per optimisation step in total, split evenly over the
ranks (it must be divisible by the world size). The paper's 16 GPUs x 8 images is ``batch_size=128``.
"""

from .checkpoint import CHECKPOINT_NAME, TrainedModel, load_trained_model
from .data_stream import ResumableDistributedSampler, SyntheticImages, build_dataset
from .distributed import DistributedContext, cleanup_distributed, setup_distributed, shard_sizes, split_global_batch
from .loop import TrainResult, train
from .model import UNetVelocityNet, build_cld, build_score_model, resolve_precision
from .sampling import generate_images, save_image_grid
from .settings import PRESETS, TrainSettings, settings_for
from .step import train_step

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
