"""What the mutation run (tools/mutation.sh) found untested in vissl_neg/negatives/ and
vissl_neg/losses/: the checks' boundaries and messages, defaults, half-precision inputs, rows
that are not unit length, 3-D inputs to slerp, the exact end cases of the geodesic mixes,
explicit generators, the symmetric loss, the debiased loss's diagnostics, labels carried beside
the negatives, and the sources built from a config."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.errors import ConfigError
from vissl_neg.losses import (
    debiased_info_nce,
    false_negative_info_nce,
    info_nce,
    info_nce_from_similarities,
    symmetric_info_nce,
)
from vissl_neg.losses.contrastive import ContrastiveLoss, DebiasedLoss, InfoNCELoss
from vissl_neg.losses.debiased import (
    debiased_clamp_thresholds,
    debiased_clamped_fraction,
    debiased_clamped_from_similarities,
    debiased_from_similarities,
    tau_plus_below_half,
)
from vissl_neg.losses.false_negatives import false_negative_from_similarities
from vissl_neg.negatives import (
    Ambiguous,
    FalseNegatives,
    FeatureTransform,
    Filter,
    MemoryBank,
    NegativeQueue,
    NegativeSet,
)
from vissl_neg.negatives.ambiguous import gumbel_top_k, sample_gumbel, sample_without_replacement
from vissl_neg.negatives.beta import sample_beta
from vissl_neg.negatives.diagnostics import false_negative_rate, same_class_rate, synthetic_harder_fraction
from vissl_neg.negatives.false_negatives import suspect_false_negatives
from vissl_neg.negatives.feature_transform import lambda_shapes
from vissl_neg.negatives.filtering import hardest_positions
from vissl_neg.negatives.functional import (
    batch_negatives,
    contrast,
    contrastive_loss,
    false_negatives,
    mochi,
    negative_set,
    score,
)
from vissl_neg.negatives.geodesic import Geodesic, geodesic_mix, slerp
from vissl_neg.negatives.mochi import MixCoefficients, Mochi, mochi_mix, sample_mix_coefficients
from vissl_neg.negatives.negative_set import GatheredDot, full_precision, row_combination

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ---------------------------------------------------------------- checks: boundaries and messages
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Mochi(n_hard=0), "needs n_hard > 0, s >= 0, s_prime >= 0 and s + s_prime > 0"),
        (lambda: Mochi(s=-1), "needs n_hard > 0, s >= 0, s_prime >= 0 and s + s_prime > 0"),
        (lambda: Mochi(s_prime=-1), "needs n_hard > 0, s >= 0, s_prime >= 0 and s + s_prime > 0"),
        (lambda: Mochi(s=0, s_prime=0), "needs n_hard > 0, s >= 0, s_prime >= 0 and s + s_prime > 0"),
        (lambda: Geodesic(alpha=0.0), "needs alpha > 0"),
        (lambda: FeatureTransform(pos_alpha=-0.1), "needs pos_alpha >= 0, neg_alpha >= 0, not both 0"),
        (lambda: FeatureTransform(neg_alpha=-0.1), "needs pos_alpha >= 0, neg_alpha >= 0, not both 0"),
        (lambda: FeatureTransform(pos_alpha=0.0, neg_alpha=0.0), "needs pos_alpha >= 0, neg_alpha >= 0, not both 0"),
        (lambda: FeatureTransform(draw="batch"), "draw must be one of step, sample, dim, got 'batch'"),
        (lambda: Ambiguous(keep=0), "needs keep > 0, got 0"),
        (lambda: Ambiguous(a=0.0), "needs a > 0, got 0.0"),
        (lambda: Ambiguous(temperature=-0.1), "needs temperature >= 0 (0: the loss's), got -0.1"),
        (lambda: FalseNegatives(top=0), "needs top > 0, got 0"),
        (lambda: FalseNegatives(mode="drop"), "mode must be one of eliminate, attract, got 'drop'"),
        (lambda: FalseNegatives(threshold=1.01), "threshold must be a cosine in [-1, 1], got 1.01"),
        (lambda: FalseNegatives(threshold=-1.01), "threshold must be a cosine in [-1, 1], got -1.01"),
        (lambda: Filter(), "set exactly one of 'keep' (> 0) and 'fraction' (in (0, 1])"),
        (lambda: Filter(keep=4, fraction=0.5), "set exactly one of 'keep' (> 0) and 'fraction' (in (0, 1])"),
        (lambda: Filter(fraction=1.5), "'keep' must be > 0 and 'fraction' in (0, 1]"),
        (lambda: InfoNCELoss(temperature=0.0), "temperature must be > 0, got 0.0"),
        (lambda: InfoNCELoss(scale=0.0), "scale must be > 0, got 0.0"),
        (lambda: DebiasedLoss(tau_plus=1.0), "tau_plus must be in [0, 1), got 1.0"),
        (lambda: DebiasedLoss(beta=-0.5), "beta must be >= 0, got -0.5"),
    ],
)
def test_checks_refuse_with_their_message(make, message):
    with pytest.raises(ValueError) as info:
        make().check()
    assert str(info.value) == message


@pytest.mark.parametrize(
    "make",
    [
        lambda: Mochi(n_hard=1, s=0, s_prime=1),
        lambda: Mochi(n_hard=1, s=1, s_prime=0),
        lambda: Mochi(n_hard=1, s=3, s_prime=3),
        lambda: Geodesic(alpha=1e-3),
        lambda: FeatureTransform(pos_alpha=0.0, neg_alpha=0.5),
        lambda: FeatureTransform(pos_alpha=0.5, neg_alpha=0.0),
        lambda: FeatureTransform(pos_alpha=1.6, neg_alpha=1.6),
        lambda: Ambiguous(keep=1, a=1e-3, temperature=0.0),
        lambda: FalseNegatives(top=1, threshold=-1.0),
        lambda: FalseNegatives(top=1, threshold=1.0, mode="attract"),
        lambda: Filter(keep=1),
        lambda: Filter(fraction=1.0),
        lambda: InfoNCELoss(temperature=1e-3, scale=1e-3),
        lambda: DebiasedLoss(tau_plus=0.0, beta=0.0),
    ],
)
def test_checks_accept_their_boundary_values(make):
    make().check()


def test_limits_name_the_count_keys():
    assert Mochi(n_hard=7).limits() == {"n_hard": 7}
    assert Ambiguous(keep=5).limits() == {"keep": 5}
    assert FalseNegatives(top=3).limits() == {"top": 3}
    assert Filter(keep=9).limits() == {"keep": 9} and Filter(fraction=0.5).limits() == {}
    assert Filter(fraction=0.001).count(100) == 1 and Filter(keep=500).count(100) == 100


def test_the_sources_refuse_and_build_from_a_config():
    with pytest.raises(ValueError, match="queue size must be positive, got 0"):
        NegativeQueue(0, 4)
    assert NegativeQueue(1, 4).keys.shape == (1, 4)
    with pytest.raises(ValueError, match="a memory bank needs at least 2 items, got 1"):
        MemoryBank(1, 4)
    with pytest.raises(ValueError, match=r"memory bank momentum must be in \[0, 1\), got 1.0"):
        MemoryBank(4, 4, momentum=1.0)
    assert MemoryBank(2, 4).num_items == 2
    neg = SimpleNamespace(size=9, bank_momentum=0.3, bank_dtype="bfloat16")
    queue = NegativeQueue.from_config(neg, 6, 100, 8)
    assert queue.keys.shape == (9, 6) and queue.labels.dtype == torch.long and queue.labels.eq(-1).all()
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(9))
    bank = MemoryBank.from_config(neg, 6, 10, 8)
    assert bank.bank.shape == (10, 6) and bank.bank.dtype == torch.bfloat16 and bank.momentum == 0.3
    assert bank.labels.dtype == torch.long and torch.allclose(
        bank.gather(torch.arange(10)).norm(dim=1), torch.ones(10), atol=1e-2
    )
    with pytest.raises(ConfigError, match="negatives.size=9 must be below the 9 training images of the memory bank"):
        MemoryBank.from_config(neg, 6, 9, 8)


def test_sources_hand_over_queries_keys_and_labels():
    queue = NegativeQueue(5, 3)
    queue.enqueue(torch.ones(2, 3), torch.tensor([4, 7]))
    q, k = _unit(2, 3, seed=0, dtype=torch.float32), _unit(2, 3, seed=1, dtype=torch.float32)
    negs = queue.negatives(q, k, None, None, 5)
    assert negs.q is q and negs.k is k and negs.source is queue.keys and negs.labels.tolist() == [4, 7, -1, -1, -1]
    bank = MemoryBank(6, 3)
    bank.update(torch.tensor([0, 5]), torch.ones(2, 3), torch.tensor([2, 3]))
    negs = bank.negatives(q, k, None, torch.tensor([0, 5]), 4)
    assert negs.q is q and negs.k is k and negs.index.shape == (2, 4) and negs.labels is bank.labels
    assert negs.real_labels().shape == (2, 4)


# ---------------------------------------------------------------- defaults and generators
def test_default_arguments_are_the_papers():
    q, k, negs = _unit(4, 6, seed=2), _unit(4, 6, seed=3), _unit(9, 6, seed=4)
    pos, neg = (q * k).sum(1), q @ negs.t()
    assert torch.equal(debiased_info_nce(q, k, negs, 0.5, 0.1), debiased_info_nce(q, k, negs, 0.5, 0.1, 0.0))
    assert not torch.allclose(debiased_info_nce(q, k, negs, 0.5, 0.1), debiased_info_nce(q, k, negs, 0.5, 0.1, 1.0))
    assert torch.equal(
        debiased_from_similarities(pos, neg, 0.5, 0.1), debiased_from_similarities(pos, neg, 0.5, 0.1, 0.0)
    )
    for fn in (debiased_clamped_from_similarities,):
        assert torch.equal(fn(pos, neg, 0.05, 0.5), fn(pos, neg, 0.05, 0.5, 0.0))
    assert torch.equal(debiased_clamp_thresholds(pos, neg, 0.5), debiased_clamp_thresholds(pos, neg, 0.5, 0.0))
    assert not torch.allclose(debiased_clamp_thresholds(pos, neg, 0.5), debiased_clamp_thresholds(pos, neg, 0.5, 2.0))
    assert debiased_clamped_fraction(q, k, negs, 0.05, 0.5) == debiased_clamped_fraction(q, k, negs, 0.05, 0.5, 0.0)
    a, b = _unit(5, 6, seed=5), _unit(5, 6, seed=6)
    assert torch.equal(symmetric_info_nce(a, b, 1.0), symmetric_info_nce(a, b, 1.0, 0.0))
    assert InfoNCELoss()(pos, neg) == info_nce_from_similarities(pos, neg, 0.2)
    marks = torch.zeros_like(neg, dtype=torch.bool)
    marks[:, :2] = True
    eliminated = false_negative_from_similarities(pos, neg, 0.2, marks, "eliminate")
    assert (
        InfoNCELoss()(pos, neg, marks)
        == eliminated
        != false_negative_from_similarities(pos, neg, 0.2, marks, "attract")
    )


def test_tau_plus_below_half_is_the_median_threshold_capped_at_one():
    g = torch.Generator().manual_seed(7)
    pos, neg = torch.rand(5, generator=g, dtype=torch.float64), torch.rand(5, 12, generator=g, dtype=torch.float64)
    thresholds = debiased_clamp_thresholds(pos, neg, 0.5).sort().values
    assert tau_plus_below_half(pos, neg, 0.5) == min(1.0, float(thresholds[2]))  # the 3rd of 5
    assert tau_plus_below_half(pos[:4], neg[:4], 0.5) == min(
        1.0, float(debiased_clamp_thresholds(pos[:4], neg[:4], 0.5).sort().values[1])
    )
    big = tau_plus_below_half(torch.full((3,), -1.0, dtype=torch.float64), torch.ones(3, 4, dtype=torch.float64), 0.5)
    assert big == 1.0  # thresholds above 1 are capped
    # the threshold is the τ⁺ from which the estimate reaches the clamp
    for b in range(5):
        t = float(debiased_clamp_thresholds(pos[b : b + 1], neg[b : b + 1], 0.5))
        if 0.0 < t < 0.99:
            assert float(debiased_clamped_from_similarities(pos[b : b + 1], neg[b : b + 1], 0.5, t + 1e-6)) == 1.0
            assert float(debiased_clamped_from_similarities(pos[b : b + 1], neg[b : b + 1], 0.5, t - 1e-6)) == 0.0


def test_samplers_use_the_generator_they_are_given():
    def twice(draw):
        torch.manual_seed(1)  # the global generator differs between the two draws; the explicit one decides
        first = draw(torch.Generator().manual_seed(3))
        torch.manual_seed(2)
        return first, draw(torch.Generator().manual_seed(3))

    for draw in (
        lambda g: sample_beta(1.0, (4, 3), None, g),
        lambda g: sample_gumbel((4, 3), None, g),
        lambda g: sample_without_replacement(torch.zeros(4, 9), 3, g),
        lambda g: MemoryBank(10, 2).sample(torch.arange(4), 6, g),
        lambda g: torch.cat(
            [c.flatten().double() for c in vars(sample_mix_coefficients(3, 5, 4, 2, None, g)).values()]
        ),
        lambda g: torch.cat(
            [c.flatten().double() for c in vars(sample_mix_coefficients(3, 5, 4, 2, None, g, beta_alpha=1.0)).values()]
        ),
    ):
        a, b = twice(draw)
        assert torch.equal(a, b)
    assert torch.equal(
        sample_beta(1.0, (6,), None, torch.Generator().manual_seed(4)),
        torch.rand(6, generator=torch.Generator().manual_seed(4)),
    )


# ---------------------------------------------------------------- half precision, 3-D, non-unit rows
def test_losses_score_half_precision_similarities_in_float32():
    g = torch.Generator().manual_seed(8)
    pos, neg = (torch.rand(4, generator=g) * 2 - 1).bfloat16(), (torch.rand(4, 7, generator=g) * 2 - 1).bfloat16()
    marks = torch.zeros(4, 7, dtype=torch.bool)
    marks[:, 0] = True
    want = info_nce_from_similarities(pos.float(), neg.float(), 0.07)
    got = info_nce_from_similarities(pos, neg, 0.07)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    for cancel in ("eliminate", "attract"):
        got = false_negative_from_similarities(pos, neg, 0.07, marks, cancel)
        assert got.dtype == torch.float32
        assert torch.equal(got, false_negative_from_similarities(pos.float(), neg.float(), 0.07, marks, cancel))
    got = debiased_from_similarities(pos, neg, 0.07, 0.1, 1.0)
    assert got.dtype == torch.float32 and torch.equal(
        got, debiased_from_similarities(pos.float(), neg.float(), 0.07, 0.1, 1.0)
    )
    assert full_precision(pos).dtype == torch.float32 and full_precision(pos.double()).dtype == torch.float64


def test_half_precision_sources_are_read_in_float32():
    src = _unit(12, 5, seed=9, dtype=torch.float32).bfloat16()
    q, k = _unit(3, 5, seed=10, dtype=torch.float32), _unit(3, 5, seed=11, dtype=torch.float32)
    negs = NegativeSet(q, k, src)
    assert negs.dense_similarities().dtype == torch.float32
    torch.testing.assert_close(negs.key_similarities(), k @ src.float().t(), atol=1e-2, rtol=0)
    rows = torch.tensor([[0, 3], [5, 5], [11, 2]])
    coef = torch.tensor([[0.5, 0.25], [1.0, -1.0], [0.3, 0.7]], dtype=torch.float64)
    out = row_combination(src, rows, rows.flip(1), coef, 1 - coef)
    assert out.dtype == torch.float64  # the wider of the source's and the coefficients' types
    want = coef.unsqueeze(-1) * src.double()[rows] + (1 - coef).unsqueeze(-1) * src.double()[rows.flip(1)]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    empty = row_combination(src, rows[:, :0], rows[:, :0], coef[:, :0], coef[:, :0])
    assert empty.shape == (3, 0, 5) and empty.dtype == torch.float64


def test_gathered_dot_over_many_rows_equals_the_dense_product():
    """The chunked path for sources above DENSE_ROWS: the same similarities and q's gradient."""
    src = _unit(40, 6, seed=12, dtype=torch.float32).bfloat16()
    rows = torch.randint(40, (3, 9), generator=torch.Generator().manual_seed(0))
    for batch in (3, 1):
        q = _unit(batch, 6, seed=13, dtype=torch.float32).requires_grad_(True)
        r = rows[:batch]
        got = GatheredDot.apply(q, src, r)
        want = torch.einsum("bd,bkd->bk", q, src.float()[r])
        torch.testing.assert_close(got, want)
        (grad_got,) = torch.autograd.grad((got * torch.arange(9.0)).sum(), q)
        (grad_want,) = torch.autograd.grad((want * torch.arange(9.0)).sum(), q)
        torch.testing.assert_close(grad_got, grad_want)
    import vissl_neg.negatives.negative_set as ns

    q, k = _unit(3, 6, seed=14, dtype=torch.float32), _unit(3, 6, seed=15, dtype=torch.float32)
    dense = NegativeSet(q, k, src, index=rows)
    want_real, want_keys = dense.real_similarities(), dense.key_similarities()
    old = ns.DENSE_ROWS
    ns.DENSE_ROWS = 10  # the 40-row source now counts as large
    try:
        large = NegativeSet(q, k, src, index=rows)
        # the dense product runs in the source's bf16, the gathered one in float32
        torch.testing.assert_close(large.real_similarities(), want_real, rtol=0, atol=2e-2)
        torch.testing.assert_close(large.key_similarities(), want_keys, rtol=0, atol=2e-2)
        assert not torch.equal(large.real_similarities(), want_real)
        assert not torch.equal(large.key_similarities(), want_keys)
        shared = NegativeSet(q, k, src)  # every row for every query: the dense product, large or not
        torch.testing.assert_close(shared.key_similarities(), k.bfloat16().float() @ src.float().t(), rtol=0, atol=2e-2)
        assert large.dense is None  # no (B, M) product was made
    finally:
        ns.DENSE_ROWS = old


def test_chunked_row_combination_and_gathered_dot_equal_one_pass(monkeypatch):
    """Above CHUNK pairs (rows) the work is split; the result is the same."""
    import vissl_neg.negatives.negative_set as ns

    src = _unit(20, 4, seed=44)
    rows = torch.randint(20, (3, 7), generator=torch.Generator().manual_seed(4))
    coef = torch.rand(3, 7, generator=torch.Generator().manual_seed(5))  # float32 on a float64 source
    q = _unit(3, 4, seed=45)
    whole = row_combination(src, rows, rows.flip(1), coef, 1 - coef)
    norms = row_combination(src, rows, rows.flip(1), coef, 1 - coef, norm=True)
    dots = GatheredDot.apply(q, src, rows)
    assert whole.dtype == torch.float64
    want = coef.double().unsqueeze(-1) * src[rows] + (1 - coef).double().unsqueeze(-1) * src[rows.flip(1)]
    torch.testing.assert_close(whole, want, rtol=0, atol=1e-12)
    monkeypatch.setattr(ns, "CHUNK", 4)
    torch.testing.assert_close(row_combination(src, rows, rows.flip(1), coef, 1 - coef), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        row_combination(src, rows, rows.flip(1), coef, 1 - coef, norm=True), norms, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(GatheredDot.apply(q, src, rows), dots, rtol=0, atol=1e-12)


def test_the_debiased_loss_shifts_each_row_by_its_own_largest_logit():
    """At T = 0.01 one query's logits sit near 100, another's near −100: a shared shift would
    underflow the second row's exponentials to 0 (a log of 0); per row they stay finite."""
    q = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    k = F.normalize(torch.tensor([[1.0, 0.05], [1.0, 0.2]]), dim=1)  # q·k: 0.999, -0.98
    negs = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.15], [1.0, 0.25]]), dim=1)  # q·n near 1 and near -1
    loss = debiased_info_nce(q, k, negs, 0.01, 0.1, 1.0)
    want = debiased_info_nce(q.double(), k.double(), negs.double(), 0.01, 0.1, 1.0)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(float(want), rel=1e-4)


def test_mochi_mixes_of_rows_that_are_not_unit():
    """normalise(w h_i + (1 − w) h_j) and normalise(wq q + (1 − wq) h_jq) also for a query and
    rows of any length, in float64 to 1e-12."""
    g = torch.Generator().manual_seed(16)
    q = torch.randn(2, 5, generator=g, dtype=torch.float64) * 3
    negs = torch.randn(8, 5, generator=g, dtype=torch.float64) * torch.linspace(0.2, 4, 8, dtype=torch.float64)[:, None]
    c = sample_mix_coefficients(2, 8, 3, 2, generator=torch.Generator().manual_seed(1))
    out = mochi_mix(q, negs, c)
    for b in range(2):
        for s in range(3):
            w = float(c.w[b, s])
            torch.testing.assert_close(
                out[b, s], F.normalize(w * negs[c.i[b, s]] + (1 - w) * negs[c.j[b, s]], dim=0), rtol=0, atol=1e-12
            )
        for s in range(2):
            w = float(c.wq[b, s])
            torch.testing.assert_close(
                out[b, 3 + s], F.normalize(w * q[b] + (1 - w) * negs[c.jq[b, s]], dim=0), rtol=0, atol=1e-12
            )


def test_geodesic_mixes_slerp_the_directions_of_rows_that_are_not_unit():
    g = torch.Generator().manual_seed(17)
    q = torch.randn(2, 5, generator=g, dtype=torch.float64) * 2.5
    negs = torch.randn(8, 5, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3, 8, dtype=torch.float64)[:, None]
    c = sample_mix_coefficients(2, 8, 3, 2, generator=torch.Generator().manual_seed(2), beta_alpha=1.0)
    out = geodesic_mix(q, negs, c)
    u, uq = F.normalize(negs, dim=1), F.normalize(q, dim=1)
    for b in range(2):
        torch.testing.assert_close(out[b, :3], slerp(u[c.i[b]], u[c.j[b]], c.w[b].double()), rtol=0, atol=1e-9)
        torch.testing.assert_close(
            out[b, 3:], slerp(uq[b].expand(2, -1), u[c.jq[b]], c.wq[b].double()), rtol=0, atol=1e-9
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_geodesic_mixes_of_equal_and_opposite_rows(dtype):
    """Equal rows mix to themselves; exactly opposite rows (any great circle is a geodesic) go
    to the nearer end (*ours*); a query opposite its negative likewise; never NaN."""
    a = _unit(3, 4, seed=18, dtype=dtype)
    negs = torch.cat([a, -a])  # rows 0-2 and their opposites 3-5
    q = -a[:1]
    lam = torch.tensor([[0.3, 0.7, 0.5, 0.2]])
    c = MixCoefficients(
        i=torch.tensor([[0, 0, 1, 2]]),
        j=torch.tensor([[0, 3, 4, 5]]),
        w=lam,
        jq=torch.tensor([[0, 0]]),
        wq=torch.tensor([[0.2, 0.4]]),
    )
    out = geodesic_mix(q, negs, c)[0]
    assert torch.isfinite(out).all()
    tol = dict(rtol=0, atol=1e-5)
    torch.testing.assert_close(out[0], a[0], **tol)  # equal rows
    torch.testing.assert_close(out[1], a[0], **tol)  # λ = 0.7 >= 0.5: the first end
    torch.testing.assert_close(out[2], a[1], **tol)  # λ = 0.5 >= 0.5: the first end
    torch.testing.assert_close(out[3], -a[2], **tol)  # λ = 0.2: the second end
    torch.testing.assert_close(out[4], a[0], **tol)  # the query at weight 0.2 < 0.5: its negative
    torch.testing.assert_close(out[5], a[0], **tol)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(6, dtype=out.dtype), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_geodesic_query_mixes_with_the_query_itself_stay_finite(dtype):
    """A query that is one of its own negatives (cosine 1 up to rounding) mixes to itself."""
    q = _unit(64, 7, seed=46, dtype=dtype) * 1.7
    c = MixCoefficients(
        i=torch.zeros(64, 0, dtype=torch.long),
        j=torch.zeros(64, 0, dtype=torch.long),
        w=torch.zeros(64, 0),
        jq=torch.arange(64).unsqueeze(1),
        wq=torch.full((64, 1), 0.3),
    )
    out = geodesic_mix(q, q, c)[:, 0]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.normalize(q, dim=1), rtol=0, atol=1e-5)


def test_slerp_on_three_dimensional_batches_equals_it_row_by_row():
    a = _unit(2, 3, 5, seed=19)
    b = _unit(2, 3, 5, seed=20)
    b[0, 1] = -a[0, 1]  # exactly opposite
    b[1, 2] = a[1, 2]  # equal
    lam = torch.rand(2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = slerp(a, b, lam)
    flat = slerp(a.reshape(6, 5), b.reshape(6, 5), lam.reshape(6))
    torch.testing.assert_close(out.reshape(6, 5), flat, rtol=0, atol=1e-12)
    assert torch.isfinite(out).all()  # opposite ends: (1 − λ)·π from a along a fixed great circle
    assert float((out[0, 1] * a[0, 1]).sum()) == pytest.approx(math.cos((1 - float(lam[0, 1])) * math.pi), abs=1e-9)
    torch.testing.assert_close(out[1, 2], a[1, 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(slerp(a, b, 0.25).reshape(6, 5), slerp(a.reshape(6, 5), b.reshape(6, 5), 0.25))
    torch.testing.assert_close(slerp(a, b, torch.tensor(0.25, dtype=torch.float64)), slerp(a, b, 0.25))
    a2, b2, lam2 = a.reshape(6, 5), b.reshape(6, 5), lam.reshape(6)
    torch.testing.assert_close(slerp(a2, b2, lam2.unsqueeze(1)), flat, rtol=0, atol=1e-12)  # (B, 1) as (B,)


# ---------------------------------------------------------------- the symmetric loss
def test_symmetric_info_nce_is_the_mean_of_both_directions():
    a, b = _unit(5, 6, seed=21), _unit(5, 6, seed=22)
    for scale, eps in ((math.log(1 / 0.07), 0.0), (torch.tensor(math.log(10.0), dtype=torch.float64), 0.1)):
        s = math.exp(float(scale))
        total = 0.0
        for x, y in ((a, b), (b, a)):
            for i in range(5):
                logits = [s * float(x[i] @ y[j]) for j in range(5)]
                top = max(logits)
                logz = top + math.log(sum(math.exp(v - top) for v in logits))
                nll = [logz - v for v in logits]
                total += (1 - eps) * nll[i] + eps * sum(nll) / 5
        assert symmetric_info_nce(a, b, scale, eps).item() == pytest.approx(total / 10, rel=1e-10)


# ---------------------------------------------------------------- the debiased loss's diagnostics
def test_debiased_loss_logs_its_clamped_share_and_notes_it_once_most_are():
    q, negs = _unit(8, 6, seed=23), _unit(30, 6, seed=25)
    spread = torch.linspace(0.12, 1.2, 8, dtype=torch.float64)[:, None]
    k = F.normalize(q + spread * _unit(8, 6, seed=24), dim=1)  # positives from near q to far: some clamped
    pos, sims = (q * k).sum(1), q @ negs.t()
    loss = DebiasedLoss(temperature=0.2, tau_plus=0.3, beta=0.7)
    values = loss.diagnostics(pos, sims)
    assert list(values) == ["loss/debiased_clamped_fraction"]
    fraction = float(values["loss/debiased_clamped_fraction"])
    assert fraction == 0.625  # 5 of 8; 6 of 8 at β = 0 or τ⁺ = 0.7, 8 of 8 at T = 0.3, τ⁺ = 0.7
    note = loss.first_log_note(pos, sims, {"loss/debiased_clamped_fraction": fraction})
    below = tau_plus_below_half(pos, sims, 0.2, 0.7)
    assert note == (
        f"the debiased loss clamps Ng to N·e^(-1/T) for 62% of the queries at loss.tau_plus=0.3 "
        f"with 30 negatives per query (its τ⁺ correction then does nothing); on this batch loss.tau_plus below "
        f"{below:.3g} keeps fewer than half clamped"
    )
    assert loss.first_log_note(pos, sims, {"loss/debiased_clamped_fraction": 0.5}) is None
    assert loss.first_log_note(pos, sims, {}) is None
    assert loss(pos, sims) == debiased_from_similarities(pos, sims, 0.2, 0.3, 0.7)
    with pytest.raises(ValueError, match="^the debiased loss does not cancel suspected false negatives$"):
        loss(pos, sims, torch.zeros_like(sims, dtype=torch.bool))
    base = ContrastiveLoss()
    assert base.diagnostics(pos, sims) == {} and base.first_log_note(pos, sims, {}) is None


# ---------------------------------------------------------------- the functional doors
def test_similarities_refuse_negatives_of_another_rank():
    q = _unit(2, 3, seed=47)
    with pytest.raises(ValueError) as info:
        info_nce(q, q, torch.zeros(3), 0.2)
    assert str(info.value) == "negatives must be (K, D) or (B, K, D), got shape (3,)"


def test_negative_set_carries_labels_and_per_query_negatives():
    q, k = _unit(2, 4, seed=26), _unit(2, 4, seed=27)
    shared, labels = _unit(5, 4, seed=28), torch.tensor([3, -1, 0, 2, 3])
    negs = negative_set(q, k, shared, labels)
    assert negs.labels is labels and negs.index is None
    per_query = _unit(2, 3, 4, seed=29)
    negs = negative_set(q, k, per_query, torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert negs.labels.tolist() == [1, 2, 3, 4, 5, 6] and negs.index.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert negs.real_labels().tolist() == [[1, 2, 3], [4, 5, 6]]
    torch.testing.assert_close(negs.real_similarities(), torch.einsum("bd,bkd->bk", q, per_query))
    with pytest.raises(ValueError, match=r"negatives must be \(K, D\) or \(B, K, D\) with B = 2, got \(3, 3, 4\)"):
        negative_set(q, k, _unit(3, 3, 4, seed=30))


def test_batch_negatives_are_the_other_keys_with_unknown_labels():
    q, k = _unit(4, 3, seed=31), _unit(4, 3, seed=32)
    negs = batch_negatives(q, k)
    assert negs.index.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert negs.real_labels().eq(-1).all() and negs.real_labels().shape == (4, 3)
    torch.testing.assert_close(negs.real_similarities(), torch.stack([q[i] @ k[negs.index[i]].t() for i in range(4)]))


def test_strategy_doors_take_a_set_or_tensors_not_both():
    q, k, queue = _unit(2, 4, seed=33), _unit(2, 4, seed=34), _unit(10, 4, seed=35)
    negs = negative_set(q, k, queue)
    with pytest.raises(
        TypeError, match=r"^mochi\(negs, \*\*params\) or mochi\(q, k, negatives, \*\*params\), not both$"
    ):
        mochi(negs, k, n_hard=2, s=1, s_prime=0)
    with pytest.raises(TypeError, match="not both"):
        mochi(negs, None, queue, n_hard=2, s=1, s_prime=0)
    with pytest.raises(TypeError, match=r"^mochi\(q, k, negatives, \*\*params\) needs q, k and negatives$"):
        mochi(q, k, n_hard=2, s=1, s_prime=0)
    with pytest.raises(TypeError, match="needs q, k and negatives"):
        mochi(q, None, queue, n_hard=2, s=1, s_prime=0)
    assert mochi.__name__ == "mochi" and "Mochi" in mochi.__doc__
    torch.manual_seed(0)
    via_tensors = mochi(q, k, queue, n_hard=3, s=2, s_prime=1)
    torch.manual_seed(0)
    via_set = mochi(negs, n_hard=3, s=2, s_prime=1)
    assert via_tensors.q is q and torch.equal(via_tensors.synthetic_vectors(), via_set.synthetic_vectors())
    assert via_tensors.synthetic_vectors().shape == (2, 3, 4)


def test_score_marks_no_synthetic_negative_as_suspected_and_the_loss_cancels_the_marked():
    q, k, queue = _unit(3, 5, seed=36), _unit(3, 5, seed=37), _unit(12, 5, seed=38)
    negs = false_negatives(q, k, queue, top=2, threshold=-1.0, mode="attract")
    assert negs.cancel == "attract"
    torch.manual_seed(1)
    negs = mochi(negs, n_hard=4, s=2, s_prime=1)
    pos, real, syn, marks = score(negs)
    assert marks.dtype == torch.bool and marks.shape == (3, 15) and not marks[:, 12:].any()
    assert torch.equal(marks[:, :12], negs.suspected)
    loss, *_ = contrast(negs, InfoNCELoss(temperature=0.2))
    want = false_negative_info_nce(
        q, k, torch.cat([queue.expand(3, -1, -1), negs.synthetic_vectors()], 1), 0.2, marks, "attract"
    )
    torch.testing.assert_close(loss, want)
    assert contrastive_loss(negs, temperature=0.2, scale=2.0) == 2 * contrastive_loss(negs, temperature=0.2)
    with pytest.raises(ValueError, match="^unknown loss 'nce', one of info_nce, debiased$"):
        contrastive_loss(negs, name="nce")


def test_suspects_only_scores_above_the_threshold():
    scores = torch.tensor([[0.5, 0.2, 0.9, 0.5]])
    assert suspect_false_negatives(scores, 3, 0.5).tolist() == [[False, False, True, False]]  # 0.5 is not above 0.5
    assert suspect_false_negatives(scores, 3, 0.49).tolist() == [[True, False, True, True]]


def test_draw_and_keep_bounds():
    logits = torch.zeros(2, 4)
    assert gumbel_top_k(logits, 1, torch.tensor([[0.0, 2.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0]])).tolist() == [[1], [0]]
    q = _unit(2, 4, seed=42)
    with pytest.raises(ValueError) as info:
        Ambiguous(keep=2)(NegativeSet(q, q, _unit(5, 4, seed=43)))
    assert str(info.value) == "ambiguous needs the loss temperature: build it with build_strategies or set temperature"
    assert gumbel_top_k(logits, 4, torch.zeros(2, 4)).sort(1).values.tolist() == [[0, 1, 2, 3]] * 2
    for k in (0, 5):
        with pytest.raises(ValueError, match=f"cannot draw {k} of 4 negatives"):
            gumbel_top_k(logits, k, torch.zeros(2, 4))
        with pytest.raises(ValueError, match=f"cannot keep {k} of 4 negatives"):
            hardest_positions(logits, k)
    assert hardest_positions(torch.tensor([[0.1, 0.9, 0.5]]), 3).tolist() == [[1, 2, 0]]
    with pytest.raises(ValueError, match="draw must be one of step, sample, dim, got 'x'"):
        lambda_shapes("x", 1, 1, 1)


def test_diagnostics_count_label_zero_and_ignore_unknown():
    sims = torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.2, 0.9, 0.8, 0.1]])
    labels = torch.tensor([0, -1, 0, 1])
    query = torch.tensor([0, 1])
    # top 2: query 0 -> labels 0 (same), -1 (unknown); query 1 -> -1, 0 (other): 1 same of 2 known
    assert float(false_negative_rate(sims, labels, query, 2)) == pytest.approx(0.5)
    assert float(false_negative_rate(sims, labels, query, 10)) == pytest.approx(3 / 6)  # top capped at K
    assert float(false_negative_rate(sims[:1], labels, query[:1], 1)) == 1.0  # one known, the same class
    per_query = torch.tensor([[0, 0, 2, -1], [1, -1, -1, -1]])
    assert float(false_negative_rate(sims, per_query, query, 2)) == pytest.approx(2 / 2)
    assert float(same_class_rate(labels, query)) == pytest.approx(3 / 6)
    many = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.6]])  # more queries than negatives
    assert float(false_negative_rate(many, torch.tensor([2, 5]), torch.tensor([2, 2, 5]), 1)) == pytest.approx(2 / 3)
    assert float(same_class_rate(torch.tensor([0, -1]), torch.tensor([0]))) == 1.0
    assert float(synthetic_harder_fraction(torch.tensor([[0.5, 0.2]]), torch.tensor([[0.5, 0.6, 0.1, 0.7]]))) == 0.5


def test_with_refuses_changes_that_would_break_the_set():
    q, k, queue = _unit(2, 4, seed=39), _unit(2, 4, seed=40), _unit(6, 4, seed=41)
    negs = NegativeSet(q, k, queue)
    dense = negs.dense_similarities()
    assert negs.with_(k=k).dense is dense  # the cached product survives a change of k
    assert negs.with_(q=q * 2).dense is None and negs.with_(source=queue * 2).dense is None
    torch.manual_seed(0)
    mixed = Mochi(n_hard=2, s=1, s_prime=0)(negs)
    with pytest.raises(
        ValueError, match="^the negative source cannot change after synthetic negatives were mixed from it$"
    ):
        mixed.with_(source=queue)
    assert mixed.with_(q=q).synthetic == mixed.synthetic
    marked = FalseNegatives(top=1, threshold=-1.0)(negs)
    with pytest.raises(
        ValueError, match=r"^the real negatives cannot change without their suspected marks; use restrict\(\)$"
    ):
        marked.with_(index=torch.zeros(2, 3, dtype=torch.long))
    assert torch.equal(NegativeSet(q, k, queue, labels=torch.arange(6)).real_labels(), torch.arange(6))
    assert NegativeSet(q, k, queue).real_labels() is None
    two = Mochi(n_hard=2, s=1, s_prime=1)(mixed)
    assert two.synthetic_vectors().shape == (2, 3, 4) and two.synthetic_similarities().shape == (2, 3)
