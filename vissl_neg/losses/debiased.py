"""Debiased InfoNCE (Chuang et al. 2020) and its hardness-weighted form (Robinson et al. 2021).

With N negatives n_j, positive score p = q·k, temperature T, class prior τ⁺ and
concentration β::

    w_j = e^{β q·n_j/T} / mean_j e^{β q·n_j/T}
    Ng  = max( (Σ_j w_j e^{q·n_j/T} − τ⁺ N e^{p/T}) / (1 − τ⁺),  N e^{−1/T} )
    loss = −log( e^{p/T} / (e^{p/T} + Ng) )

β = 0 gives Chuang et al.; τ⁺ = 0 and β = 0 give InfoNCE. Every exponential is taken
relative to the row maximum, so small temperatures do not overflow.
"""

from __future__ import annotations


import torch

from vissl_neg.losses.info_nce import similarities


def debiased_from_similarities(
    pos: torch.Tensor, neg: torch.Tensor, temperature: float, tau_plus: float, beta: float = 0.0
) -> torch.Tensor:
    """pos (B,), neg (B, N) cosine similarities -> mean debiased / hardness-weighted loss."""
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
    dtype = torch.promote_types(pos.dtype, torch.float32)
    pos = pos.to(dtype) / temperature
    neg = neg.to(dtype) / temperature
    n = neg.shape[1]
    top = torch.maximum(pos, neg.amax(dim=1)).detach()  # (B,) shift for every exponential
    e_pos = torch.exp(pos - top)
    e_neg = torch.exp(neg - top.unsqueeze(1))
    if beta:
        weights = torch.softmax(beta * neg, dim=1) * n  # e^{βs}/mean(e^{βs}), stable
        weighted = (weights * e_neg).sum(dim=1)
    else:
        weighted = e_neg.sum(dim=1)
    floor = n * torch.exp(-1.0 / temperature - top)
    ng = torch.maximum((weighted - tau_plus * n * e_pos) / (1.0 - tau_plus), floor)
    return (torch.log(e_pos + ng) - (pos - top)).mean()


def debiased_info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    tau_plus: float,
    beta: float = 0.0,
) -> torch.Tensor:
    """q, k (B, D); negatives (K, D) or (B, K, D), all L2-normalised -> mean loss.
    Chuang et al. 2020 at β = 0; Robinson et al. 2021 for β > 0."""
    pos, neg = similarities(q, k, negatives)
    return debiased_from_similarities(pos, neg, temperature, tau_plus, beta)


__all__ = ["debiased_from_similarities", "debiased_info_nce"]
