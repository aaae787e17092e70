"""MoCo's negative queue (He et al. 2020) as a device-resident ring buffer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.source import NegativeSource
from vissl_neg.runtime.distributed import concat_all_gather


class NegativeQueue(NegativeSource):
    """K keys of dimension D, oldest overwritten first.

    ``enqueue`` writes any batch size, wrapping around the end of the buffer (no
    ``K % B == 0`` assert, no dropped keys); the write pointer is a device buffer, so
    nothing syncs with the host. Keys, labels and pointer are buffers: they live on the
    model's device and travel with ``state_dict`` into checkpoints. Labels (-1 = unknown)
    ride beside the keys for diagnostics only; no loss reads them.
    """

    attr = "queue"
    keys: torch.Tensor
    labels: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.size = size
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, neg, dim, num_items, batch_size):
        return cls(neg.size, dim)

    def negatives(self, q, k, labels, indices, count):
        """Every query against all K keys (read before this step's ``add``)."""
        return NegativeSet(q, k, self.keys, self.labels)

    @torch.no_grad()
    def add(self, keys, labels, indices):
        """Enqueue every rank's keys of every key view (view by view)."""
        k = keys[0] if len(keys) == 1 else torch.cat(keys)
        labels = labels if len(keys) == 1 else torch.cat([labels] * len(keys))
        self.enqueue(concat_all_gather(k), concat_all_gather(labels))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Append (B, D) keys (detached) after the newest ones; B may exceed or not divide K."""
        b = keys.shape[0]
        if b > self.size:  # only the newest K survive a wrap-around within one batch
            keys = keys[b - self.size :]
            labels = labels[b - self.size :] if labels is not None else None
            self.ptr.add_(b - self.size)
            b = self.size
        idx = (self.ptr + torch.arange(b, device=self.ptr.device)) % self.size
        self.keys.index_copy_(0, idx, keys.detach().to(self.keys.dtype))
        if labels is None:
            self.labels.index_fill_(0, idx, -1)
        else:
            self.labels.index_copy_(0, idx, labels.to(self.labels.dtype))
        self.ptr.copy_((self.ptr + b) % self.size)
