"""InfoNCE against a hand computation with math.exp / math.log."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.losses import info_nce, info_nce_from_similarities, similarities
from vissl_neg.negatives import NegativeQueue

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b))


def _hand_loss(q, k, negatives, t):
    """mean_i −log( e^{q_i·k_i/T} / (e^{q_i·k_i/T} + Σ_j e^{q_i·n_j/T}) ), one row at a time."""
    total = 0.0
    for i in range(q.shape[0]):
        negs = negatives if negatives.dim() == 2 else negatives[i]
        pos = math.exp(_dot(q[i], k[i]) / t)
        den = pos + sum(math.exp(_dot(q[i], n) / t) for n in negs)
        total += -math.log(pos / den)
    return total / q.shape[0]


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_shared_negatives_match_hand_computation(t):
    q, k, negs = _unit(3, 5, seed=0), _unit(3, 5, seed=1), _unit(6, 5, seed=2)
    got = info_nce(q, k, negs, t)
    assert got.dim() == 0
    assert float(got) == pytest.approx(_hand_loss(q, k, negs, t), rel=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_per_query_negatives_match_hand_computation(t):
    q, k, negs = _unit(4, 3, seed=3), _unit(4, 3, seed=4), _unit(4, 5, 3, seed=5)
    assert float(info_nce(q, k, negs, t)) == pytest.approx(_hand_loss(q, k, negs, t), rel=1e-6)
    # shared negatives broadcast to (B, K, D) give the same loss as (K, D)
    shared = _unit(5, 3, seed=6)
    a = info_nce(q, k, shared, t)
    b = info_nce(q, k, shared.unsqueeze(0).expand(4, -1, -1), t)
    assert float(a) == pytest.approx(float(b), rel=1e-6, abs=1e-6)  # the loss is computed in float32


def test_float32_inputs():
    q, k, negs = (x.float() for x in (_unit(2, 4, seed=7), _unit(2, 4, seed=8), _unit(9, 4, seed=9)))
    assert float(info_nce(q, k, negs, 0.2)) == pytest.approx(_hand_loss(q, k, negs, 0.2), rel=1e-5)


@pytest.mark.parametrize("num_neg,t", [(1, 0.2), (4, 0.2), (7, 0.5), (3, 1.0)])
def test_closed_form_orthogonal_negatives(num_neg, t):
    """q = k, every negative orthogonal to q: pos = 1, neg = 0 ->
    loss = −log(e^{1/T} / (e^{1/T} + K)) = log(1 + K·e^{−1/T})."""
    dim = num_neg + 1
    eye = torch.eye(dim, dtype=torch.float64)
    q = eye[:1].repeat(2, 1)
    negs = eye[1:]
    expected = math.log(1.0 + num_neg * math.exp(-1.0 / t))
    assert float(info_nce(q, q.clone(), negs, t)) == pytest.approx(
        expected, rel=1e-6, abs=1e-6
    )  # the loss is computed in float32


def test_closed_form_opposite_and_equal_negatives():
    q = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    t, kneg = 0.25, 5
    # negatives = −q: neg = −1 -> log(1 + K e^{−2/T})
    got = info_nce(q, q, (-q).repeat(kneg, 1), t)
    assert float(got) == pytest.approx(
        math.log(1 + kneg * math.exp(-2 / t)), rel=1e-6, abs=1e-6
    )  # the loss is computed in float32
    # negatives = q: every logit equal -> log(K + 1)
    got = info_nce(q, q, q.repeat(kneg, 1), t)
    assert float(got) == pytest.approx(math.log(kneg + 1), rel=1e-6, abs=1e-6)  # the loss is computed in float32


def test_similarities_shapes_and_values():
    q, k, negs = _unit(3, 4, seed=10), _unit(3, 4, seed=11), _unit(5, 4, seed=12)
    pos, neg = similarities(q, k, negs)
    assert pos.shape == (3,) and neg.shape == (3, 5)
    for i in range(3):
        assert float(pos[i]) == pytest.approx(_dot(q[i], k[i]))
        for j in range(5):
            assert float(neg[i, j]) == pytest.approx(_dot(q[i], negs[j]))
    loss = info_nce_from_similarities(pos, neg, 0.3)
    assert float(loss) == pytest.approx(_hand_loss(q, k, negs, 0.3), rel=1e-5)


def test_bad_negatives_shape():
    q = _unit(2, 4, seed=0)
    with pytest.raises(ValueError):
        info_nce(q, q, torch.ones(4), 0.2)


def test_gradients_reach_q_only():
    """Leaves that require grad go in everywhere. On tensors the loss differentiates whatever it
    is given: q, k and the negatives each get their analytic gradient. Through the negative set
    (what contrastive_loss and the trainer score) only q does: k, the negatives and the queue's
    enqueued source get none."""
    from vissl_neg.negatives.functional import contrastive_loss, negative_set

    t, b = 0.2, 4
    q_leaf, k_leaf = _unit(b, 8, seed=30).requires_grad_(True), _unit(b, 8, seed=31).requires_grad_(True)
    negs_leaf = _unit(16, 8, seed=32).requires_grad_(True)
    info_nce(q_leaf, k_leaf, negs_leaf, t).backward()
    with torch.no_grad():  # p_ij = softmax([q_i·k_i, q_i·n_1..n_K] / T)
        p = torch.softmax(torch.cat([(q_leaf * k_leaf).sum(1, keepdim=True), q_leaf @ negs_leaf.t()], 1) / t, 1)
        want_k = -(1 - p[:, :1]) * q_leaf / (b * t)  # dL/dk_i = −(1 − p_i0) q_i / (B T)
        want_n = p[:, 1:].t() @ q_leaf / (b * t)  # dL/dn_j = Σ_i p_ij q_i / (B T)
    torch.testing.assert_close(k_leaf.grad, want_k)
    torch.testing.assert_close(negs_leaf.grad, want_n)
    assert q_leaf.grad is not None and q_leaf.grad.abs().sum() > 0

    q_leaf.grad = k_leaf.grad = negs_leaf.grad = None
    queue = NegativeQueue(size=16, dim=8).double()
    queue.enqueue(negs_leaf)
    for negatives in (negs_leaf, queue.keys, negs_leaf.expand(b, -1, -1)):  # shared, queued, per query
        loss = contrastive_loss(negative_set(q_leaf, k_leaf, negatives), temperature=t)
        torch.testing.assert_close(loss, info_nce(q_leaf, k_leaf.detach(), negatives.detach(), t))
        loss.backward()
        assert q_leaf.grad is not None and q_leaf.grad.abs().sum() > 0
        assert k_leaf.grad is None and negs_leaf.grad is None
        assert not queue.keys.requires_grad
        q_leaf.grad = None


def test_gradient_wrt_q_matches_analytic_form():
    """dL/dq_i = (1/(B·T)) (Σ_j p_ij c_j − k_i), c = [k_i, n_1..n_K], p = softmax(q_i·c/T)."""
    t, b = 0.3, 3
    q = _unit(b, 4, seed=20).requires_grad_(True)
    k, negs = _unit(b, 4, seed=21), _unit(6, 4, seed=22)
    info_nce(q, k, negs, t).backward()
    for i in range(b):
        cands = [k[i]] + list(negs)
        logits = [_dot(q[i].detach(), c) / t for c in cands]
        m = max(logits)
        w = [math.exp(z - m) for z in logits]
        p = [x / sum(w) for x in w]
        expected = (sum(pj * c for pj, c in zip(p, cands)) - k[i]) / (b * t)
        assert torch.allclose(q.grad[i], expected, atol=1e-10)
