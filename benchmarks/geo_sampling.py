#!/usr/bin/env python
"""What hard-negative batches cost at CVUSA scale (35,532 training pairs), on this machine:
GPS neighbours (top 128 by haversine), similarity mining (top 128 of 1,024-d embeddings,
chunked) and building one epoch of batches (batch 128, neighbour_select 64, range 128).

Peak RSS increases are read with getrusage around each call (each call runs after the
previous ones, so an increase is what that call needs beyond the earlier peak). The dense
35,532² float64 distance matrix the reference script builds is given for comparison.

    python benchmarks/geo_sampling.py [--pairs 35532] [--dim 1024] [--readme README.md]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402
from vissl_neg.geo.sampling import gps_neighbours, mined_neighbours, neighbour_batches  # noqa: E402

MB = 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(fn):
    before, t0 = peak_rss_mb(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, peak_rss_mb() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=35532)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--out", default="benchmarks/results/geo_sampling.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    n = args.pairs
    g = torch.Generator().manual_seed(0)
    ids = list(range(1, n + 1))
    coords = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * 15 + 30,  # the contiguous USA
                          torch.rand(n, generator=g, dtype=torch.float64) * 50 - 120], dim=1)
    pano = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1)
    sat = torch.nn.functional.normalize(pano + 0.5 * torch.randn(n, args.dim, generator=g), dim=1)
    gps, gps_s, gps_mb = measure(lambda: gps_neighbours(ids, coords, 128))
    mined, mine_s, mine_mb = measure(lambda: mined_neighbours(ids, pano, sat, 128))
    batches, batch_s, batch_mb = measure(lambda: neighbour_batches(ids, 128, mined, 64, 128, random.Random(0)))
    dense_mb = n * n * 8 / MB
    data = {"pairs": n, "dim": args.dim, "gps_seconds": gps_s, "gps_peak_increase_mb": gps_mb,
            "mine_seconds": mine_s, "mine_peak_increase_mb": mine_mb, "batches_seconds": batch_s,
            "batches": len(batches), "dense_distance_matrix_mb": dense_mb, "threads": torch.get_num_threads()}
    lines = [
        f"{n:,} training pairs, {args.dim}-d embeddings, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "",
        "| step | seconds | peak RSS increase (MiB) |",
        "|---|---:|---:|",
        f"| GPS neighbours, top 128 (unit-vector candidates, haversine re-rank, chunks of 1,024) | {gps_s:.1f} | {gps_mb:,.0f} |",
        f"| mined neighbours, top 128 of {n:,} satellites (chunks of 1,024 panoramas) | {mine_s:.1f} | {mine_mb:,.0f} |",
        f"| one epoch of hard-negative batches ({len(batches)} × 128) | {batch_s:.2f} | {batch_mb:,.0f} |",
        "",
        f"A dense {n:,}² float64 distance matrix, as the reference's GPS script builds, would take {dense_mb:,.0f} MiB.",
    ]
    publish(lines, data, args.out, args.readme, "geo_sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
