"""Paired views: the pair's geometry stays consistent (flip both; rot90 by k ↔ roll by −k·W/4)."""

from __future__ import annotations

import torch

from vissl_neg.augment.cross_view import CrossViewAugment, flip_pair, rotate_pair, sample_pair_geometry

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _pair(b=4):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, 3, 8, 16), generator=g, dtype=torch.uint8), torch.randint(
        0, 256, (b, 3, 10, 10), generator=g, dtype=torch.uint8
    )


def test_rotation_goes_with_a_quarter_roll_per_sample():
    pano, sat = _pair()
    k = torch.tensor([0, 1, 2, 3])
    p, s = rotate_pair(pano, sat, k)
    for i in range(4):
        r = int(k[i])
        assert torch.equal(s[i], torch.rot90(sat[i], r, dims=(-2, -1)))
        assert torch.equal(p[i], torch.roll(pano[i], -r * 4, dims=-1))
    back_p, back_s = rotate_pair(p, s, (4 - k) % 4)  # a full turn restores both
    assert torch.equal(back_p, pano) and torch.equal(back_s, sat)


def test_flip_applies_to_both_images_of_a_pair():
    pano, sat = _pair()
    flip = torch.tensor([True, False, True, False])
    p, s = flip_pair(pano, sat, flip)
    for i in range(4):
        assert torch.equal(p[i], pano[i].flip(-1) if flip[i] else pano[i])
        assert torch.equal(s[i], sat[i].flip(-1) if flip[i] else sat[i])


def test_consistency_on_a_synthetic_pair():
    # a satellite whose four quadrants carry the colours the panorama shows in its four
    # quarters; every rotation keeps that correspondence
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
    pano = torch.cat([colours[q].view(3, 1, 1).expand(3, 4, 4) for q in range(4)], dim=-1).unsqueeze(0)
    sat = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    # azimuth runs clockwise seen from above (north-east, south-east, south-west, north-west),
    # as in a panorama whose columns sweep the compass clockwise
    sat[0, :, :4, 4:] = colours[0].view(3, 1, 1)
    sat[0, :, 4:, 4:] = colours[1].view(3, 1, 1)
    sat[0, :, 4:, :4] = colours[2].view(3, 1, 1)
    sat[0, :, :4, :4] = colours[3].view(3, 1, 1)

    def quadrant_colours(s):
        return [s[0, :, 1, 6], s[0, :, 6, 6], s[0, :, 6, 1], s[0, :, 1, 1]]

    def quarter_colours(p):
        return [p[0, :, 1, 4 * q + 1] for q in range(4)]

    for flip in (False, True):
        fp, fs = flip_pair(pano, sat, torch.tensor([flip]))
        for r in range(4):
            p, s = rotate_pair(fp, fs, torch.tensor([r]))
            assert [c.tolist() for c in quarter_colours(p)] == [c.tolist() for c in quadrant_colours(s)]


def test_sampler_and_module():
    flip, k = sample_pair_geometry(4000, 0.5, 0.75, generator=torch.Generator().manual_seed(0))
    assert 0.45 < flip.float().mean() < 0.55 and 0.22 < (k == 0).float().mean() < 0.28
    assert set(k.unique().tolist()) == {0, 1, 2, 3}
    pano, sat = _pair()
    vp, vs = CrossViewAugment()(pano, sat)
    assert vp.shape == (4, 3, 8, 16) and vs.shape == (4, 3, 10, 10) and vp.dtype == torch.float32
