"""Batch samplers for data-parallel training and mid-epoch resume."""
from __future__ import annotations

from collections.abc import Iterator

import paddle

from datasets.dataset import SeededBatchSampler


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
