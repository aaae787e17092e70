"""Debiased (Chuang et al. 2020) and hardness-weighted (Robinson et al. 2021) InfoNCE and the
dual-view loss, against plain math.exp / math.log loops written from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.losses import debiased_from_similarities, debiased_info_nce, dual_view_info_nce, info_nce

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _hand_rows(q, k, negatives, t, beta):
    """Per row, with math.exp over Python floats: (p, N, Σ_j w_j e^{s_j/T}), where
    w_j = e^{β s_j/T} / mean_j e^{β s_j/T}."""
    for i in range(q.shape[0]):
        negs = negatives if negatives.dim() == 2 else negatives[i]
        p = float(q[i] @ k[i])
        s = [float(q[i] @ n) for n in negs]
        n = len(s)
        imp = [math.exp(beta * x / t) for x in s]
        mean_imp = sum(imp) / n
        yield p, n, sum(w / mean_imp * math.exp(x / t) for w, x in zip(imp, s))


def _hand_debiased(q, k, negatives, t, tau_plus, beta):
    """Ng = max((Σ_j w_j e^{s_j/T} − τ⁺ N e^{p/T}) / (1 − τ⁺), N e^{−1/T}); −log(e^{p/T}/(e^{p/T}+Ng))."""
    total = 0.0
    for p, n, reweighted in _hand_rows(q, k, negatives, t, beta):
        ng = max((reweighted - tau_plus * n * math.exp(p / t)) / (1 - tau_plus), n * math.exp(-1 / t))
        total += -math.log(math.exp(p / t) / (math.exp(p / t) + ng))
    return total / q.shape[0]


@pytest.mark.parametrize("t,tau_plus,beta", [(0.5, 0.1, 0.0), (0.5, 0.1, 1.0), (0.2, 0.05, 0.5), (1.0, 0.3, 2.0)])
def test_matches_the_formula(t, tau_plus, beta):
    q, k, negs = _unit(4, 6, seed=0), _unit(4, 6, seed=1), _unit(9, 6, seed=2)
    got = debiased_info_nce(q, k, negs, t, tau_plus, beta)
    assert float(got) == pytest.approx(_hand_debiased(q, k, negs, t, tau_plus, beta), rel=1e-5)


def test_per_query_negatives_match_the_formula():
    q, k, negs = _unit(3, 4, seed=3), _unit(3, 4, seed=4), _unit(3, 7, 4, seed=5)
    got = debiased_info_nce(q, k, negs, 0.5, 0.1, 1.0)
    assert float(got) == pytest.approx(_hand_debiased(q, k, negs, 0.5, 0.1, 1.0), rel=1e-5)


@pytest.mark.parametrize("t", [0.07, 0.2, 0.5])
def test_reduces_to_info_nce_at_zero_prior_and_beta(t):
    q, k, negs = _unit(5, 8, seed=6), _unit(5, 8, seed=7), _unit(11, 8, seed=8)
    assert float(debiased_info_nce(q, k, negs, t, 0.0, 0.0)) == pytest.approx(float(info_nce(q, k, negs, t)), rel=1e-5)


def test_clamp_at_n_exp_minus_one_over_t():
    # q·k = 1 and every negative at q·n = −1 with a large prior: the corrected sum goes
    # negative and the clamp N e^{−1/T} takes over.
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    negs = torch.tensor([[-1.0, 0.0]] * 4, dtype=torch.float64)
    t, tau_plus = 0.5, 0.5
    n = 4
    want = -math.log(math.exp(1 / t) / (math.exp(1 / t) + n * math.exp(-1 / t)))
    assert float(debiased_info_nce(q, q, negs, t, tau_plus)) == pytest.approx(want, rel=1e-6)
    assert float(debiased_info_nce(q, q, negs, t, tau_plus)) == pytest.approx(
        _hand_debiased(q, q, negs, t, tau_plus, 0)
    )


def test_small_temperature_stays_finite_and_exact():
    q, k, negs = _unit(3, 5, seed=9), _unit(3, 5, seed=10), _unit(6, 5, seed=11)
    t = 0.01  # e^{1/T} = e^{100}: the naive float32 formula overflows
    got = debiased_from_similarities(*(x.float() for x in ((q * k).sum(1), q @ negs.t())), t, 0.1, 1.0)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(_hand_debiased(q, k, negs, t, 0.1, 1.0), rel=1e-4)


def test_gradient_matches_finite_differences_and_reaches_q_only_through_the_negative_set():
    """On tensors the loss differentiates q, k and the negatives (finite differences for all
    three); through the negative set (contrastive_loss, the trainer) only q gets gradient."""
    from vissl_neg.negatives.functional import contrastive_loss, negative_set

    q = _unit(2, 4, seed=12).requires_grad_(True)
    k, negs = _unit(2, 4, seed=13).requires_grad_(True), _unit(5, 4, seed=14).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *x: debiased_info_nce(*x, 0.5, 0.1, 1.0), (q, k, negs))
    loss = contrastive_loss(negative_set(q, k, negs), "debiased", temperature=0.5, tau_plus=0.1, beta=1.0)
    torch.testing.assert_close(loss, debiased_info_nce(q, k.detach(), negs.detach(), 0.5, 0.1, 1.0))
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and negs.grad is None


def test_prior_out_of_range():
    q = _unit(1, 3, seed=15)
    with pytest.raises(ValueError, match="tau_plus"):
        debiased_info_nce(q, q, q, 0.5, 1.0)


def test_dual_view_is_the_mean_of_the_crossed_losses():
    q1, k1, q2, k2 = (_unit(4, 6, seed=s) for s in (20, 21, 22, 23))
    negs = _unit(7, 6, seed=24)
    t = 0.2

    def hand(q, k):
        rows = []
        for i in range(q.shape[0]):
            pos = math.exp(float(q[i] @ k[i]) / t)
            rows.append(-math.log(pos / (pos + sum(math.exp(float(q[i] @ n) / t) for n in negs))))
        return sum(rows) / len(rows)

    want = 0.5 * (hand(q1, k2) + hand(q2, k1))
    assert float(dual_view_info_nce(q1, k1, q2, k2, negs, t)) == pytest.approx(want, rel=1e-6)
    # not the same-view pairing
    assert float(dual_view_info_nce(q1, k1, q2, k2, negs, t)) != pytest.approx(0.5 * (hand(q1, k1) + hand(q2, k2)))


def _hand_clamped(q, k, negatives, t, tau_plus, beta):
    """Share of rows whose corrected sum (Σ_j w_j e^{s_j/T} − τ⁺ N e^{p/T}) / (1 − τ⁺) is at
    or below the floor N e^{−1/T}."""
    clamped = 0
    for p, n, reweighted in _hand_rows(q, k, negatives, t, beta):
        clamped += (reweighted - tau_plus * n * math.exp(p / t)) / (1 - tau_plus) <= n * math.exp(-1 / t)
    return clamped / q.shape[0]


def _spread_pairs(b, d, seed):
    """Queries with positives at many different similarities, so the clamp hits some rows only."""
    q = _unit(b, d, seed=seed)
    noise = _unit(b, d, seed=seed + 1)
    mix = torch.linspace(0.05, 1.5, b, dtype=torch.float64).unsqueeze(1)
    return q, F.normalize(q + mix * noise, dim=1)


@pytest.mark.parametrize("t,tau_plus,beta", [(0.2, 0.02, 0.0), (0.2, 0.05, 1.0), (0.5, 0.2, 0.0), (0.5, 0.3, 2.0)])
def test_clamped_fraction_matches_a_direct_count(t, tau_plus, beta):
    from vissl_neg.losses import debiased_clamped_fraction

    q, k = _spread_pairs(40, 16, seed=20)
    negs = _unit(64, 16, seed=22)
    got = debiased_clamped_fraction(q, k, negs, t, tau_plus, beta)
    want = _hand_clamped(q, k, negs, t, tau_plus, beta)
    assert isinstance(got, float) and 0.0 < want < 1.0  # the clamp hits some rows, not all
    assert got == pytest.approx(want, abs=1e-6)


def test_clamped_fraction_extremes():
    from vissl_neg.losses import debiased_clamped_fraction

    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    negs = torch.tensor([[-1.0, 0.0]] * 4, dtype=torch.float64)
    assert debiased_clamped_fraction(q, q, negs, 0.5, 0.5) == 1.0  # the clamp case above
    assert debiased_clamped_fraction(q, q, negs, 0.5, 0.0) == 1.0  # every e^{s/T} at the floor
    q2, k2, n2 = _unit(8, 6, seed=23), _unit(8, 6, seed=24), _unit(30, 6, seed=25)
    assert debiased_clamped_fraction(q2, k2, n2, 0.5, 0.0) == 0.0


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_tau_plus_below_half_is_where_the_clamped_fraction_crosses_one_half(beta):
    from vissl_neg.losses import debiased_clamped_fraction, tau_plus_below_half

    q, k = _spread_pairs(41, 16, seed=26)
    negs = _unit(64, 16, seed=28)
    pos, neg = (q * k).sum(1), q @ negs.t()
    tau = tau_plus_below_half(pos, neg, 0.2, beta)
    assert 0.0 < tau < 1.0
    assert _hand_clamped(q, k, negs, 0.2, tau * (1 - 1e-6), beta) < 0.5
    assert _hand_clamped(q, k, negs, 0.2, tau * (1 + 1e-6), beta) >= 0.5
    assert debiased_clamped_fraction(q, k, negs, 0.2, tau * (1 - 1e-6), beta) < 0.5
