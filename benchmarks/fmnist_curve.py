#!/usr/bin/env python
"""The MoCo v2 learning curve on Fashion-MNIST that sets the strategy benchmark's budget: the
default recipe trained for 1, 3 and 10 epochs (one run each, cosine schedule over the run),
linear probe and kNN on frozen features, beside the random-init backbone. Each point is a
result file of benchmarks/fmnist_strategies.py's ``moco`` method (skipped when it exists
with the same config), so a killed run continues.

    python benchmarks/fmnist_curve.py [--epochs 1 3 10] [--seed 0] [--readme README.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fmnist_strategies as bench  # noqa: E402
from common import publish  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/bench_curve")
    parser.add_argument("--results", default="benchmarks/results/fmnist_moco_curve")
    parser.add_argument("--out", default="benchmarks/results/fmnist_moco_curve.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = Path(args.results)
    base = argparse.Namespace(max_steps=0, subset=0, overrides=[], runs=args.runs)
    random = bench.random_init(args.seed, base, results, device)
    rows = {}
    for epochs in args.epochs:
        run_args = argparse.Namespace(**vars(base), epochs=epochs)
        rows[epochs] = bench.run_method(bench.BASE, args.seed, run_args, results / f"e{epochs}", device)
        if rows[epochs] is None:
            print("stopped by a signal; run the same command again to continue", flush=True)
            return 130
    lines = [
        f"Fashion-MNIST, MoCo v2 default recipe (configs/fmnist_moco.yaml), seed {args.seed}, one run per budget "
        f"(the cosine schedules span each run); torch {torch.__version__}, {device} ({torch.get_num_threads()} "
        "threads)",
        "",
        "| epochs | linear top-1 (%) | kNN top-1 (%) | same class among the 64 hardest negatives | wall (min) |",
        "|---:|---:|---:|---:|---:|",
        f"| 0 (random init) | {random['linear_probe']:.2f} | {random['knn']:.2f} | - | {random['wall_min']:.1f} |",
    ]
    for epochs, r in rows.items():
        lines.append(
            f"| {epochs} | {r['linear_probe']:.2f} | {r['knn']:.2f} | {bench._pct(r.get('fnr'))} | "
            f"{r['wall_min']:.1f} |"
        )
    publish(
        lines, {"random_init": random, **{str(e): r for e, r in rows.items()}}, args.out, args.readme, "fmnist_curve"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
