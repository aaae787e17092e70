"""Release of trained backbones for timm / torchvision."""

from vissl_neg.export.release import backbone_state_dict, export_run

__all__ = ["backbone_state_dict", "export_run"]
