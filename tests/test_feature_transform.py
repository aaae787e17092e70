"""Feature transformation (Zhu et al. 2021) against the formulas written out per element."""

from __future__ import annotations

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
    out = FeatureTransform(pos_alpha=2.0, neg_alpha=1.6)(NegativeSet(q, k, queue))
    torch.testing.assert_close(queue, before)
    # recover λ⁺ per query from q̂ − q = (λ⁺ − 1)(q − k)
    lam = 1 + ((out.q - q) * (q - k)).sum(1) / ((q - k) ** 2).sum(1)
    assert lam.min() > 1.0 and lam.max() < 2.0 and lam.std() > 0.05
    torch.testing.assert_close(out.k, lam.unsqueeze(1) * k + (1 - lam.unsqueeze(1)) * q)
    assert out.source.shape == queue.shape and not torch.equal(out.source, queue)
    off = FeatureTransform(pos_alpha=0.0, neg_alpha=1.6)(NegativeSet(q, k, queue))
    assert off.q is q and off.k is k
