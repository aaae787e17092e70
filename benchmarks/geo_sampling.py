#!/usr/bin/env python
"""What hard-negative batches cost at CVUSA scale (35,532 training pairs), on this machine:
GPS neighbours (top 128 by haversine), similarity mining (top 128 of 1,024-d embeddings,
chunked) and building one epoch of batches (batch 128, neighbour_select 64, range 128).

Each part runs in its own process, which builds its inputs first and reads its peak RSS
(getrusage) before and after the call, so an increase is what that call needs. The dense
35,532² float64 distance matrix the reference script builds is given for comparison.

    python benchmarks/geo_sampling.py [--pairs 35532] [--dim 1024] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import peak_rss_mb, publish  # noqa: E402

from vissl_neg.geo.sampling import gps_neighbours, mined_neighbours, neighbour_batches  # noqa: E402

MB = 2**20


def run_part(part: str, n: int, dim: int) -> dict:
    """Build the inputs of ``part``, then time it and its peak RSS increase."""
    g = torch.Generator().manual_seed(0)
    ids = list(range(1, n + 1))
    pano = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    sat = torch.nn.functional.normalize(pano + 0.5 * torch.randn(n, dim, generator=g), dim=1)
    if part == "gps":
        coords = torch.stack(
            [
                torch.rand(n, generator=g, dtype=torch.float64) * 15 + 30,  # the contiguous USA
                torch.rand(n, generator=g, dtype=torch.float64) * 50 - 120,
            ],
            dim=1,
        )
        call = lambda: gps_neighbours(ids, coords, 128)  # noqa: E731
    elif part == "mine":
        call = lambda: mined_neighbours(ids, pano, sat, 128)  # noqa: E731
    else:
        near = mined_neighbours(ids, pano, sat, 128)
        call = lambda: neighbour_batches(ids, 128, near, 64, 128, random.Random(0))  # noqa: E731
    before, t0 = peak_rss_mb(), time.perf_counter()
    out = call()
    return {"seconds": time.perf_counter() - t0, "peak_increase_mb": peak_rss_mb() - before, "count": len(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=35532)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--part", choices=("gps", "mine", "batches"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/geo_sampling.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args.pairs, args.dim)))
        return 0
    n = args.pairs
    parts = {}
    for part in ("gps", "mine", "batches"):
        proc = subprocess.run(
            [sys.executable, __file__, "--part", part, "--pairs", str(n), "--dim", str(args.dim)],
            capture_output=True,
            text=True,
            check=True,
        )
        parts[part] = json.loads(proc.stdout.strip().splitlines()[-1])
    dense_mb = n * n * 8 / MB
    data = {
        "pairs": n,
        "dim": args.dim,
        **parts,
        "dense_distance_matrix_mb": dense_mb,
        "threads": torch.get_num_threads(),
    }
    row = "| {} | {:.2f} | {:,.0f} |"
    lines = [
        f"{n:,} training pairs, {args.dim}-d embeddings, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "",
        "| step | seconds | peak RSS increase (MiB) |",
        "|---|---:|---:|",
        row.format(
            "GPS neighbours, top 128 (unit-vector candidates, haversine re-rank, chunks of 1,024)",
            parts["gps"]["seconds"],
            parts["gps"]["peak_increase_mb"],
        ),
        row.format(
            f"mined neighbours, top 128 of {n:,} satellites (chunks of 1,024 panoramas; scoring only, "
            "the encoder pass over the pairs comes on top)",
            parts["mine"]["seconds"],
            parts["mine"]["peak_increase_mb"],
        ),
        row.format(
            f"one epoch of hard-negative batches ({parts['batches']['count']} × 128)",
            parts["batches"]["seconds"],
            parts["batches"]["peak_increase_mb"],
        ),
        "",
        f"A dense {n:,}² float64 distance matrix, as the reference's GPS script builds, would take {dense_mb:,.0f} MiB.",
    ]
    publish(lines, data, args.out, args.readme, "geo_sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
