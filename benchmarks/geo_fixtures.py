#!/usr/bin/env python
"""Sample4Geo on the planted-structure fixtures of CVACT, VIGOR (same-area, cross-area) and
University-1652: each benchmark's fixture config trained with the recipe's batches and with
random batches, beside the untrained encoder (BN statistics re-estimated) and chance, several
seeds, mean ± std and every seed.

- CVACT, VIGOR: hard-negative batches (GPS neighbours, then neighbours mined every 4 epochs)
  against random batches (``data.neighbours=none``, ``sampling.mine_every=0``).
- University-1652: one pair per building in a batch (the reference's) against random batches
  (``data.batches=random``, where two drone images of one building can meet as negatives).

    python benchmarks/geo_fixtures.py --benchmark cvact [--seeds 0 1 2] [--readme README.md]

Each benchmark writes benchmarks/results/<benchmark>_fixture.md (and .json) and, with
--readme, the README's ``<benchmark>_fixture`` block. It takes CPU time: run it with nice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402

from vissl_neg.cli.evaluate import evaluate_geo_run  # noqa: E402
from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.geo_trainer import GeoTrainer  # noqa: E402
from vissl_neg.geo.fixture import write_cvact_fixture, write_university1652_fixture, write_vigor_fixture  # noqa: E402

HARD = "hard-negative batches (GPS, then mined every 4 epochs)"
RANDOM = "random batches"
BENCHMARKS = {
    # name: (config, fixture writer, variants, reported keys)
    "cvact": (
        "configs/cvact_fixture.yaml",
        write_cvact_fixture,
        {HARD: [], RANDOM: ["data.neighbours=none", "sampling.mine_every=0"]},
        ("R@1", "R@5", "R@10"),
    ),
    "vigor_same": (
        "configs/vigor_same_fixture.yaml",
        write_vigor_fixture,
        {HARD: [], RANDOM: ["data.neighbours=none", "sampling.mine_every=0"]},
        ("R@1", "R@5", "hit_rate"),
    ),
    "vigor_cross": (
        "configs/vigor_cross_fixture.yaml",
        write_vigor_fixture,
        {HARD: [], RANDOM: ["data.neighbours=none", "sampling.mine_every=0"]},
        ("R@1", "R@5", "hit_rate"),
    ),
    "university1652": (
        "configs/university1652_fixture.yaml",
        write_university1652_fixture,
        {"one pair per building (the reference's batches)": [], RANDOM: ["data.batches=random"]},
        ("d2s/R@1", "d2s/mAP", "s2d/R@1", "s2d/mAP"),
    ),
}


def mean_std(values: list[float]) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    return f"{values[0]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=list(BENCHMARKS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None)
    parser.add_argument("--readme", default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every run's config")
    parser.add_argument(
        "--fixture", nargs="*", default=[], metavar="KEY=INT", help="integer arguments of the fixture writer"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"{args.benchmark}_fixture_") as work:
        return run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> int:
    config, write, variants, keys = BENCHMARKS[args.benchmark]
    fixture = {k: int(v) for k, v in (item.split("=", 1) for item in args.fixture)}
    write(work / "data", **fixture)
    rows: dict[str, dict] = {"untrained encoder": {k: [] for k in keys} | {"seconds": []}}
    for name in variants:
        rows[name] = {k: [] for k in keys} | {"seconds": []}
    sizes = {}
    for seed in args.seeds:
        for v, (name, extra) in enumerate(variants.items()):
            out = work / f"run{v}_seed{seed}"
            cfg = load_config(
                config,
                [
                    f"data.root={work / 'data'}",
                    f"train.out_dir={out}",
                    f"train.seed={seed}",
                    "train.progress=false",
                    *args.set,
                    *extra,
                ],
            )
            t0 = time.perf_counter()
            trainer = GeoTrainer(cfg, resume=False)
            result = trainer.fit()
            rows[name]["seconds"].append(time.perf_counter() - t0)
            for k in keys:
                rows[name][k].append(result["recall"][k])
            print(f"{args.benchmark} seed {seed} {name}: " + ", ".join(f"{k} {result['recall'][k]:.1f}" for k in keys))
            if v == 0:
                sizes = {"train": len(trainer.train_set), "epochs": cfg.train.epochs, "batch": cfg.optim.batch_size}
                split = cfg.data.monitor_split
                sizes["split"] = split
                sizes["queries"] = {r.name or split: r.num_queries for r in trainer.monitor}
                sizes["references"] = {r.name or split: r.num_references for r in trainer.monitor}
                base = evaluate_geo_run(out, random_init=True)
                for k in keys:
                    rows["untrained encoder"][k].append(base[k])
    lines = [
        f"Planted-structure {args.benchmark} fixture: {sizes['train']} training pairs; evaluated on its "
        f"{sizes['split']} split, queries {sizes['queries']} against references {sizes['references']}; {config}"
        + (f" with {' '.join(args.set)}" if args.set else "")
        + (f" (fixture {', '.join(args.fixture)})" if args.fixture else "")
        + f" (resnet10t, batch {sizes['batch']}, {sizes['epochs']} epochs), seeds {', '.join(map(str, args.seeds))}; torch {torch.__version__}, {torch.get_num_threads()} CPU "
        "threads. Per seed: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k} " + "/".join(f"{x:.1f}" for x in r[k]) for k in keys)
            for name, r in rows.items()
        )
        + ".",
        "",
        "| encoder | " + " | ".join(keys) + " | wall time per run (s) |",
        "|---|" + "---:|" * (len(keys) + 1),
    ]
    for name, r in rows.items():
        secs = f"{statistics.mean(r['seconds']):.0f}" if r["seconds"] else "–"
        lines.append(f"| {name} | " + " | ".join(mean_std(r[k]) for k in keys) + f" | {secs} |")
    publish(
        lines,
        {"rows": rows, "seeds": args.seeds, "sizes": sizes, "config": config},
        args.out or f"benchmarks/results/{args.benchmark}_fixture.md",
        args.readme,
        f"{args.benchmark}_fixture",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
