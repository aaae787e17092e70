"""Sample4Geo's pieces against hand computations: symmetric InfoNCE, recall@k with ties,
the neighbour batch sampler, GPS (haversine) and mined neighbours."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.geo import gps_neighbours, haversine_km, mined_neighbours, neighbour_batches, recall_at_k
from vissl_neg.losses import symmetric_info_nce

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _hand_ce(row: list[float], target: int, eps: float) -> float:
    m = max(row)
    logz = m + math.log(sum(math.exp(x - m) for x in row))
    nll = [logz - x for x in row]
    return (1 - eps) * nll[target] + eps * sum(nll) / len(row)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_symmetric_info_nce_by_hand(eps):
    a, b = _unit(4, 6, seed=0), _unit(4, 6, seed=1)
    s = math.log(1 / 0.07)
    logits = [[math.exp(s) * float(a[i] @ b[j]) for j in range(4)] for i in range(4)]
    rows = sum(_hand_ce(logits[i], i, eps) for i in range(4)) / 4
    cols = sum(_hand_ce([logits[j][i] for j in range(4)], i, eps) for i in range(4)) / 4
    got = symmetric_info_nce(a, b, torch.tensor(s, dtype=torch.float64), label_smoothing=eps)
    assert float(got) == pytest.approx(0.5 * (rows + cols), rel=1e-9)
    assert float(symmetric_info_nce(b, a, s, eps)) == pytest.approx(float(got), rel=1e-9)  # symmetric


def test_symmetric_info_nce_scale_gets_a_gradient():
    a, b = _unit(3, 5, seed=2), _unit(3, 5, seed=3)
    scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    symmetric_info_nce(a, b, scale).backward()
    assert scale.grad is not None and scale.grad != 0


def test_recall_at_k_ranks_and_ties():
    # 3 queries, 5 references in 1-D: scores are products, so ranks are easy to read off
    reference = torch.tensor([[1.0], [0.5], [0.0], [-0.5], [-1.0]])
    query = torch.tensor([[1.0], [1.0], [-1.0]])
    gt = torch.tensor([0, 2, 4])  # ranks: 0; 2 (refs 0 and 1 score higher); 0
    got = recall_at_k(query, reference, gt, ks=(1, 2, 3))
    assert got == {
        "R@1": pytest.approx(200 / 3),
        "R@2": pytest.approx(200 / 3),
        "R@3": 100.0,
        "R@1%": pytest.approx(200 / 3),
    }
    # a tie with the true reference does not push it down
    tie = torch.tensor([[1.0], [1.0]])
    assert recall_at_k(torch.tensor([[1.0]]), tie, torch.tensor([1]), ks=(1,))["R@1"] == 100.0


def test_recall_chunking_and_one_percent():
    q, r = _unit(37, 8, seed=4).float(), _unit(250, 8, seed=5).float()
    gt = torch.randint(250, (37,), generator=torch.Generator().manual_seed(0))
    dense = recall_at_k(q, r, gt)
    assert recall_at_k(q, r, gt, chunk_size=5) == dense
    scores = q @ r.t()
    ranks = (scores > scores.gather(1, gt[:, None])).sum(1)
    assert dense["R@1%"] == pytest.approx(100 * float((ranks < 2).float().mean()))  # k = 250 // 100
    assert dense["R@5"] == pytest.approx(100 * float((ranks < 5).float().mean()))


def test_sampler_without_neighbours_never_repeats_and_drops_the_partial_batch():
    batches = neighbour_batches(list(range(10)), 4, rng=random.Random(0))
    assert [len(b) for b in batches] == [4, 4]
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 8


def test_sampler_fills_from_near_then_random_far_neighbours():
    ids = list(range(200))
    near = {i: sorted((j for j in ids if j != i), key=lambda j: (abs(i - j), j)) for i in ids}
    batches = neighbour_batches(ids, 10, near, neighbour_select=4, neighbour_range=8, rng=random.Random(1))
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) and all(len(b) == 10 for b in batches) and len(batches) == 20
    first = batches[0]
    anchor = first[0]
    assert first[1:3] == near[anchor][:2]  # the nearest half of neighbour_select
    assert set(first[3:5]) <= set(near[anchor][2:8])  # the rest drawn from the top neighbour_range


@pytest.mark.parametrize("spread_deg", [2.0, 1e-4], ids=["region", "metres-apart"])
def test_gps_neighbours_match_brute_force_haversine(spread_deg):
    g = torch.Generator().manual_seed(0)
    coords = torch.stack(
        [torch.rand(30, generator=g) * spread_deg + 40, torch.rand(30, generator=g) * spread_deg - 75], dim=1
    ).double()
    ids = [1000 + i for i in range(30)]
    got = gps_neighbours(ids, coords, k=5, chunk_size=7, slack=2)

    def hav(p, q):
        la1, lo1, la2, lo2 = map(math.radians, (p[0], p[1], q[0], q[1]))
        h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
        return 2 * 6371.0 * math.asin(math.sqrt(h))

    for i, idx in enumerate(ids):
        dists = sorted((hav(coords[i].tolist(), coords[j].tolist()), ids[j]) for j in range(30) if j != i)
        got_dists = [hav(coords[i].tolist(), coords[ids.index(j)].tolist()) for j in got[idx]]
        assert got_dists == pytest.approx([d[0] for d in dists[:5]], rel=1e-9, abs=0)  # exact ties may swap ids
        if spread_deg > 1:
            assert got[idx] == [d[1] for d in dists[:5]]
    assert float(haversine_km(0.0, 0.0, 1.0, 0.0)) == pytest.approx(111.19, abs=0.01)  # degrees in, km out


def test_mined_neighbours_exclude_the_true_match_and_match_dense():
    ids = [5, 9, 2, 7, 11, 3]
    q, r = _unit(6, 4, seed=6), _unit(6, 4, seed=7)
    r[1] = q[1]  # the true match is the most similar satellite and must still be excluded
    got = mined_neighbours(ids, q, r, k=3, chunk_size=4)
    sims = q @ r.t()
    for i, idx in enumerate(ids):
        order = [ids[j] for j in sims[i].argsort(descending=True).tolist() if j != i]
        assert got[idx] == order[:3] and idx not in got[idx]
