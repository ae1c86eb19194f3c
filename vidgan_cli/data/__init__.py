"""Datasets yield ``(clip uint8 [T, H, W, 3], label int64)``; see CONTRIBUTING.md."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate


def collate_batched(batch):
    """Collate for datasets that may build a whole batch at once through ``__getitems__``.

    A dataset with ``__getitems__`` already returns ``(clips [B, ...], labels [B])``; one without it
    returns a list of samples, which are stacked as usual.
    """
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    return default_collate(batch)


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of indices that depend only on ``(seed, batch number, rank)``.

    Batch ``b`` comes from the permutation of epoch ``b // batches_per_epoch``, so a run resumed at
    batch ``b`` sees exactly the batches the uninterrupted run would have seen, and ranks draw
    disjoint slices of the same permutation (a DistributedSampler that also resumes mid-epoch).
    """

    def __init__(self, length: int, batch_size: int, *, seed: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        if length < batch_size * world_size:
            raise ValueError(f"the dataset has {length} clips, fewer than one global batch "
                             f"({batch_size} x {world_size} processes); lower trainer.batch_size")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.per_epoch = length // (batch_size * world_size)

    def __iter__(self):
        b = self.start
        while True:
            epoch, j = divmod(b, self.per_epoch)
            if j == 0 or b == self.start:
                perm = torch.randperm(self.length, generator=torch.Generator().manual_seed(
                    self.seed * 1_000_003 + epoch))
            first = (j * self.world_size + self.rank) * self.batch_size
            yield perm[first:first + self.batch_size].tolist()
            b += 1
