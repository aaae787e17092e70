"""Per-sample image operations with explicit parameters, and the samplers that draw them.

Every operation takes float images (B, C, H, W) in [0, 1] and one parameter per sample
((B,) or (B, 4) tensors on the images' device); every sampler draws those parameters on
that device with torch's generator. Nothing reads a tensor value back to the host, so a
training step that makes its views here never waits for the GPU (kornia's augmentation
modules draw on the CPU and branch on tensor values, which synchronises on CUDA). kornia
provides the colour-space conversions and the sharpness filter; the rest are a few batched
torch ops. The photometric semantics are torchvision's (``ColorJitter``, ``RandomGrayscale``,
``GaussianBlur``, ``RandomErasing``).
"""

from __future__ import annotations

import math

import kornia.color
import kornia.enhance
import torch
import torch.nn.functional as F

# ITU-R 601-2 luma with torchvision's rounding of the red weight
LUMA = (0.2989, 0.587, 0.114)


def uniform(shape, low: float, high: float, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """U(low, high) of ``shape`` on ``device``."""
    return torch.rand(shape, device=device, generator=generator) * (high - low) + low


def bernoulli(batch: int, p: float, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) bool, True with probability ``p``."""
    return torch.rand(batch, device=device, generator=generator) < p


# ---------------------------------------------------------------- geometry
def sample_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device,
    generator: torch.Generator | None = None,
    attempts: int = 10,
    fallback: str = "centre",
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``RandomResizedCrop.get_params`` / ``RandomErasing.get_params`` for a whole
    batch: ``attempts`` candidates per sample (area ∈ scale·H·W, log-uniform aspect ratio),
    the first that fits is kept. -> boxes (B, 4) as (x0, y0, w, h) in whole pixels, float, and
    found (B,) bool. Where none fits: the centre crop with the ratio clamped into ``ratio``
    (``fallback='centre'``, RandomResizedCrop) or an empty box (``'none'``, RandomErasing)."""
    shape = (batch, attempts)
    area = uniform(shape, scale[0], scale[1], device, generator) * (height * width)
    log_r = uniform(shape, math.log(ratio[0]), math.log(ratio[1]), device, generator)
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * r))
    h = torch.round(torch.sqrt(area / r))
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)  # first True (0 when none)
    found = fits.any(dim=1)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    u = torch.rand(batch, 2, device=device, generator=generator)
    x0 = torch.floor(u[:, 0] * (width - w + 1))
    y0 = torch.floor(u[:, 1] * (height - h + 1))
    fallback_box = (0.0, 0.0, 0.0, 0.0)
    if fallback == "centre":
        in_ratio = width / height
        fw, fh = float(width), float(height)
        if in_ratio < ratio[0]:
            fh = float(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            fw = float(round(height * ratio[1]))
        fallback_box = ((width - fw) // 2, (height - fh) // 2, fw, fh)
    # (python scalars, not a tensor made from host data: that would be a copy the GPU waits for)
    boxes = torch.stack([torch.where(found, v, f) for v, f in zip((x0, y0, w, h), fallback_box)], dim=1)
    return boxes, found


def resized_crop(
    images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], flip: torch.Tensor | None = None
) -> torch.Tensor:
    """images (B, C, H, W); boxes (B, 4) (x0, y0, w, h) in pixels; flip (B,) bool -> (B, C, *size):
    each box resampled bilinearly to ``size`` (one ``grid_sample``; pixels just outside a box
    contribute at its edge), mirrored left-right where ``flip``."""
    b, _, height, width = images.shape
    x0, y0, w, h = boxes.to(images.dtype).unbind(1)
    sx, sy = w / width, h / height
    cx, cy = (2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
    grid = F.affine_grid(theta, [b, images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """boxes (B, 4) (x0, y0, w, h) -> (B, 1, H, W) bool, True inside each box."""
    x0, y0, w, h = (t.view(-1, 1, 1, 1) for t in boxes.unbind(1))
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1, 1)
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, 1, 1, -1)
    return (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)


def erase(images: torch.Tensor, boxes: torch.Tensor, apply: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Fill each image's box with ``value`` where ``apply`` (B,) (torchvision's RandomErasing)."""
    mask = box_mask(boxes, images.shape[-2], images.shape[-1]) & apply.view(-1, 1, 1, 1)
    return images.masked_fill(mask, value)


# ---------------------------------------------------------------- photometry
def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma (1-channel images are their own gray)."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio·a + (1 − ratio)·b clamped to [0, 1]; ratio (B,)."""
    r = ratio.view(-1, 1, 1, 1).to(a.dtype)
    return (r * a + (1 - r) * b).clamp_(0, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    return _blend(images, grayscale(images), factor)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (B,) turns, in [-0.5, 0.5] (torchvision's hue_factor)."""
    if images.shape[1] == 1:
        return images
    hsv = kornia.color.rgb_to_hsv(images)
    h = torch.remainder(hsv[:, :1] + shift.view(-1, 1, 1, 1).to(images.dtype) * (2 * math.pi), 2 * math.pi)
    return kornia.color.hsv_to_rgb(torch.cat([h, hsv[:, 1:]], dim=1)).clamp_(0, 1)


def color_jitter(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor,
    apply: torch.Tensor,
) -> torch.Tensor:
    """torchvision's ColorJitter with explicit per-sample factors (B,) in the fixed order
    brightness, contrast, saturation, hue (*ours*: torchvision shuffles the order per call),
    applied where ``apply`` (B,). A factor of 1 (a shift of 0) leaves an image unchanged."""
    out = adjust_hue(
        adjust_saturation(adjust_contrast(adjust_brightness(images, brightness), contrast), saturation), hue
    )
    return torch.where(apply.view(-1, 1, 1, 1), out, images)


def sample_jitter(
    batch: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """Factors U(max(0, 1 − x), 1 + x) for brightness, contrast, saturation; hue U(−hue, hue)."""

    def factor(x: float) -> torch.Tensor:
        return uniform(batch, max(0.0, 1.0 - x), 1.0 + x, device, generator)

    return factor(brightness), factor(contrast), factor(saturation), uniform(batch, -hue, hue, device, generator)


def random_grayscale(images: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Gray (replicated over the channels) where ``apply`` (B,)."""
    return torch.where(apply.view(-1, 1, 1, 1), grayscale(images).expand_as(images), images)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """sigma (B,) -> (B, size) normalised 1-D Gaussian kernels."""
    x = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - (size - 1) / 2
    k = torch.exp(-(x.unsqueeze(0) ** 2) / (2 * sigma.unsqueeze(1) ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, size: int, apply: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (B,) per image (reflect padding), where ``apply``."""
    b, c, h, w = images.shape
    k = gaussian_kernels(sigma.to(images.dtype), size).repeat_interleave(c, dim=0, output_size=b * c)
    pad = size // 2
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(b * c, 1, 1, size), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(b * c, 1, size, 1), groups=b * c)
    return torch.where(apply.view(-1, 1, 1, 1), x.view(b, c, h, w), images)


def solarize(images: torch.Tensor, apply: torch.Tensor, threshold: float = 128 / 255) -> torch.Tensor:
    """PIL's ImageOps.solarize (BYOL's solarisation; threshold 128 of 255): every value at or
    above ``threshold`` becomes 1 - value, where ``apply`` (B,)."""
    out = torch.where(images >= threshold, 1.0 - images, images)
    return torch.where(apply.view(-1, 1, 1, 1), out, images)


def sharpen(images: torch.Tensor, factor: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness (kornia.enhance.sharpness) with factor (B,): 1 keeps the
    image, above 1 sharpens; where ``apply``."""
    out = kornia.enhance.sharpness(images, factor.to(images.dtype)).clamp_(0, 1)
    return torch.where(apply.view(-1, 1, 1, 1), out, images)
