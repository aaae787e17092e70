"""Sample4Geo's per-image photometric operations, per sample with explicit parameters, on the device.

The reference (Skyy93/Sample4Geo@498c651 sample4geo/transforms.py:30-86) builds its training
views with albumentations 1.3 (the ``quality_lower`` / ``max_holes`` API); these functions
follow albumentations 1.3.1's definitions (albumentations-team/albumentations@1.3.1, cited per
function) on float images (B, C, H, W) in [0, 1], one parameter per sample. Each operation is a
pure function of its parameters; each ``sample_*`` draws them on the images' device with torch's
generator, so nothing is read back to the host. Differences from the reference: the images stay
float between operations (albumentations rounds to uint8 after each), and JPEG compression is an
approximation (see :func:`jpeg_round_trip`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vissl_neg.augment.ops import uniform


def one_of(batch: int, probs: tuple[float, ...], device, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) long: 0 (nothing) or i + 1 with probability ``probs[i]``, never two at once
    (albumentations ``OneOf(p)`` over equally weighted children is probs = (p / n,) * n)."""
    if sum(probs) > 1.0 + 1e-9:
        raise ValueError(f"one-of probabilities must sum to at most 1, got {probs}")
    u = torch.rand(batch, device=device, generator=generator)
    choice = torch.zeros(batch, dtype=torch.long, device=device)
    low = 0.0
    for i, p in enumerate(probs):
        choice = torch.where((u >= low) & (u < low + p), torch.full_like(choice, i + 1), choice)
        low += p
    return choice


def filter2d(images: torch.Tensor, kernels: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D (correlation, BORDER_REFLECT_101) with one odd (k, k) kernel per sample
    (B, k, k), clipped to [0, 1] (uint8 saturation), where ``apply`` (B,)."""
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    pad = k // 2
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    weight = kernels.to(images.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # (B·C, 1, k, k)
    out = F.conv2d(x, weight, groups=b * c).reshape(b, c, h, w).clamp_(0, 1)
    return torch.where(apply.view(-1, 1, 1, 1), out, images)


# ---------------------------------------------------------------- Sharpen
def sharpen_kernels(alpha: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
    """albumentations 1.3.1 ``Sharpen`` (augmentations/transforms.py:2034-2042): (B,) alpha and
    lightness -> (B, 3, 3) kernels (1 − α)·identity + α·[[-1,-1,-1],[-1,8+L,-1],[-1,-1,-1]]."""
    centre = (torch.arange(9, device=alpha.device) == 4).view(1, 3, 3)
    identity = centre.to(alpha.dtype)
    effect = torch.where(centre, (8 + lightness).view(-1, 1, 1), -torch.ones_like(identity))
    a = alpha.view(-1, 1, 1)
    return (1 - a) * identity + a * effect


def sample_sharpen(batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sharpen's defaults: α ~ U(0.2, 0.5), lightness ~ U(0.5, 1.0) (transforms.py:2022, 2045-2046)."""
    return sharpen_kernels(uniform(batch, 0.2, 0.5, device, generator), uniform(batch, 0.5, 1.0, device, generator))


# ---------------------------------------------------------------- AdvancedBlur
BLUR_SIZE = 7  # the largest of AdvancedBlur's default kernel sizes 3, 5, 7


def advanced_blur_kernels(
    ksize: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    angle: torch.Tensor,
    beta: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """albumentations 1.3.1 ``AdvancedBlur`` kernels (augmentations/blur/transforms.py:362-378), a
    rotated anisotropic generalised Gaussian exp(−½ (gᵀ Σ⁻¹ g)^β) times multiplicative noise,
    normalised: ksize (B,) odd in 3..7, σx, σy, angle (radians), β (B,), noise (B, 7, 7)
    -> (B, 7, 7), zero outside each sample's ksize × ksize centre."""
    dtype, dev = sigma_x.dtype, sigma_x.device
    ax = torch.arange(BLUR_SIZE, dtype=dtype, device=dev) - BLUR_SIZE // 2
    gx, gy = ax.view(1, 1, -1), ax.view(1, -1, 1)  # meshgrid(ax, ax): x along columns, y along rows
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    vx, vy = sigma_x.view(-1, 1, 1) ** 2, sigma_y.view(-1, 1, 1) ** 2
    # Σ = U diag(σx², σy²) Uᵀ, U the rotation by ``angle``; its inverse in closed form
    s00 = cos * cos * vx + sin * sin * vy
    s11 = sin * sin * vx + cos * cos * vy
    s01 = cos * sin * (vx - vy)
    det = s00 * s11 - s01 * s01
    quad = (s11 * gx * gx - 2 * s01 * gx * gy + s00 * gy * gy) / det
    kernel = torch.exp(-0.5 * quad.pow(beta.view(-1, 1, 1))) * noise
    half = (ksize.view(-1, 1, 1) // 2).to(dtype)
    inside = (gx.abs() <= half) & (gy.abs() <= half)
    kernel = kernel * inside
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def sample_advanced_blur(batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """AdvancedBlur's defaults (blur/transforms.py:306-315, 347-359): ksize uniform in {3, 5, 7},
    σx, σy ~ U(0.2, 1.0), angle ~ U(−90°, 90°), β ~ U(0.5, 1) or U(1, 8) with probability ½
    each, noise ~ U(0.9, 1.1) per kernel entry -> (B, 7, 7) kernels."""
    ksize = 3 + 2 * torch.randint(0, 3, (batch,), device=device, generator=generator)
    sx, sy = uniform(batch, 0.2, 1.0, device, generator), uniform(batch, 0.2, 1.0, device, generator)
    angle = uniform(batch, -math.pi / 2, math.pi / 2, device, generator)
    narrow = torch.rand(batch, device=device, generator=generator) < 0.5
    beta = torch.where(narrow, uniform(batch, 0.5, 1.0, device, generator), uniform(batch, 1.0, 8.0, device, generator))
    noise = uniform((batch, BLUR_SIZE, BLUR_SIZE), 0.9, 1.1, device, generator)
    return advanced_blur_kernels(ksize, sx, sy, angle, beta, noise)


# ---------------------------------------------------------------- dropout
def grid_dropout_mask(height: int, width: int, ratio: float, device=None) -> torch.Tensor:
    """albumentations 1.3.1 ``GridDropout(ratio)`` with its other defaults (no holes numbers, no
    shift, no random offset: augmentations/dropout/grid_dropout.py:85-137): square units of
    max(2, W // 10) pixels, a hole of int(unit · ratio) pixels at each unit's top-left corner.
    -> (H, W) bool, True where dropped. The same for every image of that size."""
    unit_w = max(2, width // 10)
    unit_h = max(min(unit_w, height), 2)
    hole_w = min(max(int(unit_w * ratio), 1), unit_w - 1)
    hole_h = min(max(int(unit_h * ratio), 1), unit_h - 1)
    ys = torch.arange(height, device=device).view(-1, 1)
    xs = torch.arange(width, device=device).view(1, -1)
    return ((ys % unit_h) < hole_h) & ((xs % unit_w) < hole_w)


def coarse_dropout_limits(height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The reference's CoarseDropout: 10 to 25 holes, each side int(0.1·H) to int(0.2·H) pixels
    with H the image's height, for both sides (transforms.py:48-54, 72-78); at least 1 pixel."""
    return (10, 25), (max(1, int(0.1 * height)), max(1, int(0.2 * height)))


def sample_coarse_holes(
    batch: int,
    height: int,
    width: int,
    holes: tuple[int, int],
    side: tuple[int, int],
    device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """albumentations 1.3.1 ``CoarseDropout`` (augmentations/dropout/coarse_dropout.py:109-155):
    n ~ randint(holes) holes, each h, w ~ randint(side) (both ends included), top-left corner
    y ~ randint(0, H − h), x ~ randint(0, W − w). -> boxes (B, N, 4) (x0, y0, w, h) with
    N = holes[1], and active (B, N) bool (the first n)."""
    n_max = holes[1]
    n = torch.randint(holes[0], holes[1] + 1, (batch, 1), device=device, generator=generator)
    active = torch.arange(n_max, device=device).view(1, -1) < n
    h = torch.randint(side[0], side[1] + 1, (batch, n_max), device=device, generator=generator).clamp_(max=height)
    w = torch.randint(side[0], side[1] + 1, (batch, n_max), device=device, generator=generator).clamp_(max=width)
    u = torch.rand(batch, n_max, 2, device=device, generator=generator)
    y0 = torch.floor(u[..., 0] * (height - h + 1))
    x0 = torch.floor(u[..., 1] * (width - w + 1))
    return torch.stack([x0, y0, w.float(), h.float()], dim=-1), active


def holes_mask(boxes: torch.Tensor, active: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """boxes (B, N, 4) (x0, y0, w, h), active (B, N) -> (B, 1, H, W) bool, True inside any active
    box; computed as (B, H, N) @ (B, N, W) row/column indicators, no (B, N, H, W) tensor."""
    x0, y0, w, h = boxes.unbind(-1)
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
    rows = ((ys >= y0.unsqueeze(-1)) & (ys < (y0 + h).unsqueeze(-1)) & active.unsqueeze(-1)).float()  # (B, N, H)
    cols = ((xs >= x0.unsqueeze(-1)) & (xs < (x0 + w).unsqueeze(-1))).float()  # (B, N, W)
    return (torch.bmm(rows.transpose(1, 2), cols) > 0).unsqueeze(1)


def dropout(images: torch.Tensor, grid: torch.Tensor, holes: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Fill with 0 (the reference's fill value): the grid (H, W) where choice == 1, the holes
    (B, 1, H, W) where choice == 2 (choice (B,) from :func:`one_of`)."""
    c = choice.view(-1, 1, 1, 1)
    mask = ((c == 1) & grid) | ((c == 2) & holes)
    return images.masked_fill(mask, 0.0)


# ---------------------------------------------------------------- JPEG compression (approximation)
# The IJG (libjpeg) base tables, Annex K of the JPEG standard, in natural (row-major) order.
_LUMA_Q = (
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
)
_CHROMA_Q = (
    17,
    18,
    24,
    47,
    99,
    99,
    99,
    99,
    18,
    21,
    26,
    66,
    99,
    99,
    99,
    99,
    24,
    26,
    56,
    99,
    99,
    99,
    99,
    99,
    47,
    66,
    99,
    99,
    99,
    99,
    99,
    99,
) + (99,) * 32


def jpeg_base_tables() -> torch.Tensor:
    """(2, 8, 8) the luma and chroma base tables (made on the host: keep them as a buffer)."""
    return torch.tensor([_LUMA_Q, _CHROMA_Q], dtype=torch.float32).view(2, 8, 8)


def jpeg_tables(quality: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """libjpeg's quality scaling (jcparam.c ``jpeg_quality_scaling`` and ``jpeg_add_quant_table``
    with force_baseline): quality (B,) in 1..100, base (2, 8, 8) -> (B, 2, 8, 8) tables."""
    q = quality.clamp(1, 100).to(torch.float32)
    scale = torch.where(q < 50, torch.floor(5000 / q), 200 - 2 * q).view(-1, 1, 1, 1)
    return torch.floor((base.to(q.device, torch.float32).unsqueeze(0) * scale + 50) / 100).clamp(1, 255)


def _dct_matrix(device, dtype) -> torch.Tensor:
    n = torch.arange(8, device=device, dtype=dtype)
    m = torch.cos((2 * n.view(1, -1) + 1) * n.view(-1, 1) * math.pi / 16) * math.sqrt(2 / 8)
    m[0] = m[0] / math.sqrt(2)
    return m  # orthonormal DCT-II: coefficients = M · block · Mᵀ


def _quantise_blocks(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """plane (B, H, W), H and W multiples of 8, level-shifted; table (B, 8, 8) -> the plane after
    an 8×8 DCT, rounding to multiples of the table, and the inverse DCT."""
    b, h, w = plane.shape
    m = _dct_matrix(plane.device, plane.dtype)
    blocks = plane.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)  # (B, h/8, w/8, 8, 8)
    coef = m @ blocks @ m.t()
    t = table.to(plane.dtype).view(b, 1, 1, 8, 8)
    coef = torch.round(coef / t) * t
    return (m.t() @ coef @ m).permute(0, 1, 3, 2, 4).reshape(b, h, w)


def jpeg_round_trip(
    images: torch.Tensor, quality: torch.Tensor, apply: torch.Tensor, base: torch.Tensor | None = None
) -> torch.Tensor:
    """An approximation of encoding each image (B, 3, H, W) in [0, 1] as a baseline JPEG of
    ``quality`` (B,) and decoding it, where ``apply`` (B,): JFIF YCbCr, 4:2:0 chroma (2×2 means,
    bilinear back up), edge-replicated padding to whole blocks, 8×8 DCT quantised with libjpeg's
    tables for that quality, and 8-bit output. It reproduces JPEG's lossy steps, not libjpeg's
    exact integer DCT, chroma filters or rounding. ``base``: :func:`jpeg_base_tables` on the
    images' device (made here when None, a host-to-device copy)."""
    b, c, h, w = images.shape
    if c != 3:
        raise ValueError(f"JPEG compression needs RGB images, got {c} channels")
    x = images.to(torch.float32) * 255
    r, g, bl = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    ph, pw = -h % 16, -w % 16  # whole 16×16 MCUs (4:2:0)
    planes = F.pad(torch.stack([y, cb, cr], 1), (0, pw, 0, ph), mode="replicate")
    tables = jpeg_tables(quality, jpeg_base_tables().to(images.device) if base is None else base)
    luma = _quantise_blocks(planes[:, 0] - 128, tables[:, 0]) + 128
    chroma = F.avg_pool2d(planes[:, 1:], 2)
    chroma = torch.stack([_quantise_blocks(chroma[:, i] - 128, tables[:, 1]) + 128 for i in range(2)], 1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    y, cb, cr = luma[:, :h, :w], chroma[:, 0, :h, :w] - 128, chroma[:, 1, :h, :w] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    out = torch.round(rgb.clamp(0, 255)) / 255
    return torch.where(apply.view(-1, 1, 1, 1), out.to(images.dtype), images)


def sample_jpeg_quality(
    batch: int, low: int, high: int, device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) integer qualities, randint(low, high) with both ends included (albumentations 1.3.1
    ``ImageCompression.get_params``, augmentations/transforms.py:270-279)."""
    return torch.randint(low, high + 1, (batch,), device=device, generator=generator)
