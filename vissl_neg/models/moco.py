"""MoCo (He et al. 2020; Chen et al. 2020; Chen, Xie, He 2021): query encoder (+ predictor),
momentum key encoder, negative source."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from vissl_neg.models.encoder import Encoder, QueryPath
from vissl_neg.models.momentum import momentum_update
from vissl_neg.models.shuffle_bn import (
    SplitBNImpl,
    batch_shuffle_ddp,
    batch_shuffle_single,
    batch_unshuffle_ddp,
    convert_split_bn,
)
from vissl_neg.negatives.source import NegativeSource
from vissl_neg.runtime.grad_cache import forward_in_chunks


class MoCo(nn.Module):
    """Holds everything a MoCo run trains or carries: ``encoder_q`` (trained), an optional
    ``predictor`` on the query side only (MoCo v3), ``encoder_k`` (EMA of ``encoder_q``, no
    gradient) and the negative source (a :class:`~vissl_neg.negatives.source.NegativeSource`,
    under its own attribute: ``queue``, ``bank`` or ``batch_keys``; ``source`` is whichever).

    ``shuffle_bn``: 'ddp' (permute keys across ranks), 'split' (G-group BN + permuted
    key batch on one process; ``split_bn_layers`` counts the converted BN layers) or 'none'.
    """

    def __init__(
        self,
        encoder: Encoder,
        source: NegativeSource,
        shuffle_bn: str = "split",
        bn_splits: int = 8,
        predictor: nn.Module | None = None,
        split_bn_impl: SplitBNImpl = "auto",
    ):
        super().__init__()
        self.shuffle_bn = shuffle_bn
        self.split_bn_layers = convert_split_bn(encoder, bn_splits, split_bn_impl) if shuffle_bn == "split" else 0
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = self.bank = None  # the usual sources' attributes, None unless the source is one of them
        self.source_attr = source.attr
        setattr(self, source.attr, source)
        self.predictor = predictor

    @property
    def source(self) -> NegativeSource:
        return getattr(self, self.source_attr)

    def query_module(self) -> nn.Module:
        """What embeds the queries: ``encoder_q``, or it followed by the predictor."""
        return self.encoder_q if self.predictor is None else QueryPath(self.encoder_q, self.predictor)

    @torch.no_grad()
    def update_key_encoder(self, m: float) -> None:
        momentum_update(self.encoder_q, self.encoder_k, m)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, chunk_size: int = 0) -> torch.Tensor:
        """Key embeddings (B, D) of a batch of views, detached, with shuffle-BN applied. Without
        shuffle-BN, ``chunk_size`` > 0 runs the backbone ``chunk_size`` views at a time (its
        activations freed chunk by chunk, as the query side under gradient caching) and the head
        on the whole batch (BatchNorm heads keep whole-batch statistics)."""
        if self.shuffle_bn == "ddp":
            x, unshuffle = batch_shuffle_ddp(x)
            return batch_unshuffle_ddp(self.encoder_k(x), unshuffle)
        if self.shuffle_bn == "split":
            x, unshuffle = batch_shuffle_single(x)
            return self.encoder_k(x)[unshuffle]
        if chunk_size:
            return self.encoder_k.embed_features(forward_in_chunks(self.encoder_k.backbone, x, chunk_size))
        return self.encoder_k(x)
