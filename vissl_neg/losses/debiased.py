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


def _estimator(pos: torch.Tensor, neg: torch.Tensor, temperature: float, beta: float):
    """The shifted pieces of Ng, each (B,): p/T − top, e^{p/T−top}, Σ_j w_j e^{q·n_j/T−top} and
    N e^{−1/T−top}, with top the row's largest logit."""
    dtype = torch.promote_types(pos.dtype, torch.float32)
    pos = pos.to(dtype) / temperature
    neg = neg.to(dtype) / temperature
    n = neg.shape[1]
    top = torch.maximum(pos, neg.amax(dim=1)).detach()  # (B,) shift for every exponential
    e_neg = torch.exp(neg - top.unsqueeze(1))
    if beta:
        weights = torch.softmax(beta * neg, dim=1) * n  # e^{βs}/mean(e^{βs}), stable
        weighted = (weights * e_neg).sum(dim=1)
    else:
        weighted = e_neg.sum(dim=1)
    return pos - top, torch.exp(pos - top), weighted, n * torch.exp(-1.0 / temperature - top)


def _check_prior(tau_plus: float) -> None:
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")


def debiased_from_similarities(
    pos: torch.Tensor, neg: torch.Tensor, temperature: float, tau_plus: float, beta: float = 0.0
) -> torch.Tensor:
    """pos (B,), neg (B, N) cosine similarities -> mean debiased / hardness-weighted loss."""
    _check_prior(tau_plus)
    shifted_pos, e_pos, weighted, floor = _estimator(pos, neg, temperature, beta)
    n = neg.shape[1]
    ng = torch.maximum((weighted - tau_plus * n * e_pos) / (1.0 - tau_plus), floor)
    return (torch.log(e_pos + ng) - shifted_pos).mean()


def debiased_clamped_from_similarities(
    pos: torch.Tensor, neg: torch.Tensor, temperature: float, tau_plus: float, beta: float = 0.0
) -> torch.Tensor:
    """pos (B,), neg (B, N) -> () fraction of queries whose Ng sits on its clamp N e^{−1/T}
    (the estimate is at or below it), a device tensor."""
    _check_prior(tau_plus)
    with torch.no_grad():
        _, e_pos, weighted, floor = _estimator(pos.detach(), neg.detach(), temperature, beta)
        estimate = (weighted - tau_plus * neg.shape[1] * e_pos) / (1.0 - tau_plus)
        return (estimate <= floor).float().mean()


def debiased_clamp_thresholds(
    pos: torch.Tensor, neg: torch.Tensor, temperature: float, beta: float = 0.0
) -> torch.Tensor:
    """(B,) per query the τ⁺ from which its Ng is clamped: the estimate is at or below the
    floor F iff τ⁺ ≥ (W − F) / (N e^{p/T} − F), W the (weighted) negative sum."""
    with torch.no_grad():
        _, e_pos, weighted, floor = _estimator(pos.detach(), neg.detach(), temperature, beta)
        return (weighted - floor) / (neg.shape[1] * e_pos - floor).clamp_min(torch.finfo(e_pos.dtype).tiny)


def tau_plus_below_half(pos: torch.Tensor, neg: torch.Tensor, temperature: float, beta: float = 0.0) -> float:
    """The supremum of the τ⁺ that keep fewer than half of these queries clamped (any τ⁺
    below it does), capped at 1. Reads one number from the device."""
    thresholds = debiased_clamp_thresholds(pos, neg, temperature, beta).sort().values
    # clamped(τ) = #{thresholds ≤ τ} < B/2  <=>  τ < the ⌈B/2⌉-th smallest threshold
    return min(1.0, float(thresholds[(thresholds.numel() + 1) // 2 - 1]))


def debiased_clamped_fraction(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float, tau_plus: float, beta: float = 0.0
) -> float:
    """q, k (B, D); negatives (K, D) or (B, K, D) -> the fraction in [0, 1] of queries whose
    Ng (Chuang et al. 2020; Robinson et al. 2021 for β > 0) is on its clamp N e^{−1/T}."""
    pos, neg = similarities(q.detach(), k.detach(), negatives.detach())
    return float(debiased_clamped_from_similarities(pos, neg, temperature, tau_plus, beta))


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


__all__ = [
    "debiased_clamp_thresholds",
    "debiased_clamped_fraction",
    "debiased_clamped_from_similarities",
    "debiased_from_similarities",
    "debiased_info_nce",
    "tau_plus_below_half",
]
