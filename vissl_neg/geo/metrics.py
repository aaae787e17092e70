"""Cross-view retrieval metrics of Sample4Geo's four benchmarks, memory-bounded.

Scores are cosine similarities (dot products of unit rows). Every function scores a chunk of
queries against all references at a time and keeps only per-query results, so the full
Q × R score matrix is never built: a chunk holds at most ``budget`` bytes of per-score working
memory (``chunk = budget // (R × bytes per score)``, at least one query), and the peak memory
beyond the inputs is about ``budget`` plus a few bytes per query. The loop runs over chunks,
never over queries, and stays on the inputs' device. float64 inputs are scored in float64,
anything else in float32.

- one true reference per query (CVUSA, CVACT): :func:`recall_at_k`;
- several true references per query: :func:`recall_at_k_labels`;
- VIGOR (a positive and semi-positives per panorama): :func:`vigor_recall`, with the hit rate;
- University-1652 (class labels, both directions): :func:`university1652_metrics`,
  :func:`average_precision`.

A query's rank is the number of references that score strictly higher than its best true
reference, so exact ties go the query's way, as in Sample4Geo's code (ties are measure-zero
for real embeddings). R@k is the share of queries with rank < k, in percent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

DEFAULT_BUDGET = 256 * 2**20  # bytes of per-score working memory held at once

OnePercent = Literal["sample4geo", "vigor", "university"]
Distractors = Literal["official", "sample4geo"]

_MISS = torch.iinfo(torch.int64).max  # the rank of a query without any true reference

# per-score working memory, in bytes, as (multiple of the score's itemsize, extra bytes)
_RECALL_BYTES = (1, 0)  # the scores, turned in place into 1 where higher
_LABEL_BYTES = (2, 2)  # the scores, the true-match mask, a masked copy of the scores, its mask
_U1652_BYTES = (2, 10)  # the scores, their sorted copy, its int64 indices, the true-item mask
_EXACT_COUNT = 2**24  # float32 sums of 0/1 are exact up to here


def one_percent_k(count: int, rule: OnePercent = "sample4geo") -> int:
    """The k of R@1% for ``count`` references under ``rule``:

    - ``"sample4geo"``: ``R // 100``, as Sample4Geo's CVUSA/CVACT and VIGOR evaluations
      (kept at least 1 here: below 100 references the reference's k is 0 and its R@1% is 0);
    - ``"vigor"``: ``int(0.01 R) + 1``, VIGOR's own evaluation code;
    - ``"university"``: ``round(0.01 G) + 1``; University-1652's code reads ``CMC[round(0.01 G)]``,
      which is R@(round(0.01 G) + 1), with G the whole gallery (Python's round: halves to even).
    """
    if rule == "sample4geo":
        return max(1, count // 100)
    if rule == "vigor":
        return int(count * 0.01) + 1
    if rule == "university":
        return round(count * 0.01) + 1
    raise ValueError(f"one_percent must be one of sample4geo, vigor, university; got {rule!r}")


def _score_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _chunk_rows(
    q_count: int, r_count: int, dtype: torch.dtype, cost: tuple[int, int], chunk_size: int | None, budget: int
) -> int:
    """Queries per chunk: ``chunk_size`` if given, else as many as fit ``budget`` bytes."""
    if chunk_size is None:
        per_score = cost[0] * torch.finfo(dtype).bits // 8 + cost[1]
        chunk_size = max(1, budget // (per_score * max(1, r_count)))
    return max(1, min(int(chunk_size), q_count))


def _chunks(q_count: int, rows: int, progress: bool, desc: str) -> Iterator[tuple[int, int]]:
    starts = range(0, q_count, rows)
    for start in tqdm(starts, desc=desc, unit="chunk", leave=False, disable=not progress):
        yield start, min(start + rows, q_count)


def _count(higher: torch.Tensor) -> torch.Tensor:
    """Row sums of a 0/1 float block as int64, exact (in column slices below 2^24): summing the
    floats needs no temporary, where count_nonzero would build a bool and an int64 copy."""
    width = higher.shape[1]
    if width <= _EXACT_COUNT:
        return higher.sum(dim=1).long()
    return sum(higher[:, s : s + _EXACT_COUNT].sum(dim=1).long() for s in range(0, width, _EXACT_COUNT))


def _recalls(ranks: torch.Tensor, ks: Sequence[int], one_percent: int) -> dict[str, float]:
    out = {f"R@{k}": 100.0 * float((ranks < k).double().mean()) for k in ks}
    out["R@1%"] = 100.0 * float((ranks < one_percent).double().mean())
    return out


@torch.no_grad()
def recall_at_k(
    query: torch.Tensor,
    reference: torch.Tensor,
    gt: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    *,
    one_percent: OnePercent = "sample4geo",
    budget: int = DEFAULT_BUDGET,
    progress: bool = False,
) -> dict[str, float]:
    """One true reference per query (CVUSA, CVACT; Sample4Geo ``calculate_scores``).

    query (Q, D), reference (R, D), unit rows; gt (Q,) the index of each query's true
    reference -> {"R@1": %, "R@5": %, "R@10": %, "R@1%": %}; rank = the number of references
    scoring strictly higher than the true one; R@1% with k = :func:`one_percent_k`.
    Working memory: itemsize bytes per score of a chunk, at most ``budget`` bytes.
    """
    dtype = _score_dtype(query, reference)
    q_count, r_count = query.shape[0], reference.shape[0]
    rows = _chunk_rows(q_count, r_count, dtype, _RECALL_BYTES, chunk_size, budget)
    top_one_percent = one_percent_k(r_count, one_percent)
    gt = gt.to(query.device, torch.long)
    ranks = torch.empty(q_count, dtype=torch.long, device=query.device)
    ref_t = reference.to(dtype).t()
    scores = torch.empty(rows, r_count, dtype=dtype, device=query.device)  # reused: no allocation per chunk
    for start, stop in _chunks(q_count, rows, progress, "recall"):
        block = scores[: stop - start]
        torch.mm(query[start:stop].to(dtype), ref_t, out=block)
        block.sub_(block.gather(1, gt[start:stop, None])).gt_(0)  # 1 where higher: s - g > 0 iff s > g
        ranks[start:stop] = _count(block)
    return _recalls(ranks, ks, top_one_percent)


@torch.no_grad()
def recall_at_k_labels(
    query: torch.Tensor,
    reference: torch.Tensor,
    query_labels: torch.Tensor,
    reference_labels: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    *,
    one_percent: OnePercent = "sample4geo",
    budget: int = DEFAULT_BUDGET,
    progress: bool = False,
) -> dict[str, float]:
    """Several true references per query: those with the query's label.

    query (Q, D), reference (R, D), unit rows; query_labels (Q,), reference_labels (R,)
    integers -> {"R@k": %, ..., "R@1%": %}. A query's rank is the number of references
    scoring strictly higher than its best true reference (only false ones can), so R@k is the
    share of queries with a true reference among the first k: University-1652's CMC, with
    every reference competing. A query without any true reference is a miss.
    Working memory: (2 × itemsize + 2) bytes per score of a chunk, at most ``budget`` bytes.
    """
    dtype = _score_dtype(query, reference)
    q_count, r_count = query.shape[0], reference.shape[0]
    rows = _chunk_rows(q_count, r_count, dtype, _LABEL_BYTES, chunk_size, budget)
    top_one_percent = one_percent_k(r_count, one_percent)
    query_labels = query_labels.to(query.device)
    reference_labels = reference_labels.to(query.device)
    ranks = torch.empty(q_count, dtype=torch.long, device=query.device)
    ref_t = reference.to(dtype).t()
    for start, stop in _chunks(q_count, rows, progress, "recall"):
        block = torch.mm(query[start:stop].to(dtype), ref_t)
        true = query_labels[start:stop, None] == reference_labels[None, :]
        best = block.masked_fill(~true, -torch.inf).amax(dim=1, keepdim=True)
        count = _count(block.gt_(best))
        ranks[start:stop] = torch.where(true.any(dim=1), count, _MISS)
    return _recalls(ranks, ks, top_one_percent)


@torch.no_grad()
def vigor_recall(
    query: torch.Tensor,
    reference: torch.Tensor,
    positive: torch.Tensor,
    semi_positives: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    *,
    one_percent: OnePercent = "sample4geo",
    budget: int = DEFAULT_BUDGET,
    progress: bool = False,
) -> dict[str, float]:
    """VIGOR: recall of the positive and the hit rate (Sample4Geo ``evaluate/vigor.py``
    ``calculate_scores``; VIGOR's ``validate_top``).

    query (Q, D) panoramas, reference (R, D) satellite tiles, unit rows; positive (Q,) the
    index of each panorama's positive tile; semi_positives (Q, S) the indices of its
    semi-positive tiles (-1 pads a shorter list) -> {"R@1", "R@5", "R@10", "R@1%",
    "hit_rate"}, in percent.

    - rank = the number of tiles scoring strictly higher than the positive, semi-positives
      included, as both references do; R@1% with k = :func:`one_percent_k` (``"sample4geo"``:
      R // 100; ``"vigor"``: VIGOR's int(0.01 R) + 1);
    - a query is a hit when no tile other than its own semi-positives scores strictly higher
      than its positive: a semi-positive ranked first counts, a negative ranked above the
      positive does not.

    Working memory: itemsize bytes per score of a chunk, at most ``budget`` bytes.
    """
    dtype = _score_dtype(query, reference)
    q_count, r_count = query.shape[0], reference.shape[0]
    rows = _chunk_rows(q_count, r_count, dtype, _RECALL_BYTES, chunk_size, budget)
    top_one_percent = one_percent_k(r_count, one_percent)
    positive = positive.to(query.device, torch.long)
    semi = (
        semi_positives.to(query.device, torch.long).reshape(q_count, -1)
        if semi_positives.numel()
        else positive[:, None]
    )
    semi = torch.where(semi < 0, positive[:, None], semi)  # a pad points at the positive, never higher than itself
    ranks = torch.empty(q_count, dtype=torch.long, device=query.device)
    beaten_by_negative = torch.empty(q_count, dtype=torch.long, device=query.device)
    ref_t = reference.to(dtype).t()
    scores = torch.empty(rows, r_count, dtype=dtype, device=query.device)
    for start, stop in _chunks(q_count, rows, progress, "vigor"):
        block = scores[: stop - start]
        torch.mm(query[start:stop].to(dtype), ref_t, out=block)
        block.sub_(block.gather(1, positive[start:stop, None])).gt_(0)  # 1 where strictly higher
        ranks[start:stop] = _count(block)
        block.scatter_(1, semi[start:stop], 0.0)  # the own semi-positives do not count
        beaten_by_negative[start:stop] = _count(block)
    out = _recalls(ranks, ks, top_one_percent)
    out["hit_rate"] = 100.0 * float((beaten_by_negative == 0).double().mean())
    return out


def _junk(gallery_labels: torch.Tensor, query_labels: torch.Tensor, distractors: Distractors) -> torch.Tensor | None:
    if distractors == "official":
        return None
    if distractors == "sample4geo":
        return ~torch.isin(gallery_labels, query_labels.unique())
    raise ValueError(f"distractors must be one of official, sample4geo; got {distractors!r}")


@torch.no_grad()
def _university_ranks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    distractors: Distractors,
    chunk_size: int | None,
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (rank of the first true gallery item (Q,) long, _MISS without one; AP (Q,) float64)."""
    dtype = _score_dtype(query, gallery)
    q_count, g_count = query.shape[0], gallery.shape[0]
    rows = _chunk_rows(q_count, g_count, dtype, _U1652_BYTES, chunk_size, budget)
    device = query.device
    query_labels, gallery_labels = query_labels.to(device), gallery_labels.to(device)
    junk = _junk(gallery_labels, query_labels, distractors)
    first = torch.full((q_count,), _MISS, dtype=torch.long, device=device)
    ap = torch.zeros(q_count, dtype=torch.float64, device=device)
    gallery_t = gallery.to(dtype).t()
    for start, stop in _chunks(q_count, rows, progress, "university-1652"):
        scores = torch.mm(query[start:stop].to(dtype), gallery_t)
        if junk is not None:  # removed: at -inf no junk item stands above a true one
            scores.masked_fill_(junk, -torch.inf)
        good = query_labels[start:stop, None] == gallery_labels[None, :]
        n_good = good.sum(dim=1)
        most = max(1, int(n_good.max()))  # one sync per chunk
        # the true items' scores, best first; -inf pads rows with fewer
        true_scores = scores.masked_fill(~good, -torch.inf).topk(most, dim=1).values
        del good
        # 0-based rank of the i-th true item, true items first among equal scores:
        # r_i = i + #(items scoring higher) - #(true items scoring higher)
        ascending = scores.sort(dim=1).values
        del scores
        higher_all = ascending.shape[1] - torch.searchsorted(ascending, true_scores, right=True)
        del ascending
        higher_true = most - torch.searchsorted(true_scores.flip(1), true_scores, right=True)
        i = torch.arange(most, device=device).expand_as(true_scores)
        r = (i + higher_all - higher_true).double()
        valid = i < n_good[:, None]
        # Market-1501 / University-1652 AP: trapezoids between the precisions before and at each hit
        i = i.double()
        precision = (i + 1) / (r + 1)
        old_precision = torch.where(r > 0, i / r.clamp_min(1), torch.ones_like(r))
        terms = (old_precision + precision) / 2 / n_good[:, None].clamp_min(1)
        ap[start:stop] = torch.where(valid, terms, 0.0).sum(dim=1)
        first[start:stop] = torch.where(n_good > 0, r[:, 0].long(), _MISS)
    return first, ap


def average_precision(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    chunk_size: int | None = None,
    *,
    distractors: Distractors = "official",
    budget: int = DEFAULT_BUDGET,
    progress: bool = False,
) -> torch.Tensor:
    """AP of each query, University-1652's rule (from Market-1501's evaluation code): with the
    true gallery items at 0-based ranks r_0 < r_1 < ..., AP = Σ_i (p_i^old + p_i) / (2 n)
    with p_i = (i+1)/(r_i+1), p_i^old = i/r_i (1 when r_i = 0), n true items; one true item
    at rank r > 0 gives 1/(2(r+1)). query (Q, D), gallery (G, D) unit rows, labels (Q,) and
    (G,) integers -> (Q,) float64 in [0, 1]; 0 for a query without a true item.
    ``distractors``: see :func:`university1652_metrics`."""
    return _university_ranks(query, gallery, query_labels, gallery_labels, distractors, chunk_size, budget, progress)[1]


def university1652_metrics(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    *,
    distractors: Distractors = "official",
    budget: int = DEFAULT_BUDGET,
    progress: bool = False,
) -> dict[str, float]:
    """University-1652 (Sample4Geo ``evaluate/university.py``; the benchmark's
    ``evaluate_gpu.py``), either direction: drone -> satellite (one true gallery image per
    query) or satellite -> drone (many).

    query (Q, D), gallery (G, D), unit rows; labels (Q,), (G,) integers (the building class)
    -> {"R@1", "R@5", "R@10": CMC in %, "R@1%": CMC[round(0.01 G)] in %, "mAP": mean of
    :func:`average_precision` in %}. A query without a true item counts as a miss and AP 0.

    ``distractors="official"``: every gallery image competes, the distractor classes absent
    from the queries included (the benchmark's protocol). ``"sample4geo"``: gallery images
    whose class is not among the query classes are removed from the ranking, as Sample4Geo
    does (its gallery labels -1 as junk); G in R@1% still counts them, as there.

    Ties: a true item ties ahead of false ones (the reference's order within ties is what
    numpy's unstable argsort leaves). Working memory: (2 × itemsize + 10) bytes per score
    of a chunk (a sorted copy and its indices), at most ``budget`` bytes.
    """
    first, ap = _university_ranks(
        query, gallery, query_labels, gallery_labels, distractors, chunk_size, budget, progress
    )
    out = _recalls(first, ks, one_percent_k(gallery.shape[0], "university"))
    out["mAP"] = 100.0 * float(ap.mean())
    return out
