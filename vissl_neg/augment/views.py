"""MoCo-v2 views, made batch-wise on the training device.

Input: uint8 images (B, C, H, W) on any device. Output: float views (B, C, size, size),
normalised. Every sample draws its own crop, flip, jitter and blur parameters.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from vissl_neg.augment import ops


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


def second_view(cfg):
    """The augment section of the second view: ``cfg`` with its ``view2`` values over it."""
    view2 = getattr(cfg, "view2", None)
    return dataclasses.replace(cfg, view2={}, **view2) if view2 else cfg


class ViewAugment(nn.Module):
    """One random view per image; call it twice for MoCo's two independent views.

    MoCo v2's pipeline (random resized crop, flip, colour jitter, grayscale, Gaussian blur;
    optional solarisation and erasing), every parameter drawn per sample on the images' device by the
    samplers of :mod:`vissl_neg.augment.ops`, so no step waits for the host."""

    def __init__(self, cfg, in_chans: int):
        super().__init__()
        self.cfg = cfg
        self.color = in_chans == 3
        self.normalize = Normalize(cfg.mean, cfg.std, in_chans)

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, cropped: bool = False
    ) -> torch.Tensor:
        """``cropped``: the images are views already cut and resized to ``size`` (in the loader
        workers, ``data.crops: image``); only the flip and what follows are applied here."""
        cfg, dev, b = self.cfg, images.device, images.shape[0]
        x = images.float().div_(255.0)
        if cropped:
            flip = ops.bernoulli(b, cfg.flip_p, dev, generator).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        else:
            boxes, _ = ops.sample_boxes(
                b, x.shape[-2], x.shape[-1], tuple(cfg.crop_scale), tuple(cfg.crop_ratio), dev, generator
            )
            x = ops.resized_crop(x, boxes, (cfg.size, cfg.size), ops.bernoulli(b, cfg.flip_p, dev, generator))
        if cfg.jitter_p > 0:
            factors = ops.sample_jitter(
                b,
                cfg.brightness,
                cfg.contrast,
                cfg.saturation if self.color else 0.0,
                cfg.hue if self.color else 0.0,
                dev,
                generator,
            )
            x = ops.color_jitter(x, *factors, ops.bernoulli(b, cfg.jitter_p, dev, generator))
        if self.color and cfg.grayscale_p > 0:
            x = ops.random_grayscale(x, ops.bernoulli(b, cfg.grayscale_p, dev, generator))
        if cfg.blur_p > 0:
            sigma = ops.uniform(b, cfg.blur_sigma[0], cfg.blur_sigma[1], dev, generator)
            x = ops.gaussian_blur(x, sigma, cfg.blur_kernel, ops.bernoulli(b, cfg.blur_p, dev, generator))
        if getattr(cfg, "solarize_p", 0.0) > 0:
            x = ops.solarize(x, ops.bernoulli(b, cfg.solarize_p, dev, generator))
        if cfg.erase_p > 0:
            boxes, found = ops.sample_boxes(
                b, cfg.size, cfg.size, (0.02, 0.33), (0.3, 3.3), dev, generator, fallback="none"
            )
            x = ops.erase(x, boxes, found & ops.bernoulli(b, cfg.erase_p, dev, generator))
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
            x = nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return self.normalize(x)
