"""One shared encoder for ground panoramas and satellite tiles with a learnable logit scale
(Sample4Geo, Deuser et al. ICCV 2023): pooled timm features, no head, L2-normalised."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.errors import ConfigError
from vissl_neg.models.encoder import build_backbone


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
    backbone = build_backbone(cfg.backbone, 3, pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file)
    backbone.eval()
    for name, shape in (("satellite", (sat_size, sat_size)), ("panorama", tuple(pano_size))):
        try:
            with torch.no_grad():
                feats = backbone(torch.zeros(1, 3, *shape))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"backbone '{cfg.backbone}' cannot embed {name} images of {shape[0]}x{shape[1]} "
                              f"({first}); use larger data sizes or another backbone") from None
        if feats.dim() != 2:
            raise ConfigError(f"backbone '{cfg.backbone}' returns features of shape {tuple(feats.shape)}, expected (B, F)")
    backbone.train()
    return CrossViewModel(backbone, cfg.init_temperature)
