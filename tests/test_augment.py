"""kornia MoCo-v2 views: shapes, per-sample randomness, normalisation."""

from __future__ import annotations

import pytest
import torch

from vissl_neg.augment import EvalTransform, ViewAugment
from vissl_neg.config import load_config

import helpers  # noqa: F401  (pins torch to one CPU thread)

MEAN, STD = 0.2860, 0.3530
ONLY_CROP = ["augment.flip_p=0", "augment.jitter_p=0", "augment.blur_p=0"]
IDENTITY = ONLY_CROP + ["augment.crop_scale=[1.0, 1.0]", "augment.crop_ratio=[1.0, 1.0]", "augment.grayscale_p=0"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # kornia draws from the global generator


def _images(b, c=1, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, size, size), generator=g, dtype=torch.uint8)
    x[:, :, 4:12, 6:20] = 255  # some structure, so crops of different regions differ
    return x


def _distinct(views: torch.Tensor) -> int:
    flat = views.flatten(1)
    distinct = []
    for row in flat:
        if not any(torch.allclose(row, d, atol=1e-4) for d in distinct):
            distinct.append(row)
    return len(distinct)


def test_output_shape_dtype_and_input_untouched():
    aug = ViewAugment(load_config().augment, in_chans=1)
    x = _images(8)
    before = x.clone()
    v = aug(x)
    assert v.dtype == torch.float32 and v.shape == (8, 1, 28, 28)
    assert torch.isfinite(v).all()
    assert torch.equal(x, before)
    assert not v.requires_grad


def test_two_calls_differ():
    aug = ViewAugment(load_config().augment, in_chans=1)
    x = _images(8)
    v1, v2 = aug(x), aug(x)
    assert not torch.allclose(v1, v2)
    # nearly every sample differs between its two views
    differs = [(not torch.allclose(a, b, atol=1e-4)) for a, b in zip(v1, v2)]
    assert sum(differs) >= 6


@pytest.mark.parametrize("overrides", [[], ONLY_CROP])
def test_samples_draw_their_own_parameters(overrides):
    aug = ViewAugment(load_config(None, overrides).augment, in_chans=1)
    x = _images(1).repeat(16, 1, 1, 1)  # the same image 16 times
    v = aug(x)
    assert _distinct(v) >= 12  # not one crop broadcast over the batch


def test_identity_crop_is_just_normalisation():
    aug = ViewAugment(load_config(None, IDENTITY).augment, in_chans=1)
    x = _images(4)
    expected = (x.float() / 255.0 - MEAN) / STD
    assert torch.allclose(aug(x), expected, atol=1e-4)


def test_eval_transform_is_deterministic_normalisation():
    t = EvalTransform(load_config().augment, in_chans=1)
    x = _images(3)
    expected = (x.float() / 255.0 - MEAN) / STD
    assert torch.allclose(t(x), expected, atol=1e-6)
    assert torch.equal(t(x), t(x))
    # a different size is resized
    t32 = EvalTransform(load_config(None, ["augment.size=32"]).augment, in_chans=1)
    assert t32(x).shape == (3, 1, 32, 32)


def test_three_channels():
    cfg = load_config(None, ["augment.size=32", "augment.grayscale_p=0.5"]).augment
    aug = ViewAugment(cfg, in_chans=3)
    x = _images(6, c=3, size=40)
    v1, v2 = aug(x), aug(x)
    assert v1.shape == (6, 3, 32, 32) and v1.dtype == torch.float32
    assert not torch.allclose(v1, v2)
    assert _distinct(aug(_images(1, c=3, size=40).repeat(8, 1, 1, 1))) >= 6
    # the 1-channel mean/std is spread over the three channels
    ident = ViewAugment(load_config(None, IDENTITY).augment, in_chans=3)
    x = _images(2, c=3)
    assert torch.allclose(ident(x), (x.float() / 255.0 - MEAN) / STD, atol=1e-4)


def test_three_channel_mean_std_per_channel():
    cfg = load_config(None, IDENTITY + ["augment.mean=[0.1, 0.2, 0.3]", "augment.std=[0.5, 0.25, 0.125]"]).augment
    aug = ViewAugment(cfg, in_chans=3)
    x = _images(2, c=3)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    assert torch.allclose(aug(x), (x.float() / 255.0 - mean) / std, atol=1e-4)
