"""Paired views for cross-view matching (Sample4Geo), batch-wise on the device.

Geometry stays consistent within a pair: a horizontal flip applies to both images, and a
satellite rotation by k·90° (``torch.rot90``, counter-clockwise) goes with a roll of the
panorama by −k·W/4 columns, as the reference code does. Photometric changes are drawn per
image, in the reference's order and with its settings (Skyy93/Sample4Geo@498c651
sample4geo/transforms.py:38-57, 62-82): JPEG compression, colour jitter, one of blur or
sharpen, one of grid or coarse dropout (``augment/sample4geo_ops.py``). The geometric part is
a pure function of explicit per-sample coefficients (``flip`` (B,) bool, ``k`` (B,) in 0..3);
:func:`sample_pair_geometry` draws them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vissl_neg.augment import ops
from vissl_neg.augment import sample4geo_ops as s4g
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
    out_pano = pano
    for r in (1, 2, 3):
        out_pano = torch.where(k == r, torch.roll(pano, -r * (w // 4), dims=-1), out_pano)
    return out_pano, rotate90(sat, k)


def sample_pair_geometry(
    batch: int, flip_p: float, rotate_p: float, device=None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> flip (B,) bool with P(flip) = flip_p; k (B,) 0 with 1 − rotate_p, else uniform in {1, 2, 3}."""
    flip = torch.rand(batch, device=device, generator=generator) < flip_p
    rotate = torch.rand(batch, device=device, generator=generator) < rotate_p
    k = torch.randint(1, 4, (batch,), device=device, generator=generator)
    return flip, torch.where(rotate, k, torch.zeros_like(k))


def rotate90(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """images (B, C, S, S) each turned by k·90° counter-clockwise (``torch.rot90``), k (B,) in 0..3."""
    k = k.view(-1, 1, 1, 1)
    out = images
    for r in (1, 2, 3):
        out = torch.where(k == r, torch.rot90(images, r, dims=(-2, -1)), out)
    return out


def sample_rotate90(batch: int, p: float, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """albumentations ``RandomRotate90(p)``: with probability p, k uniform in {0, 1, 2, 3}
    (0 included), else 0 -> k (B,) long."""
    apply = torch.rand(batch, device=device, generator=generator) < p
    k = torch.randint(0, 4, (batch,), device=device, generator=generator)
    return torch.where(apply, k, torch.zeros_like(k))


class CrossViewAugment(nn.Module):
    """uint8 (pano, sat) batches -> normalised float views, geometry shared within a pair.

    Per image, each step with its own probability (the reference's defaults): JPEG compression
    of quality 90-100 (p 0.5; an approximation, see ``sample4geo_ops.jpeg_round_trip``), colour
    jitter of brightness, contrast, saturation 0.15 and hue 0.15 (p 0.5), one of AdvancedBlur
    (p ``blur_p``) or Sharpen (p ``sharpen_p``), one of GridDropout (ratio 0.4 on the
    satellite, 0.5 on the panorama; p ``grid_dropout_p``) or CoarseDropout (10-25 holes of
    10-20 % of the image height; p ``coarse_dropout_p``); all drawn on the device.

    ``sat_rotate90_p``: the satellite alone turned by k·90°, k uniform in {0, 1, 2, 3}, after
    its photometric changes (University-1652's ``RandomRotate90(p=1.0)``, university.py:281);
    0 (the default) draws nothing. ``pano_grid_ratio``: GridDropout's ratio on the ground view
    (0.5 for panoramas, transforms.py:71; University-1652's drone view uses 0.4,
    university.py:294)."""

    GRID_RATIO = {"sat": 0.4, "pano": 0.5}  # transforms.py:47 and :71

    def __init__(
        self,
        flip_p: float = 0.5,
        rotate_p: float = 0.75,
        jpeg_p: float = 0.5,
        jpeg_quality: tuple[int, int] = (90, 100),
        jitter: float = 0.15,
        hue: float = 0.15,
        jitter_p: float = 0.5,
        blur_p: float = 0.15,
        sharpen_p: float = 0.15,
        grid_dropout_p: float = 0.15,
        coarse_dropout_p: float = 0.15,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        sat_rotate90_p: float = 0.0,
        pano_grid_ratio: float = GRID_RATIO["pano"],
    ):
        super().__init__()
        self.flip_p, self.rotate_p, self.sat_rotate90_p = flip_p, rotate_p, sat_rotate90_p
        self.grid_ratio = {"sat": self.GRID_RATIO["sat"], "pano": pano_grid_ratio}
        self.jpeg_p, self.jpeg_quality = jpeg_p, (int(jpeg_quality[0]), int(jpeg_quality[1]))
        self.jitter, self.hue, self.jitter_p = jitter, hue, jitter_p
        self.filter_p = (blur_p, sharpen_p)
        self.dropout_p = (grid_dropout_p, coarse_dropout_p)
        self.normalize = Normalize(list(mean), list(std), 3)
        self.register_buffer("jpeg_base", s4g.jpeg_base_tables(), persistent=False)

    def photometric(self, x: torch.Tensor, view: str, generator: torch.Generator | None = None) -> torch.Tensor:
        """float images (B, C, H, W) in [0, 1] of ``view`` (pano | sat) -> the same with this
        pipeline's photometric changes."""
        b, dev = x.shape[0], x.device
        h, w = x.shape[-2:]
        if self.jpeg_p > 0:
            quality = s4g.sample_jpeg_quality(b, *self.jpeg_quality, dev, generator)
            x = s4g.jpeg_round_trip(x, quality, ops.bernoulli(b, self.jpeg_p, dev, generator), self.jpeg_base)
        factors = ops.sample_jitter(b, self.jitter, self.jitter, self.jitter, self.hue, dev, generator)
        x = ops.color_jitter(x, *factors, ops.bernoulli(b, self.jitter_p, dev, generator))
        if sum(self.filter_p) > 0:
            choice = s4g.one_of(b, self.filter_p, dev, generator)
            x = s4g.filter2d(x, s4g.sample_advanced_blur(b, dev, generator), choice == 1)
            x = s4g.filter2d(x, s4g.sample_sharpen(b, dev, generator), choice == 2)
        if sum(self.dropout_p) > 0:
            choice = s4g.one_of(b, self.dropout_p, dev, generator)
            grid = s4g.grid_dropout_mask(h, w, self.grid_ratio[view], dev)
            boxes, active = s4g.sample_coarse_holes(b, h, w, *s4g.coarse_dropout_limits(h), dev, generator)
            x = s4g.dropout(x, grid, s4g.holes_mask(boxes, active, h, w), choice)
        return x

    @torch.no_grad()
    def forward(self, pano: torch.Tensor, sat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip, k = sample_pair_geometry(pano.shape[0], self.flip_p, self.rotate_p, pano.device)
        pano, sat = flip_pair(pano, sat, flip)
        if self.rotate_p > 0:  # k is all 0 otherwise (and a drone view's width need not divide by 4)
            pano, sat = rotate_pair(pano, sat, k)
        pano = self.photometric(pano.float().div_(255.0), "pano")
        sat = self.photometric(sat.float().div_(255.0), "sat")
        if self.sat_rotate90_p > 0:
            sat = rotate90(sat, sample_rotate90(sat.shape[0], self.sat_rotate90_p, sat.device))
        return self.normalize(pano), self.normalize(sat)


class EvalPairTransform(nn.Module):
    """uint8 images of either view -> float, normalised (no augmentation): for embedding."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.normalize = Normalize(list(mean), list(std), 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images.float().div_(255.0))
