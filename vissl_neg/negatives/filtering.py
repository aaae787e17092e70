"""Hard-negative filtering (Hoang et al. 2025): keep, per query, only the negatives most
similar to it (a top-k or a top fraction by cosine) and drop the rest from the denominator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.losses.info_nce import similarities
from vissl_neg.negatives.negative_set import NegativeSet, take
from vissl_neg.negatives.strategy import Strategy


def hardest_positions(sims: torch.Tensor, k: int, ordered: bool = True) -> torch.Tensor:
    """sims (B, K) -> positions (B, k) of the k largest per row, most similar first
    (in no particular order with ``ordered=False``, which is faster)."""
    if not 0 < k <= sims.shape[1]:
        raise ValueError(f"cannot keep {k} of {sims.shape[1]} negatives")
    return sims.detach().topk(k, dim=1, sorted=ordered).indices


def hardest_negatives(q: torch.Tensor, negatives: torch.Tensor, k: int) -> torch.Tensor:
    """q (B, D); negatives (K, D) or (B, K, D) -> (B, k, D), most similar to q first."""
    _, sims = similarities(q.detach(), q.detach(), negatives)
    return take(negatives, hardest_positions(sims, k))


@dataclass
class Filter(Strategy):
    """Config ``{name: filter, keep: 4096}`` or ``{name: filter, fraction: 0.25}``."""

    keep: int = 0
    fraction: float = 0.0
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    def check(self) -> None:
        if (self.keep > 0) == (self.fraction > 0):
            raise ValueError("set exactly one of 'keep' (> 0) and 'fraction' (in (0, 1])")
        if self.keep < 0 or not 0.0 <= self.fraction <= 1.0:
            raise ValueError("'keep' must be > 0 and 'fraction' in (0, 1]")

    def limits(self) -> dict[str, int]:
        return {"keep": self.keep} if self.keep else {}

    def kept(self, available: int) -> int:
        return self.count(available)

    def count(self, available: int) -> int:
        k = self.keep if self.keep else round(self.fraction * available)
        return max(1, min(k, available))

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        sims = negs.real_similarities()
        positions = hardest_positions(sims, self.count(sims.shape[1]), ordered=False)
        return negs.restrict(positions)
