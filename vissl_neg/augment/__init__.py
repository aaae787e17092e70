"""View pipelines applied batch-wise on the training device: per-sample operations with
explicit parameters drawn there (``ops``), kornia for the colour conversions."""

from vissl_neg.augment.views import EvalTransform, ViewAugment, second_view

__all__ = ["EvalTransform", "ViewAugment", "second_view"]
