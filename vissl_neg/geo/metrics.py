"""Cross-view retrieval recall (Sample4Geo's protocol): cosine scores, rank of the true
reference = the number of references scoring strictly higher, R@k = share of queries with
rank < k, R@1% with k = R // 100. Chunked over queries, so memory is O(chunk × R)."""

from __future__ import annotations

import torch

DEFAULT_BUDGET = 256 * 2**20  # bytes of scores and comparisons held at once


@torch.no_grad()
def recall_at_k(query: torch.Tensor, reference: torch.Tensor, gt: torch.Tensor, ks=(1, 5, 10),
                chunk_size: int | None = None) -> dict[str, float]:
    """query (Q, D), reference (R, D), L2-normalised; gt (Q,) the index of each query's true
    reference -> {"R@1": %, "R@5": %, "R@10": %, "R@1%": %}."""
    q_count, r_count = query.shape[0], reference.shape[0]
    if chunk_size is None:  # 4 bytes of score + 1 byte of comparison per (query, reference)
        chunk_size = max(1, DEFAULT_BUDGET // (5 * r_count))
    chunk_size = min(chunk_size, q_count)
    gt = gt.to(query.device)
    ranks = torch.empty(q_count, dtype=torch.long, device=query.device)
    ref_t = reference.float().t()
    scores = torch.empty(chunk_size, r_count, device=query.device)  # reused: no allocation per chunk
    higher = torch.empty(chunk_size, r_count, dtype=torch.bool, device=query.device)
    for start in range(0, q_count, chunk_size):
        n = min(chunk_size, q_count - start)
        torch.mm(query[start : start + n].float(), ref_t, out=scores[:n])
        true = scores[:n].gather(1, gt[start : start + n].unsqueeze(1))
        torch.gt(scores[:n], true, out=higher[:n])
        ranks[start : start + n] = higher[:n].sum(dim=1)
    out = {f"R@{k}": 100.0 * float((ranks < k).float().mean()) for k in ks}
    one_percent = max(1, r_count // 100)
    out["R@1%"] = 100.0 * float((ranks < one_percent).float().mean())
    return out
