#!/usr/bin/env python
"""Peak memory of ``recall_at_k`` at CVUSA-test x million-reference scale: Q = 8,884
queries, R = 1,000,000 references, D = 1,024 (a dense Q x R score matrix would be 35.5 GB).

Peak RSS is read with getrusage before and after the call; the inputs are allocated (and
normalised in place) first, so the increase is what recall_at_k itself needs.

    python benchmarks/recall_memory.py [--queries 8884] [--references 1000000] [--dim 1024] [--readme README.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import peak_rss_mb, publish  # noqa: E402

from vissl_neg.geo.metrics import DEFAULT_BUDGET, recall_at_k  # noqa: E402

MB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=8884)
    parser.add_argument("--references", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--out", default="benchmarks/results/recall_memory.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(args.references, args.dim, generator=g)
    reference.div_(reference.norm(dim=1, keepdim=True))
    gt = torch.randint(args.references, (args.queries,), generator=g)  # each query is a noisy copy of its reference
    query = reference[gt].clone()
    query.add_(0.05 * torch.randn(query.shape, generator=g))
    query.div_(query.norm(dim=1, keepdim=True))
    inputs_mb = (reference.numel() + query.numel()) * 4 / MB
    before = peak_rss_mb()
    t0 = time.perf_counter()
    result = recall_at_k(query, reference, gt)
    seconds = time.perf_counter() - t0
    after = peak_rss_mb()
    chunk = max(1, DEFAULT_BUDGET // (4 * args.references))
    dense_mb = args.queries * args.references * 4 / MB
    rows = {
        "inputs_mb": inputs_mb,
        "peak_before_mb": before,
        "peak_after_mb": after,
        "increase_mb": after - before,
        "chunk_queries": chunk,
        "chunk_budget_mb": DEFAULT_BUDGET / MB,
        "dense_matrix_mb": dense_mb,
        "seconds": seconds,
        **result,
    }
    lines = [
        f"Q {args.queries:,} x R {args.references:,} x D {args.dim}, fp32, {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}",
        "",
        "| quantity | MiB |",
        "|---|---|",
        f"| query + reference embeddings (the inputs) | {inputs_mb:,.0f} |",
        f"| peak RSS before recall_at_k | {before:,.0f} |",
        f"| peak RSS after recall_at_k | {after:,.0f} |",
        f"| **increase during recall_at_k** | **{after - before:,.0f}** |",
        f"| chunk budget ({chunk} queries x R scores) | {DEFAULT_BUDGET / MB:,.0f} |",
        f"| a dense Q x R score matrix, for comparison | {dense_mb:,.0f} |",
        "",
        f"{seconds:.0f} s on this CPU (R@1 {result['R@1']:.2f} on these synthetic embeddings).",
    ]
    publish(lines, rows, args.out, args.readme, "recall_memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
