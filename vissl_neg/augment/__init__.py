"""kornia view pipelines applied batch-wise on the training device."""

from vissl_neg.augment.views import EvalTransform, ViewAugment

__all__ = ["EvalTransform", "ViewAugment"]
