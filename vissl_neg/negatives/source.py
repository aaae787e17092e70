"""Where a step's negatives come from: the protocol every negative source implements.

A source is an ``nn.Module`` registered in ``vissl_neg.negatives.SOURCES`` under its
``negatives.source`` name. It provides

- ``negatives(q, k, labels, indices, count) -> NegativeSet``: the step's negatives before any
  strategy: q, k (B, D) this rank's queries and (detached) keys, labels (B,) (diagnostics
  only), indices (B,) the images' dataset rows, ``count`` = ``negatives.size``;
- ``add(keys, labels, indices)``: what a step leaves behind: ``keys`` the step's key
  embeddings, one (B, D) tensor per view used as a key (two with a symmetric loss); the
  source gathers them across ranks itself;
- ``available(cfg) -> int``: how many negatives each query gets (what strategies may take);
- ``from_config(negatives_cfg, dim, num_items, batch_size)``: the source a config asks for;
- its checkpoint: its buffers, saved and restored with the model's state dict under
  ``attr`` (the attribute of the MoCo module that holds it).

A new source is one module with such a class, its line in ``SOURCES`` and a config.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.runtime.distributed import concat_all_gather, rank


class NegativeSource(nn.Module):
    attr = "source"

    @classmethod
    def from_config(cls, neg, dim: int, num_items: int, batch_size: int) -> NegativeSource:
        raise NotImplementedError

    @staticmethod
    def available(neg, batch_size: int) -> int:
        return neg.size

    def negatives(
        self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, count: int
    ) -> NegativeSet:
        raise NotImplementedError

    @torch.no_grad()
    def add(self, keys: list[torch.Tensor], labels: torch.Tensor, indices: torch.Tensor) -> None:
        pass


def other_rows(own: torch.Tensor, total: int) -> torch.Tensor:
    """own (B,) a row in [0, total) per query -> (B, total − 1) every other row, ascending."""
    j = torch.arange(total - 1, device=own.device).unsqueeze(0)
    return j + (j >= own.unsqueeze(1)).long()


class BatchKeys(NegativeSource):
    """``negatives.source: batch``: the keys of the whole global batch are the negatives, each
    query's own key its positive (SimCLR, Chen et al. 2020; MoCo v3, Chen, Xie, He 2021). Under
    DDP the keys of every rank are gathered (in rank order), so a query meets the other
    world·B − 1 keys. Nothing is stored between steps."""

    attr = "batch_keys"

    @classmethod
    def from_config(cls, neg, dim, num_items, batch_size):
        return cls()

    @staticmethod
    def available(neg, batch_size: int) -> int:
        return batch_size - 1

    def negatives(self, q, k, labels, indices, count):
        keys = concat_all_gather(k.detach())
        own = torch.arange(k.shape[0], device=k.device) + rank() * k.shape[0]
        return NegativeSet(q, k, keys, concat_all_gather(labels), other_rows(own, keys.shape[0]))
