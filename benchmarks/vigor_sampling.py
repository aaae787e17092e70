#!/usr/bin/env python
"""VIGOR's hard-negative batches at the real sizes, on synthetic satellite grids:

1. GPS neighbours: ours (haversine on radians) against Sample4Geo's table, which feeds
   degrees to sklearn's haversine (calc_distance_vigor.py:40-41). Per city, a grid of tiles
   half a tile apart (VIGOR's spacing: 0.00032807° of latitude, the same metres east-west),
   60 % of them positives; the top 128 neighbours of the tiles at least 12 tiles from the
   border are compared: overlap of the first 32 (the ones a batch always takes with
   neighbour_select 64) and of all 128, and how far the 128th lies. Tiles on a grid tie in
   distance, so the same comparison against the reference's code fed radians shows how much
   of the difference is only the order among ties.
2. One epoch of pair batches (batch 128, neighbour_select 64, range 128) over 52,609 pairs
   (the same-area training size) on ``--sats`` positive satellites, some with two panoramas:
   ``vigor_pair_batches`` against the transcription of Sample4Geo's ``shuffle`` with the same
   ``random.Random`` seed: batches, pairs left out, whether the reference's 1024-rejection
   stop ended the epoch early, seconds.

    python benchmarks/vigor_sampling.py [--pairs 52609] [--sats 40000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from common import publish  # noqa: E402
from test_vigor import reference_shuffle  # noqa: E402

from vissl_neg.geo.sampling import EARTH_RADIUS_KM, gps_neighbours, haversine_km, vigor_pair_batches  # noqa: E402

CITY_LATITUDES = {"Chicago": 41.87, "NewYork": 40.74, "SanFrancisco": 37.77, "Seattle": 47.62}
HALF_TILE_DEG = 0.00032807  # VIGOR's satellite_list.txt: latitude step between neighbouring tiles


def grid(lat0: float, lon0: float, side: int, share: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (coords (n, 2) degrees of the positive tiles, grid (n, 2) row/column)."""
    a, b = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    rc = torch.stack([a.flatten(), b.flatten()], dim=1)
    rc = rc[torch.rand(rc.shape[0], generator=g) < share]
    lat = lat0 + rc[:, 0].double() * HALF_TILE_DEG
    lon = lon0 + rc[:, 1].double() * HALF_TILE_DEG / math.cos(math.radians(lat0))
    return torch.stack([lat, lon], dim=1), rc


def degrees_fed_neighbours(coords: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Sample4Geo's table: haversine on degree values read as radians, self excluded -> (n, k)."""
    lat, lon = coords[:, 0], coords[:, 1]
    out = []
    for s in range(0, len(coords), chunk):
        la, lo = lat[s : s + chunk, None], lon[s : s + chunk, None]
        h = torch.sin((lat - la) / 2) ** 2 + torch.cos(la) * torch.cos(lat) * torch.sin((lon - lo) / 2) ** 2
        d = 2 * torch.asin(h.clamp(0, 1).sqrt())
        rows = torch.arange(d.shape[0])
        d[rows, rows + s] = math.inf
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def gps_part(side: int, k: int, margin: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    results = []
    for city, lat0 in CITY_LATITUDES.items():
        coords, rc = grid(lat0, -90.0, side, 0.6, g)
        ids = list(range(len(coords)))
        ours = torch.tensor([v for _, v in sorted(gps_neighbours(ids, coords, k).items())])
        ref = degrees_fed_neighbours(coords, k)
        control = degrees_fed_neighbours(torch.deg2rad(coords), k)  # the reference's code given radians
        inner = ((rc >= margin) & (rc < side - margin)).all(dim=1).nonzero().flatten()
        overlap32, overlap128, far_ours, far_ref, control32 = [], [], [], [], []
        for i in inner.tolist():
            control32.append(len(set(ours[i, :32].tolist()) & set(control[i, :32].tolist())) / 32)
            overlap32.append(len(set(ours[i, :32].tolist()) & set(ref[i, :32].tolist())) / 32)
            overlap128.append(len(set(ours[i].tolist()) & set(ref[i].tolist())) / k)
            for table, store in ((ours, far_ours), (ref, far_ref)):
                j = table[i, -1]
                store.append(1000 * haversine_km(coords[i, 0], coords[i, 1], coords[j, 0], coords[j, 1]).item())
        scale = abs(math.cos(lat0)) / math.cos(math.radians(lat0))
        results.append(
            {
                "city": city,
                "latitude": lat0,
                "east_west_scale": scale,
                "positives": len(ids),
                "measured_tiles": len(inner),
                "overlap_first_32": statistics.mean(overlap32),
                "overlap_128": statistics.mean(overlap128),
                "overlap_first_32_reference_code_on_radians": statistics.mean(control32),
                "median_m_128th_ours": statistics.median(far_ours),
                "median_m_128th_reference": statistics.median(far_ref),
            }
        )
    return results


def sampler_part(pairs: int, sats: int, seeds: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    two = pairs - sats
    pair_sats = list(range(sats)) + torch.randperm(sats, generator=g)[:two].tolist()
    random.Random(2).shuffle(pair_sats)
    side = math.ceil(math.sqrt(sats / 0.6))
    coords, _ = grid(41.87, -87.7, side, 1.0, g)
    coords = coords[torch.randperm(len(coords), generator=g)[:sats]]
    near = gps_neighbours(list(range(sats)), coords, 128)
    results = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        ours = vigor_pair_batches(pair_sats, 128, near, 64, 128, random.Random(seed))
        t_ours = time.perf_counter() - t0
        ours_1024 = vigor_pair_batches(pair_sats, 128, near, 64, 128, random.Random(seed), max_rejections=1024)
        t0 = time.perf_counter()
        ref = reference_shuffle(list(enumerate(pair_sats)), near, 128, 64, 128, random.Random(seed))
        t_ref = time.perf_counter() - t0
        results.append(
            {
                "seed": seed,
                "batches_ours": len(ours),
                "pairs_left_out_ours": pairs - 128 * len(ours),
                "batches_reference": len(ref),
                "pairs_left_out_reference": pairs - 128 * len(ref),
                "reference_equals_ours_with_1024_stop": ref == ours_1024,
                "reference_equals_ours": ref == ours,
                "seconds_ours": t_ours,
                "seconds_reference": t_ref,
            }
        )
        print(results[-1], file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=52609)
    parser.add_argument("--sats", type=int, default=40000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--side", type=int, default=80, help="tiles a side of each city's GPS grid")
    parser.add_argument("--out", default="benchmarks/results/vigor_sampling.md")
    args = parser.parse_args()
    gps = gps_part(args.side, 128, 12)
    batches = sampler_part(args.pairs, args.sats, args.seeds)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; Earth radius {EARTH_RADIUS_KM:g} km.",
        "",
        f"GPS neighbours (top 128) on a {args.side} x {args.side} grid of tiles per city, 60 % positives, "
        "tiles at least 12 from the border:",
        "",
        "| city | lat | E-W scale in the reference | first 32 shared | 128 shared | first 32 shared with the "
        "reference's code fed radians (ties) | 128th, ours (m) | 128th, reference (m) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in gps:
        lines.append(
            f"| {r['city']} | {r['latitude']:.2f} | {r['east_west_scale']:.2f} | {100 * r['overlap_first_32']:.1f} % "
            f"| {100 * r['overlap_128']:.1f} % | {100 * r['overlap_first_32_reference_code_on_radians']:.1f} % "
            f"| {r['median_m_128th_ours']:.0f} | {r['median_m_128th_reference']:.0f} |"
        )
    lines += [
        "",
        f"One epoch of pair batches: {args.pairs:,} pairs on {args.sats:,} satellites "
        f"({args.pairs - args.sats:,} with two panoramas), batch 128, neighbour_select 64, range 128, GPS lists:",
        "",
        "| seed | batches (ours) | left out (ours) | batches (reference) | left out (reference) "
        "| reference = ours with max_rejections=1024 | seconds ours / reference |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in batches:
        lines.append(
            f"| {r['seed']} | {r['batches_ours']} | {r['pairs_left_out_ours']} | {r['batches_reference']} "
            f"| {r['pairs_left_out_reference']} | {r['reference_equals_ours_with_1024_stop']} "
            f"| {r['seconds_ours']:.1f} / {r['seconds_reference']:.1f} |"
        )
    publish(lines, {"gps": gps, "batches": batches, "args": vars(args)}, args.out, None, "vigor_sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
