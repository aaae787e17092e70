#!/usr/bin/env python
"""Time and peak memory of the cross-view retrieval metrics (vissl_neg/geo/metrics.py) at the
real test sizes of Sample4Geo's benchmarks, on random unit embeddings of D = 1,024
(ConvNeXt-B's width), beside the reference code's way.

    CVACT test             92,802 queries x 92,802 references   recall_at_k
    VIGOR same-area        52,605 x 90,618                       vigor_recall (3 semi-positives each)
    VIGOR cross-area       53,694 x 46,563                       vigor_recall
    University-1652 D2S    37,855 drone x 951 satellite          university1652_metrics (250 distractor classes)
    University-1652 S2D    701 satellite x 51,355 drone          university1652_metrics

The chunked way holds at most ``--budget`` bytes of per-score working memory (256 MiB by
default) plus a few bytes per query, whatever the sizes: its peak memory beyond the inputs
is bounded by budget + 64 bytes x Q + 16 MiB for the matrix product's buffers (the bound
column). The reference's way for CVACT and
VIGOR (Sample4Geo ``calculate_scores``) builds the full Q x R float32 score matrix from
1,000-query slices and then loops over the queries in Python: Q x R x 4 bytes, twice that
while the slices and their concatenation coexist. Where that peak exceeds ``--dense-limit``
(2 GiB by default: the machine is shared, and at full size it is 19-69 GB) it is measured on
the first Q' queries, with the chunked way timed on the same Q' queries, and its full-size
memory is stated from the formula and its full-size time extrapolated linearly in Q (both its
product and its loop are linear in Q). University-1652's reference scores one query at a
time (no Q x G matrix) and runs at full size.

Each case runs in a child process; the peak is the kernel's high-water mark of resident
memory (VmHWM), reset (/proc/self/clear_refs) after the inputs are built and both ways have
run once on 64 queries (which pages in the kernels' code), minus the resident memory then. Run it alone, niced: ``nice -n 19 python benchmarks/geo_retrieval.py
--readme README.md`` (about 20 CPU minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish, reset_peak_rss, rss_mb  # noqa: E402

from vissl_neg.geo.metrics import DEFAULT_BUDGET, recall_at_k, university1652_metrics, vigor_recall  # noqa: E402

MB, GB = 2**20, 2**30
CASES = {  # name: (label, queries, references, kind)
    "cvact": ("CVACT test", 92_802, 92_802, "recall"),
    "vigor_same": ("VIGOR same-area", 52_605, 90_618, "vigor"),
    "vigor_cross": ("VIGOR cross-area", 53_694, 46_563, "vigor"),
    "u1652_d2s": ("University-1652 drone → satellite", 37_855, 951, "d2s"),
    "u1652_s2d": ("University-1652 satellite → drone", 701, 51_355, "s2d"),
}
U1652_CLASSES, U1652_QUERY_CLASSES = 951, 701
BYTES_PER_QUERY = 64  # the per-query outputs and index copies of the chunked way, rounded up
SLACK = 16 * MB  # the matrix product's packing buffers and the allocator's rounding


# ------------------------------------------------------------------ inputs, built without large temporaries


def _unit_rows(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.empty(n, dim)
    for s in range(0, n, 8192):
        block = x[s : s + 8192]
        block.normal_(generator=gen)
        block.div_(block.norm(dim=1, keepdim=True))
    return x


def _noisy_copies(centres: torch.Tensor, idx: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Unit rows centres[idx] + noise x N(0, 1)."""
    x = torch.empty(len(idx), centres.shape[1])
    for s in range(0, len(idx), 8192):
        block = x[s : s + 8192]
        torch.index_select(centres, 0, idx[s : s + 8192], out=block)
        block.add_(noise * torch.randn(block.shape, generator=gen))
        block.div_(block.norm(dim=1, keepdim=True))
    return x


def _spread(n: int, groups: int) -> torch.Tensor:
    """n labels over ``groups`` classes, as evenly as possible (54 or 55 each here)."""
    return torch.arange(n) % groups


def build(kind: str, q_count: int, r_count: int, dim: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if kind in ("recall", "vigor"):
        reference = _unit_rows(r_count, dim, gen)
        positive = (
            torch.arange(q_count) % r_count if q_count == r_count else torch.randint(r_count, (q_count,), generator=gen)
        )
        query = _noisy_copies(reference, positive, 0.08, gen)  # panoramas near their tiles: most ranks small
        out = {"query": query, "reference": reference, "positive": positive}
        if kind == "vigor":
            out["semi"] = (positive[:, None] + torch.tensor([1, 2, 3])) % r_count  # three neighbouring tiles
        return out
    centres = _unit_rows(U1652_CLASSES, dim, gen)
    if kind == "d2s":  # drone queries of the 701 query classes; one satellite per class of all 951
        q_labels, g_labels = _spread(q_count, U1652_QUERY_CLASSES), torch.arange(U1652_CLASSES)
        query, gallery = _noisy_copies(centres, q_labels, 0.06, gen), _noisy_copies(centres, g_labels, 0.02, gen)
    else:  # one satellite per query class; drone images of all 951 classes
        q_labels, g_labels = torch.arange(U1652_QUERY_CLASSES), _spread(r_count, U1652_CLASSES)
        query, gallery = _noisy_copies(centres, q_labels, 0.02, gen), _noisy_copies(centres, g_labels, 0.06, gen)
    return {"query": query, "reference": gallery, "query_labels": q_labels, "gallery_labels": g_labels}


# ------------------------------------------------------------------ the reference code's way (transcribed)


def reference_way(kind: str, data: dict, q_count: int) -> dict:
    """Sample4Geo @ 498c651: evaluate/cvusa_and_cvact.py:67-139 and evaluate/vigor.py:66-150
    (``calculate_scores``: full Q x R matrix from 1,000-query slices, then a loop over the
    queries), evaluate/university.py:8-111 (one query at a time), on the first q_count queries.
    Labels are positions (ref2index is the identity); printing and tqdm left out."""
    query = data["query"][:q_count]
    if kind == "d2s" or kind == "s2d":
        gf, gl = data["reference"], data["gallery_labels"].numpy()
        ql = data["query_labels"][:q_count].numpy()
        cmc = torch.IntTensor(len(gl)).zero_()
        ap = 0.0
        for i in range(q_count):
            score = (gf @ query[i].unsqueeze(-1)).squeeze().numpy()
            index = np.argsort(score)[::-1]
            good_index, junk_index = np.argwhere(gl == ql[i]), np.argwhere(gl == -1)
            ap_tmp, cmc_tmp = _u1652_compute_map(index, good_index, junk_index)
            if cmc_tmp[0] == -1:
                continue
            cmc = cmc + cmc_tmp
            ap += ap_tmp
        cmc_f = cmc.float() / q_count
        out = {f"R@{k}": float(cmc_f[k - 1] * 100) for k in (1, 5, 10)}
        out["R@1%"] = float(cmc_f[round(len(gl) * 0.01)] * 100)
        out["mAP"] = ap / q_count * 100
        return out
    reference = data["reference"]
    labels = data["positive"][:q_count].numpy()
    semi = data["semi"][:q_count].numpy() if kind == "vigor" else None
    topk = copy.deepcopy([1, 5, 10])
    big_r = len(reference)
    similarity_list = []
    for i in range(q_count // 1000 + 1):
        similarity_list.append((query[1000 * i : 1000 * (i + 1)] @ reference.T).cpu())
    similarity = torch.cat(similarity_list, dim=0)  # matrix Q x R
    topk.append(big_r // 100)
    results = np.zeros([len(topk)])
    hit_rate = 0.0
    for i in range(q_count):
        gt_sim = similarity[i, labels[i]]
        higher_sim = similarity[i, :] > gt_sim
        ranking = higher_sim.sum()
        for j, k in enumerate(topk):
            if ranking < k:
                results[j] += 1.0
        if semi is not None:
            mask = torch.ones(big_r)
            for near_pos in semi[i]:
                mask[near_pos] = 0
            if (higher_sim * mask).sum() < 1:
                hit_rate += 1.0
    results = results / q_count * 100.0
    out = dict(zip(["R@1", "R@5", "R@10", "R@1%"], results.tolist()))
    if semi is not None:
        out["hit_rate"] = hit_rate / q_count * 100
    return out


def _u1652_compute_map(index, good_index, junk_index):
    """Sample4Geo evaluate/university.py:84-111 (np.in1d is np.isin in numpy 2.4)."""
    ap = 0.0
    cmc = torch.IntTensor(len(index)).zero_()
    if good_index.size == 0:
        cmc[0] = -1
        return ap, cmc
    index = index[np.isin(index, junk_index, invert=True)]
    ngood = len(good_index)
    rows_good = np.argwhere(np.isin(index, good_index)).flatten()
    cmc[rows_good[0] :] = 1
    for i in range(ngood):
        precision = (i + 1) * 1.0 / (rows_good[i] + 1)
        old_precision = i * 1.0 / rows_good[i] if rows_good[i] != 0 else 1.0
        ap = ap + (1.0 / ngood) * (old_precision + precision) / 2
    return ap, cmc


# ------------------------------------------------------------------ one case (child process)


def chunked(kind: str, data: dict, q_count: int, budget: int) -> dict:
    query = data["query"][:q_count]
    if kind == "recall":
        return recall_at_k(query, data["reference"], data["positive"][:q_count], budget=budget)
    if kind == "vigor":
        return vigor_recall(query, data["reference"], data["positive"][:q_count], data["semi"][:q_count], budget=budget)
    return university1652_metrics(
        query, data["reference"], data["query_labels"][:q_count], data["gallery_labels"], budget=budget
    )


def measure(fn) -> tuple[dict, float, float]:
    """-> (result, seconds, peak resident increase in MiB) of fn()."""
    reset_peak_rss()
    base = rss_mb()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return result, seconds, rss_mb(peak=True) - base


def run_case(name: str, dim: int, budget: int, dense_limit: int) -> dict:
    label, q_count, r_count, kind = CASES[name]
    data = build(kind, q_count, r_count, dim)
    inputs_mb = (data["query"].numel() + data["reference"].numel()) * 4 / MB
    chunked(kind, data, 64, budget)  # warm-up: the kernels' code and thread pools are paged in before measuring
    reference_way(kind, data, 64)
    print(f"[{name}] inputs built ({inputs_mb:,.0f} MiB); chunked at full size ...", file=sys.stderr, flush=True)
    full, full_s, full_mb = measure(lambda: chunked(kind, data, q_count, budget))
    dense = kind in ("recall", "vigor")
    ref_peak = 8 * q_count * r_count if dense else None  # matrix + the slices it was concatenated from
    sub = min(q_count, max(1000, dense_limit // (8 * r_count))) if dense else q_count
    print(f"[{name}] reference way on {sub:,} queries ...", file=sys.stderr, flush=True)
    ref, ref_s, ref_mb = measure(lambda: reference_way(kind, data, sub))
    if sub < q_count:
        part, part_s, _ = measure(lambda: chunked(kind, data, sub, budget))
    else:
        part, part_s = full, full_s
    for key in ref:  # the same numbers both ways (the reference averages U1652's CMC in float32)
        assert abs(ref[key] - part[key]) < 1e-3, (name, key, ref[key], part[key])
    return {
        "name": name,
        "label": label,
        "queries": q_count,
        "references": r_count,
        "dim": dim,
        "inputs_mb": inputs_mb,
        "chunked_s": full_s,
        "chunked_peak_mb": full_mb,
        "chunked_bound_mb": (budget + BYTES_PER_QUERY * q_count + SLACK) / MB,
        "result": full,
        "ref_queries": sub,
        "ref_s": ref_s,
        "ref_peak_mb": ref_mb,
        "chunked_s_same_queries": part_s,
        "ref_full_s_estimate": ref_s * q_count / sub,
        "ref_matrix_bytes": 4 * q_count * r_count if dense else None,
        "ref_peak_bytes": ref_peak,
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------ driver


def table(rows: list[dict], budget: int, dense_limit: int, load: tuple[float, float]) -> list[str]:
    r0 = rows[0]
    lines = [
        f"Random unit embeddings, D = {r0['dim']}, float32, {r0['threads']} CPU threads, torch {torch.__version__}; "
        f"chunk budget {budget / MB:.0f} MiB. The machine was shared (load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end), so times of separate runs moved with the load: compare the two ways on the "
        'same queries ("there"). Peak = the increase of resident memory during the call.',
        "",
        "| benchmark | queries × references | chunked: s | chunked: peak MiB | bound MiB | reference: Q×R fp32 | "
        "reference: peak | reference run on | there: peak MiB | there: reference s / chunked s | reference s, "
        "full size |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["ref_matrix_bytes"]:
            matrix, peak = f"{r['ref_matrix_bytes'] / GB:,.1f} GiB", f"{r['ref_peak_bytes'] / GB:,.1f} GiB"
        else:
            matrix, peak = "none (one query at a time)", None
        part = r["ref_queries"] < r["queries"]
        on = f"{r['ref_queries']:,} queries" if part else "all queries"
        there = f"{r['ref_peak_mb']:,.0f}" if r["ref_peak_mb"] >= 1 else "< 1"
        peak = peak or f"{there} MiB (measured)"
        full = f"≈{r['ref_full_s_estimate']:,.0f} (extrapolated)" if part else f"{r['ref_s']:,.1f}"
        lines.append(
            f"| {r['label']} | {r['queries']:,} × {r['references']:,} | {r['chunked_s']:,.1f} | "
            f"{r['chunked_peak_mb']:,.0f} | {r['chunked_bound_mb']:,.0f} | {matrix} | {peak} | {on} | {there} | "
            f"{r['ref_s']:,.1f} / {r['chunked_s_same_queries']:,.1f} | {full} |"
        )
    lines += [
        "",
        "Bound = budget + 64 bytes per query + 16 MiB (the matrix product's buffers). The reference's CVACT / VIGOR "
        "peak is 2 × Q × R × 4 bytes (its 1,000-query slices and their concatenation); where that exceeds "
        f"{dense_limit / GB:.0f} GiB it ran on the first queries only, beside the chunked way on the same queries "
        "(both gave the same metrics), and its full-size time is extrapolated linearly in Q.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="bytes of per-score working memory")
    parser.add_argument("--dense-limit", type=int, default=2 * GB, help="bytes the reference's matrix may take")
    parser.add_argument("--out", default="benchmarks/results/geo_retrieval.md")
    parser.add_argument("--readme", default=None)
    parser.add_argument("--render", default=None, help="write the table from a results JSON of an earlier run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.dim, args.budget, args.dense_limit)))
        return 0
    if args.render:  # {"rows": [...], "load": [start, end]} as written below
        saved = json.loads(Path(args.render).read_text())
        lines = table(saved["rows"], args.budget, args.dense_limit, tuple(saved["load"]))
        publish(lines, saved, args.out, args.readme, "geo_retrieval")
        return 0
    rows, load_start = [], os.getloadavg()[0]
    for name in args.cases:  # one process per case: each peak is measured from a fresh heap
        cmd = [sys.executable, __file__, "--child", name, "--dim", str(args.dim), "--budget", str(args.budget)]
        cmd += ["--dense-limit", str(args.dense_limit)]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "result"}), file=sys.stderr, flush=True)
    load = (load_start, os.getloadavg()[0])
    lines = table(rows, args.budget, args.dense_limit, load)
    publish(lines, {"rows": rows, "load": load}, args.out, args.readme, "geo_retrieval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
