"""Whole-batch access to in-memory tensors: one indexing op per batch, no per-item Python."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class TensorBatchDataset(Dataset):
    """Images and targets indexed by a whole batch of indices at once.

    Arrays may be torch tensors (in RAM or already on the GPU) or numpy memmaps (large files);
    batches are returned as uint8 images and int64/float32 targets, unnormalised.
    """

    def __init__(self, images, targets) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def _take(arr, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(arr, torch.Tensor):
            return arr[idx.to(arr.device)]
        return torch.from_numpy(np.ascontiguousarray(arr[idx.numpy()]))

    def __getitem__(self, idx: torch.Tensor):
        return self._take(self.images, idx), self._take(self.targets, idx), idx


class BatchIndexSampler(Sampler):
    """Yields index tensors, one per batch, from a seeded permutation per epoch.

    The permutation depends only on ``(seed, epoch)``, so a run resumed from an epoch checkpoint
    sees the same order an uninterrupted run would. With ``world_size > 1`` each rank takes its
    strided share of every permutation (DDP without Lightning's sampler replacement).

    Training keeps the last, shorter batch (every image is seen each epoch, as a DataLoader with
    ``shuffle=True`` does) and drops it only when it would hold a single sample, which
    BatchNorm cannot normalise. ``weights`` (one per sample) draw each epoch's samples with
    replacement in proportion to them instead (a class-balanced sampler). ``repeats`` makes an
    epoch visit each sample that many times (several random patches per image).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        weights: torch.Tensor | None = None,
        repeats: int = 1,
    ) -> None:
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        # indices for data already on a GPU go there once per epoch: one small copy per batch
        # from pageable memory would make the CPU wait for the GPU at every step
        self.device = device
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.weights = weights
        # an epoch visits every sample ``repeats`` times (patches: several crops per image)
        self.repeats = max(1, int(repeats))
        n = n * self.repeats
        self.n = n
        # training ranks get equal shares (DDP needs the same step count); eval ranks all samples
        self.per_rank = n // world_size if shuffle else len(range(rank, n, world_size))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _drops_lone_sample(self) -> bool:
        return self.shuffle and self.per_rank > 1 and self.per_rank % self.batch_size == 1

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size) - int(self._drops_lone_sample())

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            if self.weights is not None:
                order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
            else:
                order = torch.randperm(self.n, generator=g) % (self.n // self.repeats)
        else:
            order = torch.arange(self.n)
        order = order[self.rank :: self.world_size][: self.per_rank]
        if self.device is not None:
            if self.device.type == "cuda":
                order = order.pin_memory().to(self.device, non_blocking=True)
            else:
                order = order.to(self.device)
        batches = order.split(self.batch_size)
        if self._drops_lone_sample():
            batches = batches[:-1]
        yield from batches
