"""Paired views for cross-view matching (Sample4Geo), batch-wise on the device.

Geometry stays consistent within a pair: a horizontal flip applies to both images, and a
satellite rotation by k·90° (``torch.rot90``, counter-clockwise) goes with a roll of the
panorama by −k·W/4 columns, as the reference code does. Photometric changes (colour
jitter, blur or sharpen, coarse dropout) are drawn per image. The geometric part is a pure
function of explicit per-sample coefficients (``flip`` (B,) bool, ``k`` (B,) in 0..3);
:func:`sample_pair_geometry` draws them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vissl_neg.augment import ops
from vissl_neg.augment.views import Normalize


def flip_pair(pano: torch.Tensor, sat: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pano (B, C, H, W), sat (B, C, S, S), flip (B,) bool -> both flipped left-right where flip."""
    f = flip.view(-1, 1, 1, 1)
    return torch.where(f, pano.flip(-1), pano), torch.where(f, sat.flip(-1), sat)


def rotate_pair(pano: torch.Tensor, sat: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Satellite rotated by k·90° counter-clockwise, panorama rolled by −k·W/4; k (B,) in 0..3."""
    w = pano.shape[-1]
    if w % 4:
        raise ValueError(f"panorama width {w} must be divisible by 4 to roll by quarter turns")
    k = k.view(-1, 1, 1, 1)
    out_pano, out_sat = pano, sat
    for r in (1, 2, 3):
        hit = k == r
        out_sat = torch.where(hit, torch.rot90(sat, r, dims=(-2, -1)), out_sat)
        out_pano = torch.where(hit, torch.roll(pano, -r * (w // 4), dims=-1), out_pano)
    return out_pano, out_sat


def sample_pair_geometry(batch: int, flip_p: float, rotate_p: float, device=None,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> flip (B,) bool with P(flip) = flip_p; k (B,) 0 with 1 − rotate_p, else uniform in {1, 2, 3}."""
    flip = torch.rand(batch, device=device, generator=generator) < flip_p
    rotate = torch.rand(batch, device=device, generator=generator) < rotate_p
    k = torch.randint(1, 4, (batch,), device=device, generator=generator)
    return flip, torch.where(rotate, k, torch.zeros_like(k))


class CrossViewAugment(nn.Module):
    """uint8 (pano, sat) batches -> normalised float views, geometry shared within a pair.

    Per image: colour jitter (brightness, contrast, saturation), Gaussian blur (5×5, σ ∈
    [0.1, 1.5]), sharpening (PIL sharpness factor 1 + U(0.2, 0.5), the reference's
    albumentations ``Sharpen`` alpha range) and coarse dropout (one box of 2-10 % of the
    image set to 0), each with its own probability; all drawn on the device."""

    def __init__(self, flip_p: float = 0.5, rotate_p: float = 0.75, jitter: float = 0.15, jitter_p: float = 0.5,
                 blur_p: float = 0.3, sharpen_p: float = 0.3, dropout_p: float = 0.3,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.flip_p, self.rotate_p = flip_p, rotate_p
        self.jitter, self.jitter_p, self.blur_p, self.sharpen_p, self.dropout_p = jitter, jitter_p, blur_p, sharpen_p, dropout_p
        self.normalize = Normalize(list(mean), list(std), 3)

    def photometric(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """float images (B, C, H, W) in [0, 1] -> the same with this pipeline's photometric changes."""
        b, dev = x.shape[0], x.device
        factors = ops.sample_jitter(b, self.jitter, self.jitter, self.jitter, 0.0, dev, generator)
        x = ops.color_jitter(x, *factors, ops.bernoulli(b, self.jitter_p, dev, generator))
        x = ops.gaussian_blur(x, ops.uniform(b, 0.1, 1.5, dev, generator), 5,
                              ops.bernoulli(b, self.blur_p, dev, generator))
        x = ops.sharpen(x, ops.uniform(b, 1.2, 1.5, dev, generator), ops.bernoulli(b, self.sharpen_p, dev, generator))
        boxes, found = ops.sample_boxes(b, x.shape[-2], x.shape[-1], (0.02, 0.1), (0.3, 3.3), dev, generator,
                                        fallback="none")
        return ops.erase(x, boxes, found & ops.bernoulli(b, self.dropout_p, dev, generator))

    @torch.no_grad()
    def forward(self, pano: torch.Tensor, sat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip, k = sample_pair_geometry(pano.shape[0], self.flip_p, self.rotate_p, pano.device)
        pano, sat = rotate_pair(*flip_pair(pano, sat, flip), k)
        pano = self.photometric(pano.float().div_(255.0))
        sat = self.photometric(sat.float().div_(255.0))
        return self.normalize(pano), self.normalize(sat)


class EvalPairTransform(nn.Module):
    """uint8 images of either view -> float, normalised (no augmentation): for embedding."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.normalize = Normalize(list(mean), list(std), 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images.float().div_(255.0))
