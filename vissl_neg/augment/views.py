"""MoCo-v2 views with kornia, made batch-wise on the training device.

Input: uint8 images (B, C, H, W) on any device. Output: float views (B, C, size, size),
normalised. Every sample draws its own crop, flip, jitter and blur parameters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import kornia.augmentation as K


class Normalize(nn.Module):
    """(x - mean) / std per channel; a mean/std of another length is averaged to fit."""

    def __init__(self, mean: list[float], std: list[float], in_chans: int):
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        if len(mean_t) != in_chans:
            mean_t, std_t = mean_t.mean().repeat(in_chans), std_t.mean().repeat(in_chans)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ViewAugment(nn.Module):
    """One random view per image; call it twice for MoCo's two independent views."""

    def __init__(self, cfg, in_chans: int):
        super().__init__()
        ops: list[nn.Module] = [
            K.RandomResizedCrop((cfg.size, cfg.size), scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio)),
        ]
        if cfg.flip_p > 0:
            ops.append(K.RandomHorizontalFlip(p=cfg.flip_p))
        if cfg.jitter_p > 0:
            color = in_chans == 3
            ops.append(
                K.ColorJitter(
                    cfg.brightness,
                    cfg.contrast,
                    cfg.saturation if color else 0.0,
                    cfg.hue if color else 0.0,
                    p=cfg.jitter_p,
                )
            )
        if in_chans == 3 and cfg.grayscale_p > 0:
            ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
        if cfg.blur_p > 0:
            k = cfg.blur_kernel
            ops.append(K.RandomGaussianBlur((k, k), tuple(cfg.blur_sigma), p=cfg.blur_p))
        if cfg.erase_p > 0:
            ops.append(K.RandomErasing(p=cfg.erase_p))
        self.ops = nn.Sequential(*ops)
        self.normalize = Normalize(cfg.mean, cfg.std, in_chans)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        x = self.ops(x)
        return self.normalize(x)


class EvalTransform(nn.Module):
    """Deterministic evaluation view, normalised: the centre ``size`` x ``size`` of larger
    images (images decoded at 256 give the usual resize-256 / centre-crop-224 view),
    smaller ones resized up."""

    def __init__(self, cfg, in_chans: int):
        super().__init__()
        self.size = cfg.size
        self.normalize = Normalize(cfg.mean, cfg.std, in_chans)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        h, w = x.shape[-2:]
        if h >= self.size and w >= self.size:
            top, left = (h - self.size) // 2, (w - self.size) // 2
            x = x[..., top : top + self.size, left : left + self.size]
        else:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                          align_corners=False)
        return self.normalize(x)
