"""timm backbone + MoCo-v2 MLP head; the query/key encoder of every method here."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.errors import ConfigError


def apply_small_stem(model: nn.Module) -> nn.Module:
    """Stride 1 in the first convolution and no stem max-pool, for 28x28/32x32 inputs.

    Only strides and pooling change, never parameter shapes, so the weights still load
    into the unmodified timm / torchvision model; apply this function again after loading
    to get the same features.
    """
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ConfigError("model.small_stem=true needs a convolutional backbone")
    first_conv.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    return model


def build_backbone(name: str, in_chans: int, small_stem: bool = False, pretrained: bool = False,
                   pretrained_file: str = "") -> nn.Module:
    """A timm model by name with its classifier removed: (B, C, H, W) -> (B, F) pooled features.
    ``pretrained`` loads timm's weights (a download), ``pretrained_file`` a local weights file."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown timm model '{name}' in model.backbone{hint}")
    kwargs = {}
    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise ConfigError(f"model.pretrained_file '{pretrained_file}' does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
    try:
        model = timm.create_model(name, pretrained=bool(pretrained or pretrained_file), num_classes=0,
                                  in_chans=in_chans, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # no network, a wrong or damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot load pretrained weights for '{name}' ({first}); "
                          "use model.pretrained_file=PATH or model.pretrained=false") from None
    if small_stem:
        apply_small_stem(model)
    return model


class ProjectionHead(nn.Module):
    """MoCo-v2 MLP head: Linear(F, H) -> ReLU -> Linear(H, D) (Chen et al. 2020)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """backbone + head; ``forward`` returns L2-normalised embeddings (B, D)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)).float(), dim=1)


def build_encoder(cfg, in_chans: int, image_size: int) -> Encoder:
    """``cfg`` is the ``model`` section. A dry run on one tiny batch turns shape errors
    (an input too small for the backbone) into a one-line :class:`ConfigError`."""
    backbone = build_backbone(cfg.backbone, in_chans, cfg.small_stem)
    try:
        with torch.no_grad():
            backbone.eval()
            feats = backbone(torch.zeros(2, in_chans, image_size, image_size))
            backbone.train()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"backbone '{cfg.backbone}' cannot embed {in_chans}x{image_size}x{image_size} inputs ({first}); "
            "try model.small_stem=true, a larger augment.size or another backbone"
        ) from None
    if feats.dim() != 2:
        raise ConfigError(f"backbone '{cfg.backbone}' returns features of shape {tuple(feats.shape)}, expected (B, F)")
    head = ProjectionHead(feats.shape[1], cfg.head_hidden, cfg.dim)
    return Encoder(backbone, head)
