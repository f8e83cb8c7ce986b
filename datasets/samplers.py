"""Batch samplers: the seeded per-epoch shuffle, and its data-parallel / mid-epoch-resume split.

:class:`SeededBatchSampler` shuffles with ``numpy.random.default_rng([seed, epoch])``, so an
epoch's order depends only on the seed and the epoch (not on the number of loader workers,
nor on how many epochs ran in this process). :class:`ShardedBatchSampler` splits each of its
global batches among data-parallel ranks and can start an epoch at a given batch (resume).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import paddle

from utils.errors import UserError


class SeededBatchSampler(paddle.io.BatchSampler):
    """Batches of indices, shuffled per epoch with ``numpy.random.default_rng([seed, epoch])``.

    Args:
        num_samples: dataset length N.
        batch_size: indices per batch.
        shuffle: shuffle each epoch (False: 0..N-1 in order).
        seed: shuffling seed (None: fresh entropy each epoch).
        drop_last: drop a last incomplete batch.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool,
                 seed: int | None = None, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation ``__iter__`` yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield lists of ``batch_size`` indices (the last may be shorter unless drop_last)."""
        if self.shuffle:
            rng = np.random.default_rng(None if self.seed is None else [int(self.seed), self.epoch])
            order = rng.permutation(self.num_samples).tolist()
        else:
            order = list(range(self.num_samples))
        for start in range(0, self.num_samples, self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return (self.num_samples + self.batch_size - 1) // self.batch_size


class ShardedBatchSampler(paddle.io.BatchSampler):
    """Split each *global* batch of a ``SeededBatchSampler`` among data-parallel ranks.

    Rank ``r`` of ``world`` gets ``batch[r::world]``, so ``world`` processes together see
    exactly the batches a single process would. A last global batch with fewer images than
    ranks is dropped (every rank must run the same number of steps). ``start_batch`` skips
    the first batches of the epoch (resuming an interrupted epoch).

    Yields lists of dataset indices.
    """

    def __init__(self, global_sampler: SeededBatchSampler, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.global_sampler = global_sampler
        self.rank = rank
        self.world_size = world_size
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation (same on every rank)."""
        self.global_sampler.set_epoch(epoch)

    def _num_global_batches(self) -> int:
        n = len(self.global_sampler)
        last = self.global_sampler.num_samples - (n - 1) * self.global_sampler.batch_size
        if n and not self.global_sampler.drop_last and last < self.world_size:
            n -= 1
        return n

    def __iter__(self) -> Iterator[list[int]]:
        total = self._num_global_batches()
        for i, batch in enumerate(self.global_sampler):
            if i >= total:
                return
            if i < self.start_batch:
                continue
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Batches per epoch on this rank (before ``start_batch`` is applied)."""
        return self._num_global_batches()
