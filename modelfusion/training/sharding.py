"""How the training engine splits each batch across torchrun processes, so N processes train the
weights of one.

Every process draws the same seeded permutation of the rows each epoch and cuts it into the
batches a single process would take. Process ``r`` of ``world`` takes rows ``r, r + world, ...``
of each batch. Full batches split evenly (the batch size must divide by ``world``); the last one
may not, and its rows may be fewer than the processes. :func:`share_weight` scales each process's
mean loss so that DDP's average of gradients is the gradient of the whole batch's mean loss. A
process with no row in the last batch gets a stand-in row with weight 0, so every process makes
the same number of steps (DDP's collectives stay in step).

PyTorch's ``DistributedSampler`` pads the data to a multiple of ``world`` by repeating rows, which
makes 2 processes train slightly different weights than 1 whenever the rows do not divide.

Examples
--------
>>> sampler = BatchShares(n_rows=899, batch_size=64, world=2, rank=1, seed=0)
>>> sampler.set_epoch(1)
>>> [len(b) for b in sampler][-1], share_weight(899, 64, step=15, world=2, rank=1)
(1, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class BatchShares(Sampler[list[int]]):
    """A batch sampler: this process's share of every batch of one seeded shuffle per epoch."""

    def __init__(self, n_rows: int, batch_size: int, *, world: int = 1, rank: int = 0, seed: int = 0):
        self.n_rows, self.batch_size, self.world, self.rank, self.seed = n_rows, batch_size, world, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for ``epoch`` (the same order in every process)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n_rows // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n_rows, generator=generator).tolist()
        for start in range(0, self.n_rows, self.batch_size):
            batch = order[start : start + self.batch_size]
            share = batch[self.rank :: self.world]
            yield share or batch[:1]  # no row of its own: a stand-in, weighted 0 by share_weight


def _batch_rows(n_rows: int, batch_size: int, step: int) -> int:
    return min(batch_size, n_rows - (step - 1) * batch_size)


def share_rows(n_rows: int, batch_size: int, *, step: int, world: int, rank: int) -> int:
    """How many real rows this process holds at ``step`` (1-based; 0 for a stand-in)."""
    return len(range(rank, _batch_rows(n_rows, batch_size, step), world))


def share_weight(n_rows: int, batch_size: int, *, step: int, world: int, rank: int) -> float:
    """The factor on this process's mean loss at ``step`` (1-based): its rows x world / the batch's rows."""
    if world == 1:
        return 1.0
    mine = share_rows(n_rows, batch_size, step=step, world=world, rank=rank)
    return mine * world / _batch_rows(n_rows, batch_size, step)
