"""False negative cancellation (Huynh et al., WACV 2022): InfoNCE where some negatives of each
query are marked as suspected false negatives F (a (B, K) boolean mask) and either

- ``eliminate``d: dropped from the denominator,
  loss = −log( e^{q·k/T} / (e^{q·k/T} + Σ_{j∉F} e^{q·n_j/T}) ), or
- ``attract``ed: counted as positives,
  loss = −1/(1+|F|) · [log p(k) + Σ_{f∈F} log p(f)], every p a softmax over k and all K negatives.

Both equal InfoNCE when F is empty. k and the negatives are detached: only q gets gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vissl_neg.losses.info_nce import similarities

MODES = ("eliminate", "attract")


def false_negative_from_similarities(
    pos: torch.Tensor, sims: torch.Tensor, temperature: float, suspected: torch.Tensor, mode: str
) -> torch.Tensor:
    """pos (B,), sims (B, K) cosine similarities, suspected (B, K) bool -> mean loss."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    logits = torch.cat([pos.unsqueeze(1), sims], dim=1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    column = torch.ones_like(suspected[:, :1])
    if mode == "eliminate":
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.masked_fill(torch.cat([~column, suspected], dim=1), float("-inf")), target)
    weights = torch.cat([column, suspected], dim=1).to(logits.dtype)  # the positive and the suspected
    log_p = torch.log_softmax(logits, dim=1)
    return (-(weights * log_p).sum(dim=1) / weights.sum(dim=1)).mean()


def false_negative_info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float, suspected: torch.Tensor, mode: str
) -> torch.Tensor:
    """q, k (B, D); negatives (K, D) or (B, K, D), all L2-normalised; suspected (B, K) bool
    -> mean loss (``mode`` eliminate or attract). Gradients reach q only."""
    pos, sims = similarities(q, k.detach(), negatives.detach())
    return false_negative_from_similarities(pos, sims, temperature, suspected, mode)


__all__ = ["MODES", "false_negative_from_similarities", "false_negative_info_nce"]
