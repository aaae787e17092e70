"""One shared encoder for ground panoramas and satellite tiles with a learnable logit scale
(Sample4Geo, Deuser et al. ICCV 2023): pooled timm features, no head, L2-normalised."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.models.encoder import build_backbone, check_input, fixed_input_size


class CrossViewModel(nn.Module):
    """``forward`` (B, 3, H, W) of either view -> (B, F) unit rows in float32;
    ``logit_scale`` is log(1/T), initialised to log(1/init_temperature)."""

    def __init__(self, backbone: nn.Module, init_temperature: float = 0.07):
        super().__init__()
        self.backbone = backbone
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x).float(), dim=1)


def build_cross_view_model(cfg, sat_size: int, pano_size: tuple[int, int]) -> CrossViewModel:
    """``cfg`` is the geo ``model`` section; a dry run on both view shapes turns an input the
    backbone cannot take into a one-line :class:`ConfigError`."""
    backbone = build_backbone(
        cfg.backbone, 3, pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file, patch_size=cfg.patch_size
    )
    hint = (
        "it takes one fixed input size, the two views differ"
        if fixed_input_size(cfg.backbone)
        else "use larger data sizes or another backbone"
    )
    for name, shape in (("satellite images", (sat_size, sat_size)), ("panoramas", tuple(pano_size))):
        check_input(backbone, cfg.backbone, (3, shape[0], shape[1]), name, hint)
    return CrossViewModel(backbone, cfg.init_temperature)
