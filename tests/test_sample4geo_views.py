"""Sample4Geo's per-image view operations against transcriptions of albumentations 1.3.1 (the
version the reference's transforms.py is written for; albumentations-team/albumentations tag
1.3.1, e3b47b3) and, for JPEG, against libjpeg through PIL; the one-of draws; the pipeline's
defaults against the reference's transforms (Skyy93/Sample4Geo@498c651 sample4geo/transforms.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from vissl_neg.augment import sample4geo_ops as s4g
from vissl_neg.augment.cross_view import CrossViewAugment
from vissl_neg.config import load_config
from vissl_neg.errors import ConfigError

import helpers  # noqa: F401  (pins torch to one CPU thread)
from host_sync import host_reads


def _filter2d_reference(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D(img, -1, kernel) on a float (H, W, C) image: correlation with the kernel
    centred, BORDER_REFLECT_101 (numpy's 'reflect'), then uint8 saturation as a clip to [0, 1]."""
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")
    out = np.zeros_like(img)
    for dy in range(k):
        for dx in range(k):
            out += kernel[dy, dx] * padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return np.clip(out, 0, 1)


def _sharpening_matrix_reference(alpha: float, lightness: float) -> np.ndarray:
    """albumentations 1.3.1 augmentations/transforms.py:2034-2042 (Sharpen)."""
    matrix_nochange = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64)
    matrix_effect = np.array([[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]], dtype=np.float64)
    return (1 - alpha) * matrix_nochange + alpha * matrix_effect


def test_sharpen_matches_albumentations():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 9, 11, generator=g, dtype=torch.float64)
    alpha, lightness = (
        torch.tensor([0.2, 0.35, 0.5], dtype=torch.float64),
        torch.tensor([0.5, 0.8, 1.0], dtype=torch.float64),
    )
    kernels = s4g.sharpen_kernels(alpha, lightness)
    out = s4g.filter2d(images, kernels, torch.tensor([True, True, False]))
    for i in range(2):
        m = _sharpening_matrix_reference(float(alpha[i]), float(lightness[i]))
        np.testing.assert_allclose(kernels[i].numpy(), m, atol=1e-12)
        want = _filter2d_reference(images[i].permute(1, 2, 0).numpy(), m)
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), want, atol=1e-12)
    assert torch.equal(out[2], images[2])


def _advanced_blur_kernel_reference(ksize, sigma_x, sigma_y, angle, beta, noise_matrix):
    """albumentations 1.3.1 augmentations/blur/transforms.py:362-378 (AdvancedBlur.get_params after
    its random draws)."""
    ax = np.arange(-ksize // 2 + 1.0, ksize // 2 + 1.0)
    grid = np.stack(np.meshgrid(ax, ax), axis=-1)
    d_matrix = np.array([[sigma_x**2, 0], [0, sigma_y**2]])
    u_matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    sigma_matrix = np.dot(u_matrix, np.dot(d_matrix, u_matrix.T))
    inverse_sigma = np.linalg.inv(sigma_matrix)
    kernel = np.exp(-0.5 * np.power(np.sum(np.dot(grid, inverse_sigma) * grid, 2), beta))
    kernel = kernel * noise_matrix
    return kernel / np.sum(kernel)


def test_advanced_blur_kernels_match_albumentations():
    g = torch.Generator().manual_seed(1)
    ksize = torch.tensor([3, 5, 7, 7])
    sx, sy = (
        torch.tensor([0.2, 0.5, 1.0, 0.3], dtype=torch.float64),
        torch.tensor([0.9, 0.5, 0.2, 0.7], dtype=torch.float64),
    )
    angle = torch.tensor([0.3, -1.2, math.pi / 2, -0.7], dtype=torch.float64)
    beta = torch.tensor([0.5, 1.0, 4.0, 8.0], dtype=torch.float64)
    noise = 0.9 + 0.2 * torch.rand(4, 7, 7, generator=g, dtype=torch.float64)
    kernels = s4g.advanced_blur_kernels(ksize, sx, sy, angle, beta, noise)
    for i in range(4):
        k = int(ksize[i])
        lo = 3 - k // 2
        want = _advanced_blur_kernel_reference(
            k, float(sx[i]), float(sy[i]), float(angle[i]), float(beta[i]), noise[i, lo : lo + k, lo : lo + k].numpy()
        )
        np.testing.assert_allclose(kernels[i, lo : lo + k, lo : lo + k].numpy(), want, rtol=1e-10, atol=1e-12)
        assert float(kernels[i].sum()) == pytest.approx(1.0) and float(kernels[i].abs().sum()) == pytest.approx(1.0)
    # the drawn kernels: normalised, non-negative, zero outside their size
    drawn = s4g.sample_advanced_blur(200, None, torch.Generator().manual_seed(2))
    assert torch.allclose(drawn.sum(dim=(1, 2)), torch.ones(200)) and (drawn >= 0).all()
    assert (drawn[:, 3, 3] > 0).all()
    ring7 = drawn.clone()
    ring7[:, 1:6, 1:6] = 0
    ring5 = drawn.clone()
    ring5[:, 2:5, 2:5] = 0
    assert (ring7.sum(dim=(1, 2)) > 0).any() and (ring5.sum(dim=(1, 2)) == 0).any()  # sizes 7 and 3 drawn


def _grid_dropout_reference(height, width, ratio):
    """albumentations 1.3.1 augmentations/dropout/grid_dropout.py:85-137 with the defaults the
    reference leaves (unit_size_min/max, holes_number_x/y None; shift 0; random_offset False),
    then functional.cutout (dropout/functional.py:22-29) on a mask."""
    unit_width = max(2, width // 10)
    unit_height = max(min(unit_width, height), 2)
    hole_width = int(unit_width * ratio)
    hole_height = int(unit_height * ratio)
    hole_width = min(max(hole_width, 1), unit_width - 1)
    hole_height = min(max(hole_height, 1), unit_height - 1)
    shift_x = shift_y = 0
    img = np.zeros((height, width), dtype=bool)
    for i in range(width // unit_width + 1):
        for j in range(height // unit_height + 1):
            x1 = min(shift_x + unit_width * i, width)
            y1 = min(shift_y + unit_height * j, height)
            x2 = min(x1 + hole_width, width)
            y2 = min(y1 + hole_height, height)
            img[y1:y2, x1:x2] = True
    return img


@pytest.mark.parametrize(
    "size, ratio", [((384, 384), 0.4), ((140, 768), 0.5), ((64, 64), 0.4), ((32, 128), 0.5), ((10, 10), 0.5)]
)
def test_grid_dropout_matches_albumentations(size, ratio):
    assert np.array_equal(s4g.grid_dropout_mask(*size, ratio).numpy(), _grid_dropout_reference(*size, ratio))


def test_coarse_dropout_holes_match_the_reference_cutout_and_limits():
    h, w = 140, 768
    holes, side = s4g.coarse_dropout_limits(h)
    assert (holes, side) == ((10, 25), (14, 28))  # int(0.1 * 140), int(0.2 * 140): transforms.py:72-78
    assert s4g.coarse_dropout_limits(384) == ((10, 25), (38, 76))  # transforms.py:48-54
    boxes, active = s4g.sample_coarse_holes(16, h, w, holes, side, None, torch.Generator().manual_seed(3))
    mask = s4g.holes_mask(boxes, active, h, w)
    n = active.sum(1)
    assert n.min() >= 10 and n.max() <= 25 and (active == (torch.arange(25) < n.unsqueeze(1))).all()
    for b in range(16):
        want = np.zeros((h, w), dtype=bool)
        for (x0, y0, bw, bh), on in zip(boxes[b].long().tolist(), active[b].tolist()):
            if on:  # coarse_dropout.py:149-154 then functional.cutout
                assert side[0] <= bh <= side[1] and side[0] <= bw <= side[1]
                assert 0 <= y0 <= h - bh and 0 <= x0 <= w - bw
                want[y0 : y0 + bh, x0 : x0 + bw] = True
        assert np.array_equal(mask[b, 0].numpy(), want)


def test_one_of_never_draws_both_and_has_the_asked_frequencies():
    choice = s4g.one_of(40_000, (0.15, 0.15), None, torch.Generator().manual_seed(4))
    freq = torch.bincount(choice, minlength=3).float() / 40_000
    assert abs(float(freq[0]) - 0.7) < 0.01 and abs(float(freq[1]) - 0.15) < 0.01 and abs(float(freq[2]) - 0.15) < 0.01
    with pytest.raises(ValueError):
        s4g.one_of(4, (0.6, 0.6), None)


def test_satellite_share_hidden_when_dropout_fires():
    """The reference hides a quarter to a sixth of a 384² satellite tile when its dropout fires
    (grid ratio 0.4: 16 %, coarse 10-25 holes of 38-76 px: about 31 %), where the single erasing
    box the pipeline had before hid about 6 %."""
    grid = s4g.grid_dropout_mask(384, 384, 0.4)
    assert float(grid.float().mean()) == pytest.approx((154 / 384) ** 2)
    boxes, active = s4g.sample_coarse_holes(
        64, 384, 384, *s4g.coarse_dropout_limits(384), None, torch.Generator().manual_seed(5)
    )
    coarse = float(s4g.holes_mask(boxes, active, 384, 384).float().mean())
    assert 0.25 < coarse < 0.37
    from vissl_neg.augment import ops

    old, found = ops.sample_boxes(
        256, 384, 384, (0.02, 0.1), (0.3, 3.3), None, torch.Generator().manual_seed(6), fallback="none"
    )  # the erasing box of the earlier pipeline
    old_share = float((old[found, 2] * old[found, 3]).mean()) / 384**2
    assert 0.04 < old_share < 0.08 and float(grid.float().mean()) > 2 * old_share and coarse > 4 * old_share


def _jpeg_quality_scaling_reference(quality: int) -> list[int]:
    """libjpeg jcparam.c jpeg_quality_scaling + jpeg_add_quant_table (force_baseline) for the
    luminance table."""
    quality = min(max(quality, 1), 100)
    quality = 5000 // quality if quality < 50 else 200 - quality * 2
    out = []
    for base in s4g._LUMA_Q:
        temp = (base * quality + 50) // 100
        out.append(min(max(temp, 1), 255))
    return out


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)  # libjpeg, 4:2:0 by default
    buf.seek(0)
    return torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("quality", [90, 95, 100])
def test_jpeg_round_trip_approximates_libjpeg(quality):
    tables = s4g.jpeg_tables(torch.tensor([quality, 30]), s4g.jpeg_base_tables())
    assert tables[0, 0].flatten().long().tolist() == _jpeg_quality_scaling_reference(quality)
    assert tables[1, 0].flatten().long().tolist() == _jpeg_quality_scaling_reference(30)
    g = torch.Generator().manual_seed(6)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 18, 30, generator=g), size=(70, 120), mode="bilinear")
    x = (x * 255).round() / 255
    ours = s4g.jpeg_round_trip(x, torch.tensor([quality]), torch.tensor([True]))
    libjpeg = _pil_jpeg(x[0], quality)
    loss = float((libjpeg - x[0]).abs().mean())  # what JPEG changes
    assert loss > 2 / 255
    assert float((ours[0] - libjpeg).abs().mean()) < 0.25 * loss  # ours changes nearly the same
    kept = s4g.jpeg_round_trip(x, torch.tensor([quality]), torch.tensor([False]))
    assert torch.equal(kept, x)


def test_pipeline_defaults_are_the_reference_transforms():
    """transforms.py:38-57: ImageCompression(90, 100, p 0.5), ColorJitter(0.15 ×4, p 0.5),
    OneOf([AdvancedBlur, Sharpen], p 0.3), OneOf([GridDropout(0.4 / 0.5), CoarseDropout], p 0.3);
    cvusa.py:71-93: flip 0.5, rotate 0.75."""
    a = load_config(None, ["task=geo"]).augment
    assert (a.flip_p, a.rotate_p, a.jpeg_p, a.jpeg_quality) == (0.5, 0.75, 0.5, [90, 100])
    assert (a.jitter, a.hue, a.jitter_p) == (0.15, 0.15, 0.5)
    assert (a.blur_p, a.sharpen_p, a.grid_dropout_p, a.coarse_dropout_p) == (0.15, 0.15, 0.15, 0.15)
    assert CrossViewAugment.GRID_RATIO == {"sat": 0.4, "pano": 0.5}


def test_pipeline_reads_nothing_back_and_changes_hue():
    aug = CrossViewAugment()
    pano = torch.randint(0, 256, (4, 3, 16, 64), dtype=torch.uint8)
    sat = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with host_reads() as reads:
        vp, vs = aug(pano, sat)
    assert reads.ops == {}, reads.report()
    assert vp.shape == (4, 3, 16, 64) and vs.shape == (4, 3, 32, 32)
    # with only the jitter on, hue moves: a pure-red image gains green or blue somewhere
    only_hue = CrossViewAugment(
        flip_p=0,
        rotate_p=0,
        jpeg_p=0,
        jitter=0.0,
        hue=0.15,
        jitter_p=1.0,
        blur_p=0,
        sharpen_p=0,
        grid_dropout_p=0,
        coarse_dropout_p=0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    red_pano, red_sat = torch.zeros(8, 3, 8, 32, dtype=torch.uint8), torch.zeros(8, 3, 8, 8, dtype=torch.uint8)
    red_pano[:, 0], red_sat[:, 0] = 255, 255
    out_pano, out_sat = only_hue(red_pano, red_sat)
    assert float(out_pano[:, 1:].amax()) > 0.1 and float(out_sat[:, 1:].amax()) > 0.1


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.blur_p=0.9", "augment.blur_p' + 'augment.sharpen_p"),
        ("augment.coarse_dropout_p=0.9", "augment.grid_dropout_p' + 'augment.coarse_dropout_p"),
        ("augment.jpeg_quality=[95, 90]", "augment.jpeg_quality"),
        ("augment.hue=0.7", "augment.hue"),
    ],
)
def test_bad_view_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
        load_config(None, ["task=geo", override])
