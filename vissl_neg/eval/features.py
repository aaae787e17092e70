"""Frozen-backbone feature extraction for kNN and linear probes."""

from __future__ import annotations

import torch
import torch.nn as nn

from vissl_neg.data.loader import to_device


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset,
    transform: nn.Module,
    device: torch.device,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> features (N, F) float32 and labels (N,), both on ``device``, in dataset order."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        images, y, _ = to_device(dataset.__getitems__(idx), device)
        x = transform(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats.append(backbone(x).float())
        labels.append(y)
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)
