"""Training data for image runs: the datasets (:func:`build_dataset`, :class:`SyntheticImages`) and the
resumable per-rank batch stream (:class:`ResumableDistributedSampler`, :class:`BatchStream`), so that a
resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .distributed import DistributedContext

__all__ = ["SyntheticImages", "build_dataset", "ResumableDistributedSampler", "BatchStream"]


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
    from .. import data

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


class BatchStream:
    """Endless per-rank batches of ``dataset`` with the data-order state ``(epoch, batch)`` for checkpoints
    (:meth:`state`, :meth:`load_state`); each epoch is a :class:`ResumableDistributedSampler` permutation."""

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
        """The data order: ``{"epoch", "batch"}`` (batches of the epoch already drawn)."""
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state`: the next batch is the one an uninterrupted run would draw."""
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
