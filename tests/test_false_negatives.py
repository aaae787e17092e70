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
        false_negative_from_similarities(
            torch.zeros(1), torch.zeros(1, 2), 0.2, torch.zeros(1, 2, dtype=torch.bool), "ignore"
        )


def test_strategy_marks_the_negatives_nearest_the_anchor_views():
    q, k, queue = _unit(3, 8, seed=14), _unit(3, 8, seed=15), _unit(30, 8, seed=16)
    out = FalseNegatives(top=4, threshold=-1.0)(NegativeSet(q, k, queue))
    assert out.index is None and out.suspected.shape == (3, 30) and out.suspected.dtype == torch.bool
    for b in range(3):
        scores = [max(float(q[b] @ n), float(k[b] @ n)) for n in queue]
        nearest = sorted(range(30), key=lambda j: -scores[j])[:4]
        assert set(out.suspected[b].nonzero().flatten().tolist()) == set(nearest)


def test_marks_follow_a_later_filter_and_a_per_query_index():
    q, k, queue = _unit(3, 8, seed=17), _unit(3, 8, seed=18), _unit(40, 8, seed=19)
    marked = FalseNegatives(top=5, threshold=-1.0)(NegativeSet(q, k, queue))
    kept = Filter(keep=12)(marked)
    for b in range(3):
        rows = kept.index[b].tolist()
        want = [bool(marked.suspected[b, r]) for r in rows]
        assert kept.suspected[b].tolist() == want
    # marking on an already narrowed set scores the anchor's views against the kept rows only
    again = FalseNegatives(top=2, threshold=-1.0)(Filter(keep=12)(NegativeSet(q, k, queue)))
    ks = torch.maximum(q @ queue.t(), k @ queue.t())
    for b in range(3):
        rows = again.index[b]
        assert set(rows[again.suspected[b]].tolist()) == set(rows[ks[b, rows].topk(2).indices].tolist())


def test_suspect_false_negatives_counts():
    sims = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.0]])
    assert suspect_false_negatives(sims, 2, -1.0).tolist() == [[False, True, False, True], [True, False, True, False]]
    # top-2 and above 0.6: the second row's 0.3 is in its top 2 but below the threshold
    assert suspect_false_negatives(sims, 2, 0.6).tolist() == [[False, True, False, True], [False, False, True, False]]


LARGE_NUM = 1e9  # google-research/fnc objective.py:28


def _reference_fnc_loss(anchor, views_ema, memory, temperature, topk, threshold):
    """google-research/fnc@adf5da5 objective.py:138-249 (``add_contrastive_loss_with_memory``)
    transcribed to torch for one sample per replica (batch 1), support_size 0 (two views),
    and only the first anchor's term of the loop (objective.py:213-243). ``anchor`` (D,) the
    anchor view's embedding (``splitted_list[0]``), ``views_ema`` (2, D) both views' momentum
    embeddings (``splitted_list_mem``), ``memory`` (M, D) whose rows 0 and 1 are the sample's
    two views (the current batch's entries, objective.py:168-175) and the rest the older keys.
    Returns (loss, dense_mask (M,))."""
    m = memory.shape[0]
    masks = torch.ones(1, 1, dtype=memory.dtype)  # one_hot(sample_idx, 1)
    masks_all = masks.repeat(1, 2)  # :168
    masks_all_mem = torch.cat([masks_all, torch.zeros(1, m - 2, dtype=memory.dtype)], -1)  # :169-175
    all_scores = torch.einsum("bvd,md->bvm", views_ema.unsqueeze(0), memory)  # :185
    all_scores = all_scores.max(dim=1).values  # :186 reduce_max over views
    all_scores = all_scores - masks_all_mem * LARGE_NUM  # :187
    topk_inds = all_scores.topk(topk, dim=1).indices  # :191
    dense_mask = (all_scores > threshold).to(memory.dtype)  # :195-196
    dense_mask_topk = torch.zeros_like(all_scores).scatter_(1, topk_inds, 1.0)  # :199-208
    dense_mask = dense_mask * dense_mask_topk  # :211
    mask_anchor = torch.cat([masks, torch.zeros(1, m - 1, dtype=memory.dtype)], -1)  # :217-221, anchor_ind 0
    anchor_mem = (anchor.unsqueeze(0) @ memory.t()) / temperature  # :234-235
    log_numerator = (anchor_mem * (masks_all_mem * (1.0 - mask_anchor))).sum(1)  # :236-237
    denominator = anchor_mem - mask_anchor * LARGE_NUM  # :238
    log_numerator = log_numerator + (denominator * dense_mask).sum(1)  # :239
    log_numerator = -log_numerator / (2 - 1.0 + dense_mask.sum(1))  # :240-241
    log_denominator = torch.logsumexp(denominator, dim=1)  # :242
    return (log_numerator + log_denominator).mean(), dense_mask[0]  # :243


def test_marks_and_attraction_match_the_reference_transcription():
    """Rows of the queue are put near the query or the key so that some rows get fewer marks
    than ``top`` (the threshold bites), some exactly ``top`` (the top-k bites) and some marks
    come from the query view alone (the max over views bites)."""
    g = torch.Generator().manual_seed(20)
    b, d, top, t = 6, 8, 3, 0.2
    q, k = _unit(b, d, seed=21), _unit(b, d, seed=22)
    near = []
    for i in range(b):
        anchor = q[i] if i % 2 == 0 else k[i]
        for scale in (0.2, 0.35, 0.5, 0.7, 0.9)[: 1 + i]:
            near.append(F.normalize(anchor + scale * torch.randn(d, generator=g, dtype=torch.float64), dim=0))
    queue = torch.cat([torch.stack(near), _unit(40, d, seed=23)])
    out = FalseNegatives(top=top, threshold=0.7, mode="attract")(NegativeSet(q, k, queue))
    ours = false_negative_info_nce(q, k, queue, t, out.suspected, "attract")
    losses, masks = [], []
    for i in range(b):
        memory = torch.cat([q[i : i + 1], k[i : i + 1], queue])  # our stand-in for view 0's momentum key is q
        loss, mask = _reference_fnc_loss(q[i], torch.stack([q[i], k[i]]), memory, t, top, 0.7)
        losses.append(loss)
        masks.append(mask[2:].bool())
    torch.testing.assert_close(out.suspected, torch.stack(masks))
    torch.testing.assert_close(ours, torch.stack(losses).mean())
    counts = out.suspected.sum(1)
    assert counts.min() < top and counts.max() == top  # both rules decide some marks
    key_only = suspect_false_negatives(k @ queue.t(), top, 0.7)
    assert not torch.equal(key_only, out.suspected)  # the query view's scores matter


def test_defaults_are_the_reference_flags():
    # google-research/fnc run.py:261-267 (fn_topk 10, fn_threshold 0.7); objective.py implements attraction only
    s = FalseNegatives()
    assert (s.top, s.threshold, s.mode, s.start_epoch) == (10, 0.7, "attract", 0.0)
