"""False negative cancellation (Huynh et al. 2022): the eliminate and attract losses against
sums written out by hand, InfoNCE at an empty mask, gradients into q only, and the strategy
marking the negatives nearest the support view (the key)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.losses import false_negative_from_similarities, false_negative_info_nce, info_nce
from vissl_neg.negatives import FalseNegatives, Filter, NegativeSet
from vissl_neg.negatives.false_negatives import suspect_false_negatives

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _mask(b, k, seed, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, k, generator=g) < p


def _hand_loss(q, k, negs, t, suspected, mode):
    """One query at a time with math.exp / math.log over Python floats."""
    total = 0.0
    for b in range(q.shape[0]):
        rows = negs if negs.dim() == 2 else negs[b]
        pos = math.exp(float(q[b] @ k[b]) / t)
        e = [math.exp(float(q[b] @ r) / t) for r in rows]
        marked = [j for j in range(len(e)) if bool(suspected[b, j])]
        if mode == "eliminate":
            total += -math.log(pos / (pos + sum(x for j, x in enumerate(e) if j not in marked)))
        else:
            z = pos + sum(e)
            total += -(math.log(pos / z) + sum(math.log(e[j] / z) for j in marked)) / (1 + len(marked))
    return total / q.shape[0]


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
@pytest.mark.parametrize("per_query", [False, True])
def test_losses_match_the_hand_computation(mode, per_query):
    q, k = _unit(5, 8, seed=0), _unit(5, 8, seed=1)
    negs = _unit(5, 12, 8, seed=2) if per_query else _unit(12, 8, seed=2)
    suspected = _mask(5, 12, seed=3)
    suspected[0] = False  # a query without suspects
    suspected[1] = True  # one whose negatives are all suspected
    out = false_negative_info_nce(q, k, negs, 0.2, suspected, mode)
    assert math.isclose(float(out), _hand_loss(q, k, negs, 0.2, suspected, mode), rel_tol=1e-9)


def test_attract_by_hand_on_a_tiny_case():
    # logits/T: positive 1, negatives 0, 2, 1; the second (2) suspected
    pos, sims = torch.tensor([1.0]), torch.tensor([[0.0, 2.0, 1.0]])
    suspected = torch.tensor([[False, True, False]])
    z = math.e + 1 + math.e**2 + math.e
    want_attract = -0.5 * (math.log(math.e / z) + math.log(math.e**2 / z))
    want_eliminate = -math.log(math.e / (math.e + 1 + math.e))
    got_a = false_negative_from_similarities(pos, sims, 1.0, suspected, "attract")
    got_e = false_negative_from_similarities(pos, sims, 1.0, suspected, "eliminate")
    assert math.isclose(float(got_a), want_attract, rel_tol=1e-6)
    assert math.isclose(float(got_e), want_eliminate, rel_tol=1e-6)


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
def test_empty_mask_is_info_nce(mode):
    q, k, negs = _unit(6, 8, seed=4), _unit(6, 8, seed=5), _unit(20, 8, seed=6)
    empty = torch.zeros(6, 20, dtype=torch.bool)
    torch.testing.assert_close(false_negative_info_nce(q, k, negs, 0.2, empty, mode), info_nce(q, k, negs, 0.2))


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
def test_gradients_reach_q_only(mode):
    q = _unit(4, 8, seed=7).requires_grad_(True)
    k = _unit(4, 8, seed=8).requires_grad_(True)
    negs = _unit(10, 8, seed=9).requires_grad_(True)
    loss = false_negative_info_nce(q, k, negs, 0.2, _mask(4, 10, seed=10), mode)
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert k.grad is None and negs.grad is None


def test_eliminate_drops_the_suspects_gradient():
    q = _unit(1, 8, seed=11).requires_grad_(True)
    k, negs = _unit(1, 8, seed=12), _unit(3, 8, seed=13)
    marked = torch.tensor([[False, True, False]])
    false_negative_info_nce(q, k, negs, 0.2, marked, "eliminate").backward()
    q2 = q.detach().clone().requires_grad_(True)
    info_nce(q2, k, negs[[0, 2]], 0.2).backward()
    torch.testing.assert_close(q.grad, q2.grad)


def test_unknown_mode():
    with pytest.raises(ValueError, match="eliminate, attract"):
        false_negative_from_similarities(torch.zeros(1), torch.zeros(1, 2), 0.2, torch.zeros(1, 2, dtype=torch.bool),
                                         "ignore")


def test_strategy_marks_the_negatives_nearest_the_key():
    q, k, queue = _unit(3, 8, seed=14), _unit(3, 8, seed=15), _unit(30, 8, seed=16)
    out = FalseNegatives(top=4)(NegativeSet(q, k, queue))
    assert out.index is None and out.suspected.shape == (3, 30) and out.suspected.dtype == torch.bool
    for b in range(3):
        scores = [float(k[b] @ n) for n in queue]
        nearest = sorted(range(30), key=lambda j: -scores[j])[:4]
        assert set(out.suspected[b].nonzero().flatten().tolist()) == set(nearest)


def test_marks_follow_a_later_filter_and_a_per_query_index():
    q, k, queue = _unit(3, 8, seed=17), _unit(3, 8, seed=18), _unit(40, 8, seed=19)
    marked = FalseNegatives(top=5)(NegativeSet(q, k, queue))
    kept = Filter(keep=12)(marked)
    for b in range(3):
        rows = kept.index[b].tolist()
        want = [bool(marked.suspected[b, r]) for r in rows]
        assert kept.suspected[b].tolist() == want
    # marking on an already narrowed set scores k against the kept rows only
    again = FalseNegatives(top=2)(Filter(keep=12)(NegativeSet(q, k, queue)))
    ks = k @ queue.t()
    for b in range(3):
        rows = again.index[b]
        assert set(rows[again.suspected[b]].tolist()) == set(rows[ks[b, rows].topk(2).indices].tolist())


def test_suspect_false_negatives_counts():
    sims = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.0]])
    assert suspect_false_negatives(sims, 2).tolist() == [[False, True, False, True], [True, False, True, False]]
