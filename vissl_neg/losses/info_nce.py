"""InfoNCE with a temperature (Oord et al. 2018; MoCo, He et al. 2020).

logits_i = [q_i·k_i, q_i·n_1, …, q_i·n_K] / T,   loss = mean_i CE(logits_i, 0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarities(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (B, D); negatives (K, D) shared or (B, K, D) per query -> pos (B,), neg (B, K)."""
    pos = (q * k).sum(dim=1)
    if negatives.dim() == 2:
        neg = q @ negatives.t()
    elif negatives.dim() == 3:
        neg = torch.einsum("bd,bkd->bk", q, negatives)
    else:
        raise ValueError(f"negatives must be (K, D) or (B, K, D), got shape {tuple(negatives.shape)}")
    return pos, neg


def info_nce_from_similarities(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """pos (B,), neg (B, K) cosine similarities -> mean InfoNCE with the positive at index 0."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of queries q (B, D) against positives k (B, D) and negatives (K, D) or (B, K, D).
    Inputs are expected L2-normalised; gradients flow into whatever is not detached."""
    pos, neg = similarities(q, k, negatives)
    return info_nce_from_similarities(pos, neg, temperature)


def dual_view_info_nce(
    q1: torch.Tensor, k1: torch.Tensor, q2: torch.Tensor, k2: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Dual-view (symmetrised) InfoNCE (Hoang et al. 2025; MoCo v3's symmetric loss):
    ``(info_nce(q1, k2) + info_nce(q2, k1)) / 2``, each view's query against the other
    view's key. q1, k1, q2, k2 (B, D); negatives (K, D) or (B, K, D)."""
    return 0.5 * (info_nce(q1, k2, negatives, temperature) + info_nce(q2, k1, negatives, temperature))
