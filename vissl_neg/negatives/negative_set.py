"""The negatives one training step contrasts against, as strategies pass them along.

Synthetic negatives are kept as :class:`Mixes`, two-term combinations of source rows (or
of the detached query) with explicit coefficients, so their similarities come from the
step's (B, M) similarity matrix instead of (B, S, D) tensors; :meth:`Mixes.vectors`
materialises them where vectors are wanted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

# Above this many source rows, per-query similarities come from GatheredDot instead of one
# (B, M) matrix product followed by a gather.
DENSE_ROWS = 131_072
# Pairs per chunk in row_combination: keeps the (chunk, D) intermediate in cache.
CHUNK = 16_384


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 -> float32; float32 and float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def take(negatives: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of shared (K, D) or per-query (B, K, D) negatives: rows (B, S) -> (B, S, D)."""
    if negatives.dim() == 2:
        return negatives[rows]
    batch = torch.arange(rows.shape[0], device=rows.device).unsqueeze(1)
    return negatives[batch, rows]


def flat_source(negatives: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, D) or (B, K, D) negatives and per-query rows (B, S) -> a (M, D) source and rows into it."""
    if negatives.dim() == 2:
        return negatives, rows
    b, k, d = negatives.shape
    offset = torch.arange(b, device=rows.device).unsqueeze(1) * k
    return negatives.reshape(b * k, d), rows + offset


def row_combination(
    source: torch.Tensor,
    rows_a: torch.Tensor,
    rows_b: torch.Tensor,
    coef_a: torch.Tensor,
    coef_b: torch.Tensor,
    norm: bool = False,
) -> torch.Tensor:
    """coef_a · source[rows_a] + coef_b · source[rows_b] for rows and coefficients of any
    equal shape (...) -> (..., D), or with ``norm`` only its norm (...), computed in chunks
    with ``embedding_bag`` (one gather-and-sum pass, no (..., D) tensor for the norm)."""
    shape = rows_a.shape
    rows = torch.stack([rows_a.reshape(-1), rows_b.reshape(-1)], dim=1)
    dtype = torch.promote_types(source.dtype, coef_a.dtype)
    coefs = torch.stack([coef_a.reshape(-1), coef_b.reshape(-1)], dim=1).to(dtype)
    src = source.to(dtype)
    n = rows.shape[0]
    chunks = []
    for start in range(0, n, CHUNK):
        r, c = rows[start : start + CHUNK], coefs[start : start + CHUNK]
        offsets = torch.arange(0, 2 * r.shape[0], 2, device=r.device)
        v = F.embedding_bag(r.reshape(-1), src, offsets, mode="sum", per_sample_weights=c.reshape(-1))
        chunks.append(v.norm(dim=1) if norm else v)
    out = torch.cat(chunks) if chunks else torch.empty(0, source.shape[1], dtype=dtype, device=source.device)
    return out.reshape(shape) if norm else out.reshape(*shape, source.shape[1])


class GatheredDot(torch.autograd.Function):
    """sims[b, k] = q[b] · source[rows[b, k]] without a (B, K, D) tensor: the forward
    gathers ``CHUNK // B`` columns at a time, the backward is one ``embedding_bag``
    (grad_q[b] = Σ_k grad[b, k] · source[rows[b, k]]). No gradient reaches ``source``."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(source, rows)
        step = max(1, CHUNK // max(1, q.shape[0]))
        qf = full_precision(q)
        parts = [
            torch.einsum("bd,bkd->bk", qf, full_precision(source[rows[:, k : k + step]]))
            for k in range(0, rows.shape[1], step)
        ]
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        source, rows = ctx.saved_tensors
        weights = grad.to(full_precision(source).dtype)
        grad_q = F.embedding_bag(rows, full_precision(source), mode="sum", per_sample_weights=weights.contiguous())
        return grad_q, None, None


@dataclass
class Mixes:
    """S synthetic negatives per query, each ``a_coef · A + b_coef · B`` with B the source
    row ``b_rows`` and A the source row ``a_rows`` or, where ``a_rows`` < 0, ``anchor``
    (the detached query (B, D) when the mixes were made). Rows and coefficients (B, S)."""

    a_rows: torch.Tensor
    b_rows: torch.Tensor
    a_coef: torch.Tensor
    b_coef: torch.Tensor
    anchor: torch.Tensor

    def similarities(self, q: torch.Tensor, row_similarities) -> torch.Tensor:
        """(B, S) q·mix, from ``row_similarities(rows) -> q·source[rows]``; grads reach q only."""
        s_a, s_b = row_similarities(torch.cat([self.a_rows.clamp_min(0), self.b_rows], dim=1)).chunk(2, dim=1)
        s_a = torch.where(self.a_rows >= 0, s_a, (q * self.anchor).sum(1, keepdim=True))
        return self.a_coef * s_a + self.b_coef * s_b

    def vectors(self, source: torch.Tensor) -> torch.Tensor:
        """(B, S, D) the synthetic negatives themselves, detached."""
        with torch.no_grad():
            from_rows = self.a_rows >= 0
            rows_a = torch.where(from_rows, self.a_rows, self.b_rows)
            coef_a = torch.where(from_rows, self.a_coef, torch.zeros_like(self.a_coef))
            out = row_combination(source, rows_a, self.b_rows, coef_a, self.b_coef)
            anchor = (self.a_coef * ~from_rows).unsqueeze(-1) * self.anchor.unsqueeze(1)
            return out + anchor.to(out.dtype)


@dataclass
class NegativeSet:
    """Queries, positives and negatives of one step.

    q (B, D) carries the gradient; k (B, D) is detached. Real negatives are rows of
    ``source`` (M, D) (the queue, or the memory bank), all of them for every query when
    ``index`` is None, else the rows ``index`` (B, K) per query. ``labels`` (M,) beside
    the source (-1 unknown) serve diagnostics only. ``synthetic`` holds the detached
    per-query :class:`Mixes` made by the strategies; they are never enqueued.
    ``suspected`` (B, K) bool marks real negatives taken for false negatives (in the
    order of each query's real negatives); the loss then cancels them (see
    ``losses/false_negatives.py``). Strategies that narrow the real negatives later go
    through :meth:`restrict`, which carries the marks along.
    """

    q: torch.Tensor
    k: torch.Tensor
    source: torch.Tensor
    labels: torch.Tensor | None = None
    index: torch.Tensor | None = None
    synthetic: tuple[Mixes, ...] = ()
    suspected: torch.Tensor | None = None
    cancel: str = "eliminate"  # how the loss cancels the suspected: eliminate | attract
    dense: torch.Tensor | None = field(default=None, repr=False)  # cached (B, M) q·source

    def with_(self, **changes) -> NegativeSet:
        if "source" in changes and self.synthetic:
            raise ValueError("the negative source cannot change after synthetic negatives were mixed from it")
        if "index" in changes and self.suspected is not None and "suspected" not in changes:
            raise ValueError("the real negatives cannot change without their suspected marks; use restrict()")
        if "q" in changes or "source" in changes:
            changes.setdefault("dense", None)
        return replace(self, **changes)

    def restrict(self, positions: torch.Tensor) -> NegativeSet:
        """Keep, per query, only the real negatives at ``positions`` (B, S) (and their marks)."""
        suspected = None if self.suspected is None else self.suspected.gather(1, positions)
        return self.with_(index=self.rows(positions), suspected=suspected)

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions (B, S) within each query's real negatives -> rows of ``source``."""
        return positions if self.index is None else self.index.gather(1, positions)

    def dense_similarities(self) -> torch.Tensor:
        """(B, M) q·n against every source row, computed once per (q, source)."""
        if self.dense is None:
            self.dense = full_precision(self.q.to(self.source.dtype) @ self.source.t())
        return self.dense

    def row_similarities(self, rows: torch.Tensor) -> torch.Tensor:
        """Source rows (B, S) -> (B, S) q·source[rows]."""
        if self.source.shape[0] <= DENSE_ROWS:
            return self.dense_similarities().gather(1, rows)
        return GatheredDot.apply(self.q, self.source, rows)

    def real_similarities(self) -> torch.Tensor:
        """(B, K) q·n over each query's real negatives."""
        if self.index is None:
            return self.dense_similarities()
        return self.row_similarities(self.index)

    def key_similarities(self) -> torch.Tensor:
        """(B, K) k·n over each query's real negatives, without gradient."""
        with torch.no_grad():
            k = self.k.detach()
            if self.index is not None and self.source.shape[0] > DENSE_ROWS:
                return GatheredDot.apply(k, self.source, self.index)
            dense = full_precision(k.to(self.source.dtype) @ self.source.t())
            return dense if self.index is None else dense.gather(1, self.index)

    def real_labels(self) -> torch.Tensor | None:
        """(B, K) or (K,) labels of the real negatives, None when the source has none."""
        if self.labels is None:
            return None
        return self.labels if self.index is None else self.labels[self.index]

    def synthetic_similarities(self) -> torch.Tensor | None:
        """(B, S) q·h over the synthetic negatives, or None."""
        if not self.synthetic:
            return None
        return torch.cat([m.similarities(self.q, self.row_similarities) for m in self.synthetic], dim=1)

    def synthetic_vectors(self) -> torch.Tensor | None:
        """(B, S, D) the synthetic negatives, detached, or None."""
        if not self.synthetic:
            return None
        return torch.cat([m.vectors(self.source) for m in self.synthetic], dim=1)

    def add_synthetic(self, mixes: Mixes) -> NegativeSet:
        return replace(self, synthetic=self.synthetic + (mixes,))
