"""Cross-view retrieval recall (Sample4Geo's protocol): cosine scores, rank of the true
reference = the number of references scoring strictly higher, R@k = share of queries with
rank < k, R@1% with k = R // 100. Chunked over queries, so memory is O(chunk × R)."""

from __future__ import annotations

import torch

DEFAULT_BUDGET = 256 * 2**20  # bytes of scores held at once


@torch.no_grad()
def recall_at_k(
    query: torch.Tensor, reference: torch.Tensor, gt: torch.Tensor, ks=(1, 5, 10), chunk_size: int | None = None
) -> dict[str, float]:
    """query (Q, D), reference (R, D), L2-normalised; gt (Q,) the index of each query's true
    reference -> {"R@1": %, "R@5": %, "R@10": %, "R@1%": %}."""
    q_count, r_count = query.shape[0], reference.shape[0]
    if chunk_size is None:  # one float32 score per (query, reference) of a chunk
        chunk_size = max(1, DEFAULT_BUDGET // (4 * r_count))
    chunk_size = min(chunk_size, q_count)
    gt = gt.to(query.device)
    ranks = torch.empty(q_count, dtype=torch.long, device=query.device)
    ref_t = reference.float().t()
    scores = torch.empty(chunk_size, r_count, device=query.device)  # reused: no allocation per chunk
    for start in range(0, q_count, chunk_size):
        n = min(chunk_size, q_count - start)
        block = scores[:n]
        torch.mm(query[start : start + n].float(), ref_t, out=block)
        block.sub_(block.gather(1, gt[start : start + n].unsqueeze(1))).gt_(0)  # in place: 1.0 where higher
        ranks[start : start + n] = block.sum(dim=1).long()  # exact: float32 counts exactly up to 2^24
    out = {f"R@{k}": 100.0 * float((ranks < k).float().mean()) for k in ks}
    one_percent = max(1, r_count // 100)
    out["R@1%"] = 100.0 * float((ranks < one_percent).float().mean())
    return out
