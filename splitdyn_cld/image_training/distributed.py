"""Where a training or sampling process sits: the ``torchrun`` environment, :mod:`torch.distributed` set-up
(NCCL on CUDA, gloo on the CPU; a single process without it), global batches split over the ranks, and the
collective helpers the training loop uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from splitdyn.checks import check_count, check_device

__all__ = ["DistributedContext", "setup_distributed", "cleanup_distributed", "split_global_batch", "shard_sizes",
           "env_int", "reduce_mean", "gather_rng_states"]


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
        """Wait for every rank (nothing in a single process)."""
        if self.distributed:
            dist.barrier()


def env_int(name: str, default: int) -> int:
    """The integer environment variable ``name`` (``default`` if unset or empty); a clear error if not an int."""
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
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available); a ``ValueError`` for a device this machine does not
        have. Under ``torchrun`` on CUDA each rank takes ``cuda:LOCAL_RANK``.
    backend:
        Process-group backend; default ``"nccl"`` on CUDA and ``"gloo"`` on the CPU.
    """
    world_size = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device("device", device)  # a ValueError for "nonsense" or "cuda" without CUDA
    if device.type == "cuda":
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
    batch_size = check_count("batch_size", batch_size)
    world_size = check_count("world_size", world_size)
    if batch_size % world_size:
        raise ValueError(
            f"batch_size is the global batch size and must be divisible by the world size: "
            f"batch_size={batch_size} is not divisible by WORLD_SIZE={world_size} "
            f"(use e.g. --batch-size {world_size * max(1, round(batch_size / world_size))})"
        )
    return batch_size // world_size


def shard_sizes(total: int, world_size: int) -> list[int]:
    """Split ``total`` items over ``world_size`` ranks as evenly as possible (the first ranks get one more)."""
    total = check_count("total", total, minimum=0)
    world_size = check_count("world_size", world_size)
    base, extra = divmod(total, world_size)
    return [base + (r < extra) for r in range(world_size)]


def reduce_mean(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """The mean of ``values`` over the ranks (``values`` itself in a single process)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def gather_rng_states(ctx: DistributedContext, generators: dict[str, torch.Generator]) -> list[dict[str, Any]]:
    """Every rank's RNG states (:func:`splitdyn_cld.training.rng_state` with ``generators``), indexed by rank."""
    from ..training import rng_state

    local = rng_state(generators)
    if not ctx.distributed:
        return [local]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, local)
    return gathered
