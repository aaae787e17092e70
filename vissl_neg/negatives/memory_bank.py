"""Index-addressed memory bank of per-sample embeddings (Wu et al. 2018, instance
discrimination): one (N, D) row per training sample, refreshed with a momentum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vissl_neg.errors import ConfigError
from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.source import NegativeSource
from vissl_neg.runtime.distributed import concat_all_gather

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MemoryBank(NegativeSource):
    """``bank`` (N, D) unit rows, ``labels`` (N,) (-1 unknown, diagnostics only).

    ``update`` sets row i to normalise(m · bank[i] + (1 − m) · feat). Storage may be
    bf16 / fp16 (1.28 M × 128 in bf16 is 328 MB); reads return float32. Both tensors are
    buffers: on the model's device and in every checkpoint.
    """

    attr = "bank"
    bank: torch.Tensor
    labels: torch.Tensor

    def __init__(self, num_items: int, dim: int, momentum: float = 0.5, dtype: torch.dtype | str = torch.float32):
        super().__init__()
        if num_items < 2:
            raise ValueError(f"a memory bank needs at least 2 items, got {num_items}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory bank momentum must be in [0, 1), got {momentum}")
        dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.momentum = momentum
        self.register_buffer("bank", F.normalize(torch.randn(num_items, dim), dim=1).to(dtype))
        self.register_buffer("labels", torch.full((num_items,), -1, dtype=torch.long))

    @property
    def num_items(self) -> int:
        return self.bank.shape[0]

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (...) -> float rows (..., D)."""
        return self.bank[indices].float()

    @torch.no_grad()
    def update(self, indices: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """indices (B,) distinct, feats (B, D)."""
        mixed = self.momentum * self.gather(indices) + (1.0 - self.momentum) * feats.detach().float()
        self.bank.index_copy_(0, indices, F.normalize(mixed, dim=1).to(self.bank.dtype))
        if labels is not None:
            self.labels.index_copy_(0, indices, labels.to(self.labels.dtype))

    def sample(self, own: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """own (B,) indices -> (B, k) rows drawn uniformly with replacement from the
        other N − 1 items (never a query's own index), on the device."""
        draw = torch.randint(self.num_items - 1, (own.shape[0], k), device=own.device, generator=generator)
        return draw + (draw >= own.unsqueeze(1)).long()

    @classmethod
    def from_config(cls, neg, dim, num_items, batch_size):
        if neg.size >= num_items:
            raise ConfigError(
                f"negatives.size={neg.size} must be below the {num_items} training images of the memory bank"
            )
        return cls(num_items, dim, neg.bank_momentum, neg.bank_dtype)

    def negatives(self, q, k, labels, indices, count):
        """Per query ``count`` rows drawn uniformly from the other images' rows."""
        return NegativeSet(q, k, self.bank, self.labels, self.sample(indices, count))

    @torch.no_grad()
    def add(self, keys, labels, indices):
        """Every rank's rows of this batch, from the key (the normalised sum of both key views)."""
        feats = keys[0] if len(keys) == 1 else F.normalize(keys[0] + keys[1], dim=1)
        self.update(concat_all_gather(indices), concat_all_gather(feats), concat_all_gather(labels))
