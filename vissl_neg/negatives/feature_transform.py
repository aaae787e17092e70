"""Feature transformation (Zhu et al., ICCV 2021).

Positive extrapolation (harder positives), λ⁺ = 1 + Beta(a⁺, a⁺) ∈ (1, 2)::

    q̂ = λ⁺ q + (1 − λ⁺) k,   k̂ = λ⁺ k + (1 − λ⁺) q        (k detached first)

Negative interpolation (more diverse negatives), λ⁻ ~ Beta(a⁻, a⁻)::

    n̂ = λ⁻ n + (1 − λ⁻) n[perm]                            (detached)

The loss is CE([q̂·k̂, q̂·n̂]/T, 0); nothing is re-normalised (as in the reference code);
the queue is updated with the original keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.negatives.beta import sample_beta
from vissl_neg.negatives.negative_set import NegativeSet, full_precision
from vissl_neg.negatives.strategy import Strategy


def _column(lam: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    if isinstance(lam, torch.Tensor) and lam.dim() == 1 and like.dim() == 2 and lam.shape[0] == like.shape[0]:
        return lam.unsqueeze(1)
    return lam


def extrapolate_positives(
    q: torch.Tensor, k: torch.Tensor, lam: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (B, D); lam a float or (B,) in (1, 2) -> (q̂, k̂), each (B, D)."""
    k = k.detach()
    lam = _column(lam, q)
    return lam * q + (1 - lam) * k, lam * k + (1 - lam) * q


def interpolate_negatives(negatives: torch.Tensor, perm: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """negatives (K, D); perm (K,) a permutation; lam a float, (K,) per negative or a
    tensor broadcastable to (K, D) (e.g. (D,) or (K, D) per dimension) -> (K, D), detached."""
    negatives = full_precision(negatives.detach())
    lam = _column(lam, negatives)
    return (lam * negatives + (1 - lam) * negatives[perm]).detach()


@dataclass
class FeatureTransform(Strategy):
    """Config ``{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6}``; an alpha of
    0 switches that half off. ``neg_per_dim`` draws λ⁻ per dimension instead of per
    negative (*ours*: the paper allows both)."""

    pos_alpha: float = 2.0
    neg_alpha: float = 1.6
    neg_per_dim: bool = False
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    @property
    def changes_source(self) -> bool:
        return self.neg_alpha > 0

    def check(self) -> None:
        if self.pos_alpha < 0 or self.neg_alpha < 0 or self.pos_alpha + self.neg_alpha == 0:
            raise ValueError("needs pos_alpha >= 0, neg_alpha >= 0, not both 0")

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        changes = {}
        if self.pos_alpha > 0:
            lam = 1.0 + sample_beta(self.pos_alpha, (negs.q.shape[0],), negs.q.device)
            changes["q"], changes["k"] = extrapolate_positives(negs.q, negs.k, lam)
        if self.neg_alpha > 0:
            m, d = negs.source.shape
            lam = sample_beta(self.neg_alpha, (m, d) if self.neg_per_dim else (m,), negs.source.device)
            perm = torch.randperm(m, device=negs.source.device)
            changes["source"] = interpolate_negatives(negs.source, perm, lam)
        return negs.with_(**changes)
