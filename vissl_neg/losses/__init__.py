"""The InfoNCE family of contrastive losses."""

from vissl_neg.losses.info_nce import info_nce, info_nce_from_similarities, similarities

__all__ = ["info_nce", "info_nce_from_similarities", "similarities"]
