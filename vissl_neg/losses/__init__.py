"""The InfoNCE family of contrastive losses."""

from vissl_neg.losses.contrastive import ContrastiveLoss, DebiasedLoss, InfoNCELoss
from vissl_neg.losses.debiased import (
    debiased_clamp_thresholds,
    debiased_clamped_fraction,
    debiased_clamped_from_similarities,
    debiased_from_similarities,
    debiased_info_nce,
    tau_plus_below_half,
)
from vissl_neg.losses.false_negatives import false_negative_from_similarities, false_negative_info_nce
from vissl_neg.losses.info_nce import dual_view_info_nce, info_nce, info_nce_from_similarities, similarities
from vissl_neg.losses.symmetric import symmetric_info_nce

LOSSES = {"info_nce": InfoNCELoss, "debiased": DebiasedLoss}

__all__ = [
    "LOSSES",
    "ContrastiveLoss",
    "DebiasedLoss",
    "InfoNCELoss",
    "debiased_clamp_thresholds",
    "debiased_clamped_fraction",
    "debiased_clamped_from_similarities",
    "debiased_from_similarities",
    "debiased_info_nce",
    "dual_view_info_nce",
    "false_negative_from_similarities",
    "false_negative_info_nce",
    "info_nce",
    "info_nce_from_similarities",
    "similarities",
    "symmetric_info_nce",
    "tau_plus_below_half",
]
