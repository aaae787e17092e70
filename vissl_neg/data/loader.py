"""Resumable data order and batch transfer to the training device."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of a permutation that depends only on (seed, epoch), so a run can restart
    at any batch of any epoch and see exactly the samples it would have seen.

    Drops the partial last batch. Under DDP every rank takes a strided share of each
    global batch (``rank::world_size``), so the global order is the same for any world size.
    ``keyed``: items are ``(index, key)`` pairs, the key a seed of (seed, epoch, index) for
    the views a loader worker draws (``ImageFolderDataset.cropped_view``).
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, keyed: bool = False
    ):
        self.keyed = keyed  # items (index, key): key seeds the item's random views in the worker
        self.num_items = num_items
        self.batch_size = batch_size  # per rank
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_items, generator=g)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def __iter__(self):
        perm = self.order(self.epoch)
        gb = self.global_batch
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = perm[b * gb : (b + 1) * gb][self.rank :: self.world_size].tolist()
            yield [(i, self.item_key(self.epoch, i)) for i in chunk] if self.keyed else chunk

    def item_key(self, epoch: int, index: int) -> int:
        """A 63-bit seed that depends only on (seed, epoch, index)."""
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 2_147_483_647 + index) % 2**63)
        return int(torch.randint(0, 2**62, (1,), generator=g))


class FixedBatchSampler(Sampler[list[int]]):
    """Yields the batches it was last given, from ``start``: an epoch whose batches were
    built elsewhere (e.g. hard-negative batches), resumable at any batch."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.start = 0

    def set_batches(self, batches: list[list[int]], start: int = 0) -> None:
        self.batches, self.start = batches, start

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self):
        yield from self.batches[self.start :]


def _default_collate_items(batch):
    if isinstance(batch, tuple):  # already a batch from __getitems__
        return batch
    return torch.utils.data.default_collate(batch)


def make_loader(
    dataset,
    batch_sampler: Sampler,
    num_workers: int,
    pin_memory: bool,
    seed: int = 0,
    prefetch_factor: int = 2,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader whose workers only fetch/decode uint8; augmentation happens on the device.
    Pinned memory only where CUDA exists (then ``to_device`` copies asynchronously).

    It draws its worker seed from its own generator: the global RNG, which drives the
    views, must not depend on when an iterator was created (exact resume mid-epoch)."""
    workers = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers} if num_workers else {}
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        collate_fn=_default_collate_items,
        generator=torch.Generator().manual_seed(seed),
        **workers,
    )


def to_device(batch, device: torch.device):
    """Move every tensor of a batch; asynchronous when the source is pinned and the target CUDA."""
    non_blocking = device.type == "cuda"
    return tuple(t.to(device, non_blocking=non_blocking) if torch.is_tensor(t) else t for t in batch)
