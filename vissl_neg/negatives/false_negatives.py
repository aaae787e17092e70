"""False negative cancellation (Huynh et al., WACV 2022): mark, per query, the ``top``
negatives most similar to a support view of its image as suspected false negatives; the
loss (``losses/false_negatives.py``) then eliminates or attracts them.

The paper scores each negative against a support set of extra views of the anchor and
aggregates the scores (mean or max). A vissl_neg step has two views per image, so the
support set is one view, the key k (the momentum encoder's embedding of the other view):
score_i = k·n_i (*ours*). With one support view the mean and the max coincide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.losses.false_negatives import MODES
from vissl_neg.negatives.filtering import hardest_positions
from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.strategy import Strategy


def suspect_false_negatives(support_sims: torch.Tensor, top: int) -> torch.Tensor:
    """support_sims (B, K) support-view·n -> (B, K) bool, True at each row's ``top`` largest."""
    positions = hardest_positions(support_sims, top, ordered=False)
    return torch.zeros_like(support_sims, dtype=torch.bool).scatter_(1, positions, True)


@dataclass
class FalseNegatives(Strategy):
    """Config ``{name: false_negatives, top: 8, mode: eliminate, start_epoch: 0}`` (mode
    eliminate or attract). Marks over the real negatives; synthetic ones are never marked."""

    top: int = 8
    mode: str = "eliminate"
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    def check(self) -> None:
        if self.top <= 0:
            raise ValueError(f"needs top > 0, got {self.top}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")

    def limits(self) -> dict[str, int]:
        return {"top": self.top}

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        return negs.with_(suspected=suspect_false_negatives(negs.key_similarities(), self.top), cancel=self.mode)
