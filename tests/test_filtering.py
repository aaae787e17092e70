"""Hard-negative filtering and the diagnostics, against sorting in Python and hand counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.negatives import Filter, NegativeSet
from vissl_neg.negatives.diagnostics import false_negative_rate, same_class_rate, synthetic_harder_fraction
from vissl_neg.negatives.filtering import hardest_negatives

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("per_query", [False, True])
def test_hardest_negatives_are_the_most_similar_in_order(per_query):
    q = _unit(4, 6, seed=0)
    negs = _unit(4, 15, 6, seed=1) if per_query else _unit(15, 6, seed=1)
    out = hardest_negatives(q, negs, 5)
    assert out.shape == (4, 5, 6)
    for b in range(4):
        rows = negs[b] if per_query else negs
        ranked = sorted(rows.tolist(), key=lambda r: -float(q[b] @ torch.tensor(r, dtype=torch.float64)))
        torch.testing.assert_close(out[b], torch.tensor(ranked[:5], dtype=torch.float64))


def test_filter_keeps_top_k_or_a_fraction_and_later_stages_see_only_those():
    q, k, queue = _unit(3, 8, seed=2), _unit(3, 8, seed=3), _unit(40, 8, seed=4)
    base = NegativeSet(q, k, queue)
    kept = Filter(keep=10)(base)
    assert kept.index.shape == (3, 10)
    sims = q @ queue.t()
    for b in range(3):
        assert set(kept.index[b].tolist()) == set(sims[b].argsort(descending=True)[:10].tolist())
    torch.testing.assert_close(kept.real_similarities(), sims.gather(1, kept.index))
    assert Filter(fraction=0.25)(base).index.shape == (3, 10)
    # a second filter narrows the per-query set further
    again = Filter(keep=4)(kept)
    for b in range(3):
        assert set(again.index[b].tolist()) == set(sims[b].argsort(descending=True)[:4].tolist())


def test_filter_on_per_query_index_without_dense_product(monkeypatch):
    import vissl_neg.negatives.negative_set as ns

    monkeypatch.setattr(ns, "DENSE_ROWS", 5)  # force the gathered-vectors path
    q, k, bank = _unit(2, 4, seed=5), _unit(2, 4, seed=6), _unit(30, 4, seed=7)
    index = torch.tensor([[0, 3, 7, 9, 11, 20], [1, 2, 5, 8, 13, 29]])
    negs = NegativeSet(q, k, bank, index=index)
    torch.testing.assert_close(negs.real_similarities(), torch.einsum("bd,bkd->bk", q, bank[index]))
    kept = Filter(keep=2)(negs)
    for b in range(2):
        scores = {int(i): float(q[b] @ bank[i]) for i in index[b]}
        assert set(kept.index[b].tolist()) == set(sorted(scores, key=scores.get, reverse=True)[:2])


def test_false_negative_rate_by_hand():
    sims = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.95]])
    labels = torch.tensor([1, 2, 1, -1])
    query_labels = torch.tensor([1, 2])
    # query 0: hardest two are negatives 0 (label 1, same) and 1 (label 2) -> 1 of 2
    # query 1: hardest two are negatives 3 (unknown, ignored) and 2 (label 1) -> 0 of 1
    assert float(false_negative_rate(sims, labels, query_labels, top=2)) == pytest.approx(1 / 3)
    # all known negatives: query 0 has 2 same of 3, query 1 has 1 of 3
    assert float(same_class_rate(labels, query_labels)) == pytest.approx(3 / 6)
    per_query = torch.tensor([[1, 1, 2, 2], [2, 2, 2, 2]])
    assert float(false_negative_rate(sims, per_query, query_labels, top=1)) == pytest.approx(1.0)


def test_synthetic_harder_fraction_by_hand():
    real = torch.tensor([[0.5, 0.2], [0.1, 0.3]])
    syn = torch.tensor([[0.6, 0.4, 0.7], [0.2, 0.31, 0.0]])
    assert float(synthetic_harder_fraction(real, syn)) == pytest.approx(3 / 6)


def test_gathered_dot_matches_einsum_and_its_gradient():
    from vissl_neg.negatives.negative_set import GatheredDot

    q = _unit(3, 5, seed=20).requires_grad_(True)
    source = _unit(40, 5, seed=21)
    rows = torch.randint(40, (3, 17), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(GatheredDot.apply(q, source, rows), torch.einsum("bd,bkd->bk", q, source[rows]))
    assert torch.autograd.gradcheck(lambda x: GatheredDot.apply(x, source, rows), (q,))
