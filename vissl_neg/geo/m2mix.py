"""Geodesic multi-modal mixup, m²-mix (Oh et al., *Geodesic Multi-Modal Mixup for Robust
Fine-Tuning*, NeurIPS 2023), for the cross-view trainer: ground panoramas g and satellite
tiles a (B, D), unit rows, row i of each the same place, take the paper's image and text.

The reference code (changdaeoh/multimodal-mixup, ``main.py``, ``--mmmix``) per step:

    λ ~ Beta(α, α)                              one draw for the whole batch
    m_j = slerp(g_j, a_j, λ)                    pair j's own two embeddings mixed
    L¹_ii = g_i·a_i,  L¹_ij = g_i·m_j  (j ≠ i)   ground -> satellite
    L²_ii = a_i·g_i,  L²_ij = a_i·m_j  (j ≠ i)   satellite -> ground
    loss_mix = CE(L¹/τ₂, I) + CE(L²/τ₂, I)      each a mean over rows, the directions summed
    loss = ½ [CE(L/τ, I) + CE(Lᵀ/τ, I)] + w/(epoch + 1) · loss_mix

The mixes replace the real negatives of the mix term (its positive stays the real pair) and
are not detached: its gradient reaches g and a through the anchors and through the mixes.
τ₂ is a fixed temperature of the mix term (``--sep_scale``, τ₂ = 0.07; without it the main
loss's temperature), the weight w decays as 1/(epoch + 1) (``--schedule``). Defaults of the
reference's script: α = 0.5, w ∈ {0.05, 0.01, 0.005, 0.001} (``main.py``: 0.01).

*Ours*: g plays the image (λ → 1 gives g, λ → 0 gives a; Beta(α, α) is symmetric, so the
mixes' distribution does not depend on the choice); slerp is vissl_neg's robust form; the
decay counts epochs from the first mixing epoch, 1/(epoch − start_epoch + 1). The mix term
has its own label smoothing (``mixup.label_smoothing``), 0 by default: the reference's
targets there are hard (loss.py:47-49, 62-68) whatever the main loss uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vissl_neg.losses.symmetric import symmetric_info_nce
from vissl_neg.negatives.beta import sample_beta
from vissl_neg.negatives.geodesic import slerp
from vissl_neg.negatives.negative_set import full_precision


def m2_mix_negatives(f_pano: torch.Tensor, f_sat: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """(B, D) unit rows: slerp(g_i, a_i, λ), the mix of each pair's ground and satellite
    embedding (g at λ = 1, a at λ = 0); ``lam`` a float, a 0-dim or a (B,) tensor. Float32."""
    return slerp(full_precision(f_pano), full_precision(f_sat), lam)


def m2mix_info_nce(
    f_pano: torch.Tensor,
    f_sat: torch.Tensor,
    lam: float | torch.Tensor,
    logit_scale: torch.Tensor | float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The mix term CE(L¹·e^s, I) + CE(L²·e^s, I): each direction's positive is the real
    pair, its negatives the other pairs' mixes m_j; ``logit_scale`` s = log(1/τ₂)."""
    g, a = full_precision(f_pano), full_precision(f_sat)
    mixes = m2_mix_negatives(g, a, lam)
    pos = (g * a).sum(dim=1)
    scale = logit_scale.to(g.dtype).exp() if torch.is_tensor(logit_scale) else math.exp(logit_scale)  # no host copy
    target = torch.arange(g.shape[0], device=g.device)
    loss = g.new_zeros(())
    for anchor in (g, a):
        logits = torch.diagonal_scatter(anchor @ mixes.t(), pos)
        loss = loss + F.cross_entropy(scale * logits, target, label_smoothing=label_smoothing)
    return loss


def m2mix_symmetric_info_nce(
    f_pano: torch.Tensor,
    f_sat: torch.Tensor,
    logit_scale: torch.Tensor | float,
    lam: float | torch.Tensor,
    weight: float,
    mix_logit_scale: torch.Tensor | float | None = None,
    label_smoothing: float = 0.0,
    mix_label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Symmetric InfoNCE (``label_smoothing``) + ``weight`` · the mix term
    (``mix_label_smoothing``, hard targets by default as in the reference); the mix term's
    log-scale is ``mix_logit_scale`` (log(1/τ₂)), or ``logit_scale`` when None."""
    mix_scale = logit_scale if mix_logit_scale is None else mix_logit_scale
    return symmetric_info_nce(f_pano, f_sat, logit_scale, label_smoothing) + weight * m2mix_info_nce(
        f_pano, f_sat, lam, mix_scale, mix_label_smoothing
    )


def m2mix_weight(weight: float, epoch: int, start_epoch: int = 0, epoch_decay: bool = True) -> float:
    """The mix term's weight in ``epoch``: 0 before ``start_epoch``, then ``weight``, divided
    by (epoch − start_epoch + 1) with ``epoch_decay`` (the reference's 1/(epoch + 1))."""
    if epoch < start_epoch:
        return 0.0
    return weight / (epoch - start_epoch + 1) if epoch_decay else weight


def sample_m2mix_lambda(alpha: float, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One λ ~ Beta(α, α) for the step (0-dim, on ``device``, no host sync); ``generator``
    is used for α = 1 only (see :func:`sample_beta`)."""
    return sample_beta(alpha, (), device=device, generator=generator)
