"""Feature transformation (Zhu et al. 2021) against the formulas written out per element."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.negatives import FeatureTransform, NegativeSet
from vissl_neg.negatives.feature_transform import extrapolate_positives, interpolate_negatives

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_extrapolation_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.0, 1.0]])
    q_hat, k_hat = extrapolate_positives(q, k, 1.5)
    torch.testing.assert_close(q_hat, torch.tensor([[1.5, -0.5]]))
    torch.testing.assert_close(k_hat, torch.tensor([[-0.5, 1.5]]))
    # harder positive: the extrapolated pair is less similar than the original one
    assert float((q_hat * k_hat).sum()) < float((q * k).sum())


def test_per_query_lambda_and_gradients():
    q = _unit(3, 4, seed=0).requires_grad_(True)
    k = _unit(3, 4, seed=1).requires_grad_(True)
    lam = torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)
    q_hat, k_hat = extrapolate_positives(q, k, lam)
    for b in range(3):
        torch.testing.assert_close(q_hat[b], lam[b] * q[b] + (1 - lam[b]) * k[b])
        torch.testing.assert_close(k_hat[b], lam[b] * k[b] + (1 - lam[b]) * q[b])
    (q_hat * k_hat).sum().backward()
    assert q.grad is not None and k.grad is None  # k is detached before mixing


def test_interpolation_by_hand_and_per_dimension():
    negs = _unit(5, 3, seed=2).requires_grad_(True)
    perm = torch.tensor([4, 0, 1, 2, 3])
    lam = torch.tensor([0.1, 0.2, 0.5, 0.7, 1.0], dtype=torch.float64)
    out = interpolate_negatives(negs, perm, lam)
    assert not out.requires_grad
    for i in range(5):
        torch.testing.assert_close(out[i], (lam[i] * negs[i] + (1 - lam[i]) * negs[perm[i]]).detach())
    per_dim = torch.rand(5, 3, dtype=torch.float64)
    out = interpolate_negatives(negs, perm, per_dim)
    for i in range(5):
        for d in range(3):
            want = per_dim[i, d] * negs[i, d] + (1 - per_dim[i, d]) * negs[perm[i], d]
            assert abs(float(out[i, d] - want.detach())) < 1e-12
    torch.testing.assert_close(interpolate_negatives(negs, torch.arange(5), 0.3), negs.detach())


def test_strategy_draws_lambdas_in_range_and_keeps_the_queue_untouched():
    torch.manual_seed(0)
    q, k, queue = _unit(64, 8, seed=3), _unit(64, 8, seed=4), _unit(100, 8, seed=5)
    before = queue.clone()
    out = FeatureTransform(pos_alpha=2.0, neg_alpha=1.6, draw="sample")(NegativeSet(q, k, queue))
    torch.testing.assert_close(queue, before)
    # recover λ⁺ per query from q̂ − q = (λ⁺ − 1)(q − k)
    lam = 1 + ((out.q - q) * (q - k)).sum(1) / ((q - k) ** 2).sum(1)
    assert lam.min() > 1.0 and lam.max() < 2.0 and lam.std() > 0.05
    torch.testing.assert_close(out.k, lam.unsqueeze(1) * k + (1 - lam.unsqueeze(1)) * q)
    assert out.source.shape == queue.shape and not torch.equal(out.source, queue)
    off = FeatureTransform(pos_alpha=0.0, neg_alpha=1.6)(NegativeSet(q, k, queue))
    assert off.q is q and off.k is k


def _reference_posneg(q, k, queue, pos_mask, neg_mask, indices):
    """The reference's mixing, transcribed with its random draws passed in:
    DTennant/CL-Visualizing-Feature-Transformation@c53d1be memory/mem_moco.py:157
    (``k = k.detach()``), 161 (queue detached), 208-209 (``--expolation_mask``: pos_mask += 1),
    214-219 (the mixes, ``queue[indices]`` with ``indices = torch.randperm(K)``).
    ``pos_mask``/``neg_mask`` are the Beta draws before the +1: scalars under the released
    command's ``--dim_mask none`` (mem_moco.py:198-200), (B, D) / (K, D) under ``both``."""
    k = k.detach()
    queue = queue.clone().detach()
    pos_mask = pos_mask + 1
    q_mix = pos_mask * q + (1 - pos_mask) * k
    k_mix = pos_mask * k + (1 - pos_mask) * q
    queue = neg_mask * queue + (1 - neg_mask) * queue[indices]
    return q_mix, k_mix, queue


def test_against_the_reference_transcription_scalar_and_per_element():
    q = _unit(6, 5, seed=10).requires_grad_(True)
    k, queue = _unit(6, 5, seed=11), _unit(9, 5, seed=12)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    for pos_mask, neg_mask in [
        (torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)),
        (torch.rand(6, 5, dtype=torch.float64), torch.rand(9, 5, dtype=torch.float64)),
    ]:
        want_q, want_k, want_n = _reference_posneg(q, k, queue, pos_mask, neg_mask, perm)
        got_q, got_k = extrapolate_positives(q, k, 1 + pos_mask)
        got_n = interpolate_negatives(queue, perm, neg_mask)
        torch.testing.assert_close(got_q, want_q)
        torch.testing.assert_close(got_k, want_k)
        torch.testing.assert_close(got_n, want_n)
        g_want = torch.autograd.grad((want_q * want_k).sum() + (want_q @ want_n.t()).sum(), q)[0]
        g_got = torch.autograd.grad((got_q * got_k).sum() + (got_q @ got_n.t()).sum(), q)[0]
        torch.testing.assert_close(g_got, g_want)


def _recovered_lambdas(out, q, k, queue):
    """λ⁺ (B,) from q̂ − q = (λ⁺ − 1)(q − k); λ⁻ per element is not recoverable without the
    permutation, so the negatives' spread is returned as n̂ − n (K, D)."""
    lam = 1 + ((out.q - q) * (q - k)).sum(1) / ((q - k) ** 2).sum(1)
    return lam, out.source - queue


@pytest.mark.parametrize("seed", [1, 3])  # randperm(50) has no fixed point under seed 1, two under 3
def test_draw_step_is_one_lambda_per_step_as_the_reference_command(seed):
    torch.manual_seed(seed)
    q, k, queue = _unit(32, 8, seed=3), _unit(32, 8, seed=4), _unit(50, 8, seed=5)
    assert FeatureTransform().draw == "step"  # the default is the reference's --dim_mask none
    out = FeatureTransform(pos_alpha=2.0, neg_alpha=1.6, draw="step")(NegativeSet(q, k, queue))
    lam, _ = _recovered_lambdas(out, q, k, queue)
    assert float(lam.max() - lam.min()) < 1e-9 and 1.0 < float(lam[0]) < 2.0
    # one λ⁻: n̂ − n = (1 − λ⁻)(n[perm] − n) for every row; n[perm] is some row, so the ratio
    # (n̂ − n) / (n_j − n) for the matching j is the same scalar everywhere. A fixed point of the
    # permutation (perm[i] = i) leaves its row as it was and says nothing of λ⁻: skipped.
    moved = [i for i in range(queue.shape[0]) if (out.source[i] - queue[i]).norm() > 1e-12]
    assert len(moved) >= queue.shape[0] - 5
    ratios = set()
    for i in moved:
        for j in range(queue.shape[0]):
            diff = queue[j] - queue[i]
            if diff.norm() > 1e-6:
                r = ((out.source[i] - queue[i]) @ diff) / (diff @ diff)
                if torch.allclose(out.source[i] - queue[i], r * diff, atol=1e-9):
                    ratios.add(round(float(r), 9))
    assert len(ratios) == 1


def test_draw_sample_and_dim_spread_the_lambdas():
    torch.manual_seed(2)
    q, k, queue = _unit(64, 8, seed=3), _unit(64, 8, seed=4), _unit(100, 8, seed=5)
    lam, _ = _recovered_lambdas(FeatureTransform(draw="sample")(NegativeSet(q, k, queue)), q, k, queue)
    assert lam.min() > 1.0 and lam.max() < 2.0 and lam.std() > 0.05
    out = FeatureTransform(draw="dim")(NegativeSet(q, k, queue))
    per_elem = 1 + (out.q - q) / (q - k)  # (B, D): λ⁺ per element
    assert per_elem.min() > 1.0 and per_elem.max() < 2.0 and per_elem.std(dim=1).min() > 0.01


def test_draw_key_is_checked():
    import pytest

    from vissl_neg.config import load_config
    from vissl_neg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"negatives.strategies\[0\].*draw"):
        load_config(overrides=["negatives.strategies=[{name: feature_transform, draw: batch}]"])
