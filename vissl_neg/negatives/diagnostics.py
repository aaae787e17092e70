"""What the negatives of a step look like: are the hard ones informative, or the same class?"""

from __future__ import annotations

import torch

from vissl_neg.negatives.filtering import hardest_positions


def _per_query(labels: torch.Tensor, batch: int) -> torch.Tensor:
    return labels.unsqueeze(0).expand(batch, -1) if labels.dim() == 1 else labels


def false_negative_rate(sims: torch.Tensor, labels: torch.Tensor, query_labels: torch.Tensor, top: int) -> torch.Tensor:
    """Share of same-class samples among each query's ``top`` hardest negatives.
    sims (B, K); labels (K,) or (B, K) with -1 = unknown (ignored); query_labels (B,) -> ()."""
    positions = hardest_positions(sims, min(top, sims.shape[1]))
    hard = _per_query(labels, sims.shape[0]).gather(1, positions)
    known = hard >= 0
    same = (hard == query_labels.unsqueeze(1)) & known
    return same.sum() / known.sum().clamp_min(1)


def same_class_rate(labels: torch.Tensor, query_labels: torch.Tensor) -> torch.Tensor:
    """Share of same-class samples among all negatives (the chance level of the above)."""
    labels = _per_query(labels, query_labels.shape[0])
    known = labels >= 0
    return ((labels == query_labels.unsqueeze(1)) & known).sum() / known.sum().clamp_min(1)


def synthetic_harder_fraction(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """Fraction of synthetic negatives scoring above the query's hardest real one.
    real (B, K), synthetic (B, S) similarities -> ()."""
    return (synthetic > real.amax(dim=1, keepdim=True)).float().mean()
