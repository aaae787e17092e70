"""False negative cancellation (Huynh et al., WACV 2022): mark, per query, the negatives most
similar to the views of its own image as suspected false negatives; the loss
(``losses/false_negatives.py``) then eliminates or attracts them.

As the reference code (google-research/fnc@adf5da5 objective.py:178-211, flags run.py:261-267)
does: each negative is scored by the **max** of its similarities to the anchor's views, and
a negative is marked when it is among the row's ``top`` highest scores **and** its score is
above ``threshold`` (cosine), so a row gets 0…top marks. The reference scores 2 + 8 views of
the anchor (its own two and a support set of 8, momentum-encoder embeddings); a vissl_neg
step has two views, so the score is max(q·n, k·n) with q the detached query and k the key
(*ours*: q is the online encoder's embedding of the first view where the reference would
use the momentum encoder's). Defaults are the reference's: top 10, threshold 0.7, attract
(the only loss the reference code implements).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.losses.false_negatives import MODES
from vissl_neg.negatives.filtering import hardest_positions
from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.strategy import Strategy


def support_scores(*view_sims: torch.Tensor) -> torch.Tensor:
    """(B, K) similarities of each anchor view to the negatives -> (B, K) their max over the views."""
    scores = view_sims[0]
    for sims in view_sims[1:]:
        scores = torch.maximum(scores, sims)
    return scores


def suspect_false_negatives(scores: torch.Tensor, top: int, threshold: float) -> torch.Tensor:
    """scores (B, K) -> (B, K) bool, True where a score is among its row's ``top`` largest and
    above ``threshold`` (the reference's top-k mask times its threshold mask)."""
    positions = hardest_positions(scores, top, ordered=False)
    in_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, positions, True)
    return in_top & (scores > threshold)


@dataclass
class FalseNegatives(Strategy):
    """Config ``{name: false_negatives, top: 10, threshold: 0.7, mode: attract, start_epoch: 0}``
    (mode attract or eliminate; ``threshold: -1`` marks the top ``top`` whatever their score).
    Marks over the real negatives; synthetic ones are never marked."""

    top: int = 10
    threshold: float = 0.7
    mode: str = "attract"
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    def check(self) -> None:
        if self.top <= 0:
            raise ValueError(f"needs top > 0, got {self.top}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine in [-1, 1], got {self.threshold}")

    def limits(self) -> dict[str, int]:
        return {"top": self.top}

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        query = negs.real_similarities().detach()  # outside no_grad: the loss reuses the cached product
        scores = support_scores(query, negs.key_similarities())
        suspected = suspect_false_negatives(scores, self.top, self.threshold)
        return negs.with_(suspected=suspected, cancel=self.mode)
