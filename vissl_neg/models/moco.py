"""MoCo v2 (He et al. 2020; Chen et al. 2020): query encoder, momentum key encoder, queue."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from vissl_neg.models.encoder import Encoder
from vissl_neg.models.momentum import momentum_update
from vissl_neg.models.shuffle_bn import (
    batch_shuffle_ddp,
    batch_shuffle_single,
    batch_unshuffle_ddp,
    convert_split_bn,
)
from vissl_neg.negatives.memory_bank import MemoryBank
from vissl_neg.negatives.queue import NegativeQueue


class MoCo(nn.Module):
    """Holds everything a MoCo run trains or carries: ``encoder_q`` (trained),
    ``encoder_k`` (EMA of it, no gradient) and the negative source: a ``queue`` of
    ``queue_size`` keys, or, with ``bank_items`` > 0, a ``bank`` with one row per training
    image (the other attribute is None).

    ``shuffle_bn``: 'ddp' (permute keys across ranks), 'split' (G-group BN + permuted
    key batch on one process; ``split_bn_layers`` counts the converted BN layers) or 'none'.
    """

    def __init__(
        self,
        encoder: Encoder,
        queue_size: int,
        shuffle_bn: str = "split",
        bn_splits: int = 8,
        bank_items: int = 0,
        bank_momentum: float = 0.5,
        bank_dtype: str = "float32",
    ):
        super().__init__()
        self.shuffle_bn = shuffle_bn
        self.split_bn_layers = convert_split_bn(encoder, bn_splits) if shuffle_bn == "split" else 0
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        dim = encoder.head.net[-1].out_features
        self.queue = NegativeQueue(queue_size, dim) if bank_items == 0 else None
        self.bank = MemoryBank(bank_items, dim, bank_momentum, bank_dtype) if bank_items else None

    @torch.no_grad()
    def update_key_encoder(self, m: float) -> None:
        momentum_update(self.encoder_q, self.encoder_k, m)

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key embeddings (B, D) of a batch of views, detached, with shuffle-BN applied."""
        if self.shuffle_bn == "ddp":
            x, unshuffle = batch_shuffle_ddp(x)
            return batch_unshuffle_ddp(self.encoder_k(x), unshuffle)
        if self.shuffle_bn == "split":
            x, unshuffle = batch_shuffle_single(x)
            return self.encoder_k(x)[unshuffle]
        return self.encoder_k(x)
