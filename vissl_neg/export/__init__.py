"""Release of trained backbones in timm's Hugging Face hub layout (and for torchvision)."""

from vissl_neg.export.release import backbone_state_dict, export_backbone, export_run, released_backbone

__all__ = ["backbone_state_dict", "export_backbone", "export_run", "released_backbone"]
