"""The negatives one training step contrasts against, as strategies pass them along."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

# Above this many source rows, per-query similarities are computed on gathered vectors
# instead of one (B, M) matrix product followed by a gather.
DENSE_ROWS = 131_072


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 -> float32; float32 and float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def take(negatives: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of shared (K, D) or per-query (B, K, D) negatives: rows (B, S) -> (B, S, D)."""
    if negatives.dim() == 2:
        return negatives[rows]
    batch = torch.arange(rows.shape[0], device=rows.device).unsqueeze(1)
    return negatives[batch, rows]


@dataclass
class NegativeSet:
    """Queries, positives and negatives of one step.

    q (B, D) carries the gradient; k (B, D) is detached. Real negatives are rows of
    ``source`` (M, D) (the queue, or the memory bank), all of them for every query when
    ``index`` is None, else the rows ``index`` (B, K) per query. ``labels`` (M,) beside
    the source (-1 unknown) serve diagnostics only. ``synthetic`` (B, S, D) holds detached
    per-query negatives made by the strategies; they are never enqueued.
    """

    q: torch.Tensor
    k: torch.Tensor
    source: torch.Tensor
    labels: torch.Tensor | None = None
    index: torch.Tensor | None = None
    synthetic: torch.Tensor | None = None
    dense: torch.Tensor | None = field(default=None, repr=False)  # cached (B, M) q·source

    def with_(self, **changes) -> "NegativeSet":
        if "q" in changes or "source" in changes:
            changes.setdefault("dense", None)
        return replace(self, **changes)

    def dense_similarities(self) -> torch.Tensor:
        """(B, M) q·n against every source row, computed once per (q, source)."""
        if self.dense is None:
            self.dense = full_precision(self.q.to(self.source.dtype) @ self.source.t())
        return self.dense

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions (B, S) within each query's real negatives -> rows of ``source``."""
        return positions if self.index is None else self.index.gather(1, positions)

    def vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Source rows (B, S) -> float vectors (B, S, D), detached."""
        return full_precision(self.source[rows])

    def real_similarities(self) -> torch.Tensor:
        """(B, K) q·n over each query's real negatives."""
        if self.index is None:
            return self.dense_similarities()
        if self.source.shape[0] <= DENSE_ROWS:
            return self.dense_similarities().gather(1, self.index)
        return torch.einsum("bd,bkd->bk", self.q, self.vectors(self.index))

    def real_labels(self) -> torch.Tensor | None:
        """(B, K) or (K,) labels of the real negatives, None when the source has none."""
        if self.labels is None:
            return None
        return self.labels if self.index is None else self.labels[self.index]

    def synthetic_similarities(self) -> torch.Tensor | None:
        """(B, S) q·h over the synthetic negatives, or None."""
        if self.synthetic is None:
            return None
        return torch.einsum("bd,bsd->bs", self.q, self.synthetic)

    def add_synthetic(self, extra: torch.Tensor) -> "NegativeSet":
        extra = extra.detach()
        synthetic = extra if self.synthetic is None else torch.cat([self.synthetic, extra], dim=1)
        return self.with_(synthetic=synthetic)
