"""The device view operations against torchvision's functional transforms (an independent
implementation) with the same explicit parameters, and their samplers' ranges."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from vissl_neg.augment import ops
from vissl_neg.augment.cross_view import CrossViewAugment
from vissl_neg.augment.views import ViewAugment
from vissl_neg.config import load_config

import helpers  # noqa: F401  (pins torch to one CPU thread)
from host_sync import host_reads


def _images(b=6, c=3, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g)


def _per_sample(fn, images, *params):
    return torch.stack([fn(img, *(p[i].item() for p in params)) for i, img in enumerate(images)])


def test_boxes_follow_torchvisions_rules():
    g = torch.Generator().manual_seed(0)
    boxes, found = ops.sample_boxes(4000, 30, 40, (0.2, 1.0), (0.75, 4 / 3), "cpu", g)
    x0, y0, w, h = boxes.unbind(1)
    assert found.float().mean() > 0.99
    assert torch.equal(boxes, boxes.round()) and (w >= 1).all() and (h >= 1).all()
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 40).all() and (y0 + h <= 30).all()
    area = (w * h)[found] / (30 * 40)
    assert area.min() > 0.18 and area.max() <= 1.0  # rounding moves the area a little
    ratio = (w / h)[found]
    assert ratio.min() > 0.75 * 0.8 and ratio.max() < 4 / 3 * 1.25
    # positions cover the whole range of offsets
    small = found & (w <= 20)
    assert x0[small].min() == 0 and (x0 + w)[small].max() == 40


def test_impossible_boxes_fall_back_as_torchvision_does():
    # a 10 x 40 image: no box of ratio in [0.5, 2] with >= 90 % of the area fits
    boxes, found = ops.sample_boxes(5, 10, 40, (0.9, 1.0), (0.5, 2.0), "cpu")
    assert not found.any()
    # torchvision's fallback: in_ratio 4 > 2 -> h = H, w = round(H * 2), centred
    assert boxes.tolist() == [[10.0, 0.0, 20.0, 10.0]] * 5
    boxes, found = ops.sample_boxes(5, 10, 40, (0.9, 1.0), (0.5, 2.0), "cpu", fallback="none")
    assert not found.any() and boxes.abs().sum() == 0


def test_resized_crop_equals_cropping_and_resizing():
    x = _images()
    b = x.shape[0]
    # a box of the output size is the plain crop; flip mirrors it
    boxes = torch.tensor([[3.0, 2.0, 16.0, 16.0]]).repeat(b, 1)
    flip = torch.tensor([False, True] * (b // 2))
    out = ops.resized_crop(x, boxes, (16, 16), flip)
    crop = x[..., 2:18, 3:19]
    torch.testing.assert_close(out[~flip], crop[~flip], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[flip], crop[flip].flip(-1), atol=1e-5, rtol=0)
    # the whole image resized = bilinear interpolation without antialiasing
    whole = torch.tensor([[0.0, 0.0, 32.0, 24.0]]).repeat(b, 1)
    want = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ops.resized_crop(x, whole, (20, 20)), want, atol=1e-5, rtol=0)
    # every sample its own box
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 4.0, 16.0, 16.0]] * (b // 2))
    out = ops.resized_crop(x, boxes, (16, 16))
    torch.testing.assert_close(out[1], x[1, :, 4:20, 8:24], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ops.adjust_brightness, TF.adjust_brightness),
        (ops.adjust_contrast, TF.adjust_contrast),
        (ops.adjust_saturation, TF.adjust_saturation),
    ],
)
def test_colour_factors_equal_torchvision(ours, theirs):
    x = _images()
    factor = torch.tensor([0.0, 0.5, 0.9, 1.0, 1.3, 1.8])
    torch.testing.assert_close(ours(x, factor), _per_sample(theirs, x, factor), atol=1e-5, rtol=0)


def test_hue_equals_torchvision():
    x = _images()
    shift = torch.tensor([-0.5, -0.1, 0.0, 0.05, 0.25, 0.5])
    torch.testing.assert_close(ops.adjust_hue(x, shift), _per_sample(TF.adjust_hue, x, shift), atol=1e-4, rtol=0)


def test_jitter_applies_only_where_drawn_and_one_channel_skips_colour():
    x = _images()
    b, c, s, h = (torch.full((6,), v) for v in (1.4, 0.6, 1.5, 0.2))
    apply = torch.tensor([True, False] * 3)
    out = ops.color_jitter(x, b, c, s, h, apply)
    assert torch.equal(out[~apply], x[~apply]) and not torch.allclose(out[apply], x[apply])
    want = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[0], 1.4), 0.6), 1.5), 0.2)
    torch.testing.assert_close(out[0], want, atol=1e-4, rtol=0)
    gray = x[:, :1]
    torch.testing.assert_close(ops.adjust_saturation(gray, s), gray)
    torch.testing.assert_close(
        ops.adjust_contrast(gray, c), _per_sample(TF.adjust_contrast, gray, c), atol=1e-5, rtol=0
    )


def test_grayscale_blur_sharpen_erase_equal_torchvision():
    x = _images()
    apply = torch.tensor([True, True, False, True, True, True])
    want = TF.rgb_to_grayscale(x, num_output_channels=3)
    out = ops.random_grayscale(x, apply)
    torch.testing.assert_close(out[apply], want[apply], atol=1e-5, rtol=0)
    assert torch.equal(out[~apply], x[~apply])

    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    out = ops.gaussian_blur(x, sigma, 5, torch.ones(6, dtype=torch.bool))
    want = torch.stack([TF.gaussian_blur(img, [5, 5], [s.item(), s.item()]) for img, s in zip(x, sigma)])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)

    factor = torch.tensor([0.0, 0.5, 1.0, 1.2, 1.5, 2.0])
    out = ops.sharpen(x, factor, torch.ones(6, dtype=torch.bool))
    torch.testing.assert_close(out, _per_sample(TF.adjust_sharpness, x, factor), atol=1e-5, rtol=0)

    boxes = torch.tensor([[2.0, 3.0, 5.0, 4.0]] * 6)
    out = ops.erase(x, boxes, apply)
    want = TF.erase(x[0], 3, 2, 4, 5, torch.zeros(()))
    torch.testing.assert_close(out[0], want)
    assert torch.equal(out[~apply], x[~apply])


def test_gaussian_kernels_are_normalised_gaussians():
    k = ops.gaussian_kernels(torch.tensor([0.5, 2.0]), 7)
    x = torch.arange(7.0) - 3
    for row, s in zip(k, (0.5, 2.0)):
        want = torch.exp(-(x**2) / (2 * s * s))
        torch.testing.assert_close(row, want / want.sum())


def test_samplers_draw_per_sample_in_their_ranges():
    g = torch.Generator().manual_seed(1)
    b, c, s, h = ops.sample_jitter(10_000, 0.4, 0.4, 0.4, 0.1, "cpu", g)
    for f in (b, c, s):
        assert 0.6 <= f.min() < 0.61 and 1.39 < f.max() <= 1.4 and f.unique().numel() > 9000
    assert -0.1 <= h.min() < -0.099 and 0.099 < h.max() <= 0.1
    p = ops.bernoulli(20_000, 0.3, "cpu", g).float().mean()
    assert abs(p - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20_000)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_view_pipelines_read_nothing_back_to_the_host(in_chans):
    """On CUDA a host read (``.item()``, ``.any()`` in an ``if``, ``nonzero``) or a tensor made from
    host data waits for the GPU; here the same operations are caught on the CPU."""
    aug = ViewAugment(load_config(None, ["augment.erase_p=0.5", "augment.size=24"]).augment, in_chans)
    x = torch.randint(0, 256, (8, in_chans, 28, 28), dtype=torch.uint8)
    with host_reads() as reads:
        aug(x)
    assert reads.ops == {}, reads.report()
    pair = CrossViewAugment()
    with host_reads() as reads:
        pair(
            torch.randint(0, 256, (4, 3, 16, 64), dtype=torch.uint8),
            torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
        )
    assert reads.ops == {}, reads.report()


def test_host_read_probe_catches_what_it_should():
    x = torch.randn(8)
    with host_reads() as reads:
        x.sum().item()
        if (x > 0).any():
            pass
        x[x > 0]  # boolean indexing = nonzero
        torch.tensor([1.0, 2.0])
    assert {"_local_scalar_dense", "index (boolean mask)", "lift_fresh"} <= set(reads.ops), reads.ops
