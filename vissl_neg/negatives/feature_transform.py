"""Feature transformation (Zhu et al., ICCV 2021).

Positive extrapolation (harder positives), λ⁺ = 1 + Beta(a⁺, a⁺) ∈ (1, 2)::

    q̂ = λ⁺ q + (1 − λ⁺) k,   k̂ = λ⁺ k + (1 − λ⁺) q        (k detached first)

Negative interpolation (more diverse negatives), λ⁻ ~ Beta(a⁻, a⁻)::

    n̂ = λ⁻ n + (1 − λ⁻) n[perm]                            (detached)

The loss is CE([q̂·k̂, q̂·n̂]/T, 0); nothing is re-normalised (as in the reference code);
the queue is updated with the original keys.

How many λ are drawn (``draw``): ``step`` one λ⁺ for the batch and one λ⁻ for the whole
queue per step, what the reference's released command runs (``--dim_mask none``,
DTennant/CL-Visualizing-Feature-Transformation@c53d1be memory/mem_moco.py:198-200);
``sample`` one λ⁺ per query and one λ⁻ per negative (*ours*); ``dim`` one per element,
(B, D) and (M, D) (the reference's ``--dim_mask both``, mem_moco.py:195-196).
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
    """q, k (B, D); lam in (1, 2) a float, 0-dim, (B,) per query or (B, D) per element
    -> (q̂, k̂), each (B, D)."""
    k = k.detach()
    lam = _column(lam, q)
    return lam * q + (1 - lam) * k, lam * k + (1 - lam) * q


def interpolate_negatives(negatives: torch.Tensor, perm: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """negatives (K, D); perm (K,) a permutation; lam a float, (K,) per negative or a
    tensor broadcastable to (K, D) (e.g. (D,) or (K, D) per dimension) -> (K, D), detached."""
    negatives = full_precision(negatives.detach())
    lam = _column(lam, negatives)
    return (lam * negatives + (1 - lam) * negatives[perm]).detach()


DRAWS = ("step", "sample", "dim")


def lambda_shapes(draw: str, batch: int, negatives: int, dim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of λ⁺ and λ⁻ for ``draw`` (step | sample | dim): (), () | (B,), (M,) | (B, D), (M, D)."""
    if draw == "step":
        return (), ()
    if draw == "sample":
        return (batch,), (negatives,)
    if draw == "dim":
        return (batch, dim), (negatives, dim)
    raise ValueError(f"draw must be one of {', '.join(DRAWS)}, got '{draw}'")


@dataclass
class FeatureTransform(Strategy):
    """Config ``{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6, draw: step}``; an
    alpha of 0 switches that half off. ``draw`` (step | sample | dim) says how many λ are
    drawn per step: one each (the reference's run), one per query and per negative, or one
    per element."""

    pos_alpha: float = 2.0
    neg_alpha: float = 1.6
    draw: str = "step"
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    @property
    def changes_source(self) -> bool:
        return self.neg_alpha > 0

    def check(self) -> None:
        if self.pos_alpha < 0 or self.neg_alpha < 0 or self.pos_alpha + self.neg_alpha == 0:
            raise ValueError("needs pos_alpha >= 0, neg_alpha >= 0, not both 0")
        if self.draw not in DRAWS:
            raise ValueError(f"draw must be one of {', '.join(DRAWS)}, got '{self.draw}'")

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        changes = {}
        m, d = negs.source.shape
        pos_shape, neg_shape = lambda_shapes(self.draw, negs.q.shape[0], m, d)
        if self.pos_alpha > 0:
            lam = 1.0 + sample_beta(self.pos_alpha, pos_shape, negs.q.device)
            changes["q"], changes["k"] = extrapolate_positives(negs.q, negs.k, lam)
        if self.neg_alpha > 0:
            lam = sample_beta(self.neg_alpha, neg_shape, negs.source.device)
            perm = torch.randperm(m, device=negs.source.device)
            changes["source"] = interpolate_negatives(negs.source, perm, lam)
        return negs.with_(**changes)
