"""slerp (Oh et al. 2023) against the sin-ratio formula, and on the sphere at θ → 0 and θ → π."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.negatives.geodesic import geodesic_mix, slerp
from vissl_neg.negatives.mochi import sample_mix_coefficients

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _sin_formula(a, b, lam):
    theta = math.acos(max(-1.0, min(1.0, float(a @ b))))
    return (math.sin(lam * theta) * a + math.sin((1 - lam) * theta) * b) / math.sin(theta)


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5, 0.77, 1.0])
def test_matches_the_sin_formula(lam):
    a, b = _unit(6, 5, seed=0), _unit(6, 5, seed=1)
    out = slerp(a, b, lam)
    for i in range(6):
        torch.testing.assert_close(out[i], _sin_formula(a[i], b[i], lam))


def test_endpoints_and_per_row_lambda():
    a, b = _unit(4, 7, seed=2), _unit(4, 7, seed=3)
    torch.testing.assert_close(slerp(a, b, 1.0), a)
    torch.testing.assert_close(slerp(a, b, 0.0), b)
    lam = torch.tensor([0.0, 0.3, 0.6, 1.0], dtype=torch.float64)
    out = slerp(a, b, lam)
    for i in range(4):
        torch.testing.assert_close(out[i], _sin_formula(a[i], b[i], float(lam[i])))


def test_angle_splits_in_proportion():
    a, b = _unit(5, 3, seed=4), _unit(5, 3, seed=5)
    theta = torch.arccos((a * b).sum(1))
    out = slerp(a, b, 0.3)
    torch.testing.assert_close(torch.arccos((out * a).sum(1).clamp(-1, 1)), 0.7 * theta)
    torch.testing.assert_close(torch.arccos((out * b).sum(1).clamp(-1, 1)), 0.3 * theta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gap", [0.0, 1e-9, 1e-7, 1e-4])
def test_nearly_identical_vectors_stay_on_the_sphere(dtype, gap):
    a = _unit(8, 16, seed=6).to(dtype)
    b = F.normalize(a + gap * _unit(8, 16, seed=7).to(dtype), dim=1)
    for lam in (0.0, 0.25, 0.5, 1.0):
        out = slerp(a, b, lam)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=1), torch.ones(8, dtype=dtype))
        assert ((out * a).sum(1) > 1 - 1e-3).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gap", [0.0, 1e-9, 1e-6])
def test_nearly_opposite_vectors_stay_on_the_sphere(dtype, gap):
    a = _unit(8, 16, seed=8).to(dtype)
    b = F.normalize(-a + gap * _unit(8, 16, seed=9).to(dtype), dim=1)
    out = slerp(a, b, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(8, dtype=dtype))
    # half-way along a half great circle: orthogonal to both ends
    assert (out * a).sum(1).abs().max() < 1e-3
    torch.testing.assert_close(slerp(a, b, 1.0), a, atol=1e-3, rtol=0)


def test_geodesic_mix_uses_the_given_rows_and_weights():
    q, negs = _unit(2, 6, seed=10), _unit(9, 6, seed=11)
    c = sample_mix_coefficients(2, 9, 4, 3, generator=torch.Generator().manual_seed(0), beta_alpha=1.0)
    out = geodesic_mix(q.requires_grad_(True), negs, c)
    assert out.shape == (2, 7, 6) and not out.requires_grad
    for b in range(2):
        for s in range(4):
            i, j = int(c.i[b, s]), int(c.j[b, s])
            want = negs[i] if i == j else _sin_formula(negs[i], negs[j], float(c.w[b, s]))
            torch.testing.assert_close(out[b, s].double(), want, rtol=1e-5, atol=1e-6)
        for s in range(3):
            want = _sin_formula(q[b].detach(), negs[c.jq[b, s]], float(c.wq[b, s]))
            torch.testing.assert_close(out[b, 4 + s].double(), want, rtol=1e-5, atol=1e-6)
    assert c.wq.max() < 0.5
