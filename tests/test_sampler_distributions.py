"""Every strategy's sampler against the distribution its paper (or the reference code) draws
from: MoCHi's positions and weights, geodesic mixup's Beta(α, α), feature transformation's λ⁺
and λ⁻ for each ``draw``, SimANS's Gumbel noise, m²-mix's λ and Sample4Geo's view parameters.

The draws are captured where the strategy hands them to its pure function (a spy around it),
so a change anywhere on the way (the sampler, its arguments, the strategy's call) shows. Each
check is a Kolmogorov–Smirnov distance within the DKW bound of ``goodness_of_fit.py``: a false
alarm has probability below 1e-9 per check, below 1e-7 per test. The sample sizes are set so
that each check also catches the changes named in its docstring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.augment import cross_view, ops
from vissl_neg.augment import sample4geo_ops as s4g
from vissl_neg.augment.cross_view import CrossViewAugment
from vissl_neg.geo.m2mix import sample_m2mix_lambda
from vissl_neg.negatives import FeatureTransform, NegativeSet
from vissl_neg.negatives import feature_transform as ft
from vissl_neg.negatives.ambiguous import sample_gumbel
from vissl_neg.negatives.geodesic import Geodesic
from vissl_neg.negatives.mochi import Mochi, hard_rows

import helpers  # noqa: F401  (pins torch to one CPU thread)
from goodness_of_fit import (
    assert_discrete,
    assert_fits,
    assert_uniform_integers,
    beta_cdf,
    gumbel_cdf,
    uniform_cdf,
)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _captured_coefficients(strategy: Mochi, negs: NegativeSet):
    """The MixCoefficients (rows of the source) the strategy passes to its mixing function."""
    seen = []
    mix = strategy.make_mixes

    def spy(q, source, c, query_dots=None):
        seen.append(c)
        return mix(q, source, c, query_dots)

    strategy.make_mixes = spy  # the instance attribute shadows the class's function
    strategy(negs)
    (c,) = seen
    return c


def _positions(rows: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Source rows (B, S) -> their positions in each query's hard set ``hard`` (B, N)."""
    match = rows.unsqueeze(2) == hard.unsqueeze(1)
    assert match.any(2).all(), "a mixed row outside the query's hardest negatives"
    return match.float().argmax(2)


def _mixing_set(seed: int) -> NegativeSet:
    return NegativeSet(_unit(64, 8, seed=seed), _unit(64, 8, seed=seed + 1), _unit(40, 8, seed=seed + 2))


def test_mochi_positions_and_weights():
    """Positions uniform over each query's N hardest (i, j independent), pair weights U(0, 1),
    query weights U(0, 0.5) (Kalantidis et al. 2020, Sec. 4). Catches pair weights drawn as
    U(0, 1)² (KS distance 1/4; the bound at 8192 draws is 0.036)."""
    torch.manual_seed(0)
    negs = _mixing_set(0)
    c = _captured_coefficients(Mochi(n_hard=10, s=128, s_prime=128), negs)
    hard = hard_rows(negs, 10)
    i, j, jq = (_positions(rows, hard) for rows in (c.i, c.j, c.jq))
    for name, pos in (("i", i), ("j", j), ("jq", jq)):
        assert_uniform_integers(pos, 0, 9, f"MoCHi position {name}")
    assert_uniform_integers(10 * i + j, 0, 99, "MoCHi pair (i, j)")
    assert_fits(c.w, uniform_cdf(0.0, 1.0), "MoCHi pair weight ~ U(0, 1)")
    assert_fits(c.wq, uniform_cdf(0.0, 0.5), "MoCHi query weight ~ U(0, 0.5)")


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_geodesic_weights_are_beta_alpha_alpha(alpha):
    """Pair weights Beta(α, α), query weights 0.5 · Beta(α, α), positions as MoCHi's. Catches
    Beta(2α, 2α) (KS distance 0.10 at α = 1/2 and 1, 0.07 at α = 2; the bound at 16384
    draws is 0.026)."""
    torch.manual_seed(1)
    negs = _mixing_set(3)
    c = _captured_coefficients(Geodesic(n_hard=10, s=256, s_prime=64, alpha=alpha), negs)
    assert_uniform_integers(_positions(c.i, hard_rows(negs, 10)), 0, 9, "geodesic position i")
    assert_fits(c.w, beta_cdf(alpha, alpha), f"geodesic pair weight ~ Beta({alpha}, {alpha})")
    assert_fits(c.wq, beta_cdf(alpha, alpha, scale=0.5), f"geodesic query weight ~ 0.5 Beta({alpha}, {alpha})")


def _captured_lambdas(monkeypatch, strategy: FeatureTransform, sets: list[NegativeSet]):
    """-> (λ⁺ per call, λ⁻ per call, permutation per call) as the strategy passes them to
    extrapolate_positives and interpolate_negatives."""
    pos, neg, perms = [], [], []
    extrapolate, interpolate = ft.extrapolate_positives, ft.interpolate_negatives

    def spy_pos(q, k, lam):
        pos.append(torch.as_tensor(lam))
        return extrapolate(q, k, lam)

    def spy_neg(negatives, perm, lam):
        neg.append(torch.as_tensor(lam))
        perms.append(perm)
        return interpolate(negatives, perm, lam)

    monkeypatch.setattr(ft, "extrapolate_positives", spy_pos)
    monkeypatch.setattr(ft, "interpolate_negatives", spy_neg)
    for negs in sets:
        strategy(negs)
    return pos, neg, perms


@pytest.mark.parametrize(
    "draw, b, m, d, calls",
    [("step", 1, 4, 2, 8192), ("sample", 16384, 16384, 2, 1), ("dim", 256, 256, 64, 1)],
)
def test_feature_transform_lambdas(monkeypatch, draw, b, m, d, calls):
    """λ⁺ = 1 + Beta(a⁺, a⁺) and λ⁻ ~ Beta(a⁻, a⁻) (Zhu et al. 2021; the reference draws
    np.random.beta(alpha, alpha), DTennant/CL-Visualizing-Feature-Transformation@c53d1be
    memory/mem_moco.py:195-200), one per step, per sample or per element, and a uniform
    permutation of the negatives. Catches λ⁺ − 1 ~ Beta(a⁺ + 1, a⁺ + 1) (KS distance 0.054 at
    a⁺ = 2; the bound at 16384 draws, ``sample`` and ``dim``, is 0.026; ``step``, one λ per
    call, checks its 8192 draws at 0.036)."""
    torch.manual_seed(2)
    sets = [NegativeSet(_unit(b, d, seed=s), _unit(b, d, seed=s + 1), _unit(m, d, seed=s + 2)) for s in range(calls)]
    pos, neg, perms = _captured_lambdas(monkeypatch, FeatureTransform(pos_alpha=2.0, neg_alpha=1.6, draw=draw), sets)
    want = {"step": ((), ()), "sample": ((b,), (m,)), "dim": ((b, d), (m, d))}[draw]
    assert [tuple(x.shape) for x in (pos[0], neg[0])] == list(want) and len(pos) == len(neg) == calls
    lam_pos, lam_neg = torch.stack(pos).flatten(), torch.stack(neg).flatten()
    assert_fits(lam_pos - 1.0, beta_cdf(2.0, 2.0), f"draw={draw}: λ⁺ − 1 ~ Beta(2, 2)")
    assert_fits(lam_neg, beta_cdf(1.6, 1.6), f"draw={draw}: λ⁻ ~ Beta(1.6, 1.6)")
    for perm in perms[:4]:
        assert torch.equal(perm.sort().values, torch.arange(m))
    if draw == "step":  # the first entry of the permutation over all calls: uniform over the rows
        assert_uniform_integers(torch.stack([p[0] for p in perms]), 0, m - 1, "permutation")


def test_feature_transform_halves_switched_off_draw_nothing(monkeypatch):
    pos, neg, _ = _captured_lambdas(monkeypatch, FeatureTransform(pos_alpha=0.0, neg_alpha=1.6), [_mixing_set(5)])
    assert pos == [] and len(neg) == 1
    pos, neg, _ = _captured_lambdas(monkeypatch, FeatureTransform(pos_alpha=2.0, neg_alpha=0.0), [_mixing_set(5)])
    assert len(pos) == 1 and neg == []
    pos, neg, _ = _captured_lambdas(monkeypatch, FeatureTransform(pos_alpha=0.5, neg_alpha=0.5), [_mixing_set(5)])
    assert len(pos) == len(neg) == 1


def test_simans_gumbel_noise():
    """SimANS's draws without replacement perturb the log-weights with Gumbel(0, 1) noise
    (Gumbel-top-k); the noise's CDF is exp(−e^{−x}). Catches a scale or location off by 10 %
    (KS distance >= 0.03; the bound at 65536 draws is 0.013)."""
    g = sample_gumbel((65536,), generator=torch.Generator().manual_seed(1))
    assert_fits(g, gumbel_cdf, "Gumbel(0, 1)")


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_m2mix_lambda(alpha):
    """m²-mix's λ ~ Beta(α, α), one per step (the reference's ``np.random.beta(alpha, alpha)``).
    Catches Beta(2α, 2α) (KS distance >= 0.07; the bound at 8192 draws is 0.036)."""
    torch.manual_seed(4)
    lam = torch.stack([sample_m2mix_lambda(alpha) for _ in range(8192)])
    assert_fits(lam, beta_cdf(alpha, alpha), f"m²-mix λ ~ Beta({alpha}, {alpha})")


def _beta_mixture_cdf(x: float) -> float:
    """AdvancedBlur's β: U(0.5, 1) or U(1, 8), each with probability 1/2."""
    return 0.5 * uniform_cdf(0.5, 1.0)(x) + 0.5 * uniform_cdf(1.0, 8.0)(x)


def test_sample4geo_view_parameters(monkeypatch):
    """Every parameter the cross-view pipeline draws, captured where it reaches its pure
    function, against the reference's settings (Skyy93/Sample4Geo@498c651
    sample4geo/transforms.py:30-86; albumentations 1.3.1 defaults): flip with p 0.5, a quarter
    turn k in {1, 2, 3} with p 0.75; JPEG with p 0.5 at quality uniform in 90..100; colour jitter
    with p 0.5, factors U(0.85, 1.15), hue U(−0.15, 0.15); one of AdvancedBlur / Sharpen with
    p 0.15 each (kernel size uniform in {3, 5, 7}, σ U(0.2, 1), angle U(−π/2, π/2), β U(0.5, 1)
    or U(1, 8), noise U(0.9, 1.1); α U(0.2, 0.5), lightness U(0.5, 1)); one of grid / coarse
    dropout with p 0.15 each (10 to 25 holes, sides uniform in int(0.1 H)..int(0.2 H), corners
    uniform over the places the hole fits)."""
    seen: dict[str, list] = {}

    def record(name, fn=None):
        def spy(*args):
            seen.setdefault(name, []).append(args)
            return fn(*args) if fn is not None else args[0]

        return spy

    monkeypatch.setattr(cross_view, "flip_pair", record("flip", lambda p, s, f: (p, s)))
    monkeypatch.setattr(cross_view, "rotate_pair", record("rotate", lambda p, s, k: (p, s)))
    monkeypatch.setattr(s4g, "jpeg_round_trip", record("jpeg"))
    monkeypatch.setattr(ops, "color_jitter", record("jitter"))
    monkeypatch.setattr(s4g, "filter2d", record("filter"))
    monkeypatch.setattr(s4g, "advanced_blur_kernels", record("blur", s4g.advanced_blur_kernels))
    monkeypatch.setattr(s4g, "holes_mask", record("holes", lambda boxes, active, h, w: None))
    monkeypatch.setattr(s4g, "dropout", record("dropout"))
    n, h = 4096, 40
    torch.manual_seed(5)
    CrossViewAugment()(torch.zeros(n, 3, h, 64, dtype=torch.uint8), torch.zeros(n, 3, h, h, dtype=torch.uint8))
    ((_, _, flip),), ((_, _, k),) = seen["flip"], seen["rotate"]
    assert_discrete(flip.long(), [0, 1], [0.5, 0.5], "flip")
    assert_discrete(k, [0, 1, 2, 3], [0.25, 0.25, 0.25, 0.25], "quarter turns")  # 1 − 0.75, then 0.75 / 3 each
    cat = lambda name, i: torch.cat([call[i] for call in seen[name]])  # noqa: E731  (both views)
    assert_uniform_integers(cat("jpeg", 1), 90, 100, "JPEG quality")
    assert_discrete(cat("jpeg", 2).long(), [0, 1], [0.5, 0.5], "JPEG applied")
    for i, what in ((1, "brightness"), (2, "contrast"), (3, "saturation")):
        assert_fits(cat("jitter", i), uniform_cdf(0.85, 1.15), what)
    assert_fits(cat("jitter", 4), uniform_cdf(-0.15, 0.15), "hue")
    assert_discrete(cat("jitter", 5).long(), [0, 1], [0.5, 0.5], "jitter applied")
    blur_on, sharpen_on = seen["filter"][0::2], seen["filter"][1::2]  # per view: blur, then sharpen
    choice = torch.cat([b[2].long() + 2 * s[2].long() for b, s in zip(blur_on, sharpen_on)])
    assert_discrete(choice, [0, 1, 2], [0.7, 0.15, 0.15], "blur / sharpen / neither")
    ksize, sx, sy, angle, beta, noise = (cat("blur", i) for i in range(6))
    assert_discrete(ksize, [3, 5, 7], [1 / 3] * 3, "blur kernel size")
    for draws, low, high, what in (
        (sx, 0.2, 1.0, "σx"),
        (sy, 0.2, 1.0, "σy"),
        (angle, -math.pi / 2, math.pi / 2, "angle"),
        (noise[:, 3, 3], 0.9, 1.1, "kernel noise"),
    ):
        assert_fits(draws, uniform_cdf(low, high), what)
    assert_fits(beta, _beta_mixture_cdf, "blur β")
    kernels = torch.cat([s[1] for s in sharpen_on])  # (1 − α) identity + α [[-1, ...], [-1, 8 + L, -1], ...]
    alpha = -kernels[:, 0, 0]
    assert_fits(alpha, uniform_cdf(0.2, 0.5), "sharpen α")
    assert_fits((kernels[:, 1, 1] - 1 + alpha) / alpha - 8, uniform_cdf(0.5, 1.0), "sharpen lightness")
    assert_discrete(cat("dropout", 3), [0, 1, 2], [0.7, 0.15, 0.15], "grid / coarse / neither")
    boxes, active = cat("holes", 0), cat("holes", 1)
    assert_uniform_integers(active.sum(1), 10, 25, "holes per image")
    x0, y0, bw, bh = (boxes[..., i][active] for i in range(4))
    for size in (bw, bh):
        assert_uniform_integers(size, 4, 8, "hole side")  # int(0.1 · 40), int(0.2 · 40)
    # corner uniform in 0..(H − h) given h: (y0 + U) / (H − h + 1) ~ U(0, 1) for U ~ U(0, 1)
    u = torch.rand(2, y0.numel(), generator=torch.Generator().manual_seed(6))
    assert_fits((y0 + u[0]) / (h - bh + 1), uniform_cdf(0.0, 1.0), "hole top")
    widths = torch.cat([torch.full((n,), 64), torch.full((n,), h)])[:, None].expand_as(active)[active]  # pano, sat
    assert_fits((x0 + u[1]) / (widths - bw + 1), uniform_cdf(0.0, 1.0), "hole left")
