#!/usr/bin/env python
"""Training-step time of plain MoCo vs each hard-negative strategy, in one process.

Every variant is a real ``Trainer`` built from the default Fashion-MNIST config (default
backbone, batch 256, D 128) with a 16,384-key queue (or a memory bank drawing 16,384
negatives per query), stepping on the same uint8 batch. Variants take turns, a few steps
each, over several rounds, so a drift in machine speed hits all of them alike; the
median step time is reported with its ratio to plain MoCo. A second column times the
negatives part alone (strategies + loss, forward and backward, on fixed embeddings).

    python benchmarks/strategy_overhead.py [--rounds 3] [--steps 4] [--readme README.md]
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

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402

MOCHI = "{name: mochi, n_hard: 1024, s: 1024, s_prime: 512}"
VARIANTS = {
    "MoCo (queue 16384)": [],
    "filter keep 4096": ["negatives.strategies=[{name: filter, keep: 4096}]"],
    "MoCHi (1024, 1024, 512)": [f"negatives.strategies=[{MOCHI}]"],
    "MoCHi (256, 512, 0)": ["negatives.strategies=[{name: mochi, n_hard: 256, s: 512, s_prime: 0}]"],
    "geodesic (1024, 1024, 512)": ["negatives.strategies=[{name: geodesic, n_hard: 1024, s: 1024, s_prime: 512}]"],
    "feature transform (2.0, 1.6)": [
        "negatives.strategies=[{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6}]"
    ],
    "debiased (τ⁺ 0.1, β 1.0)": ["loss.name=debiased", "loss.tau_plus=0.1", "loss.beta=1.0"],
    "filter 4096 + MoCHi (1024, 1024, 512)": [f"negatives.strategies=[{{name: filter, keep: 4096}}, {MOCHI}]"],
    "memory bank (16384 per query)": ["negatives.source=memory_bank"],
    "dual-view loss (two forward passes)": ["loss.dual_view=true"],
}


def negatives_time(trainer: Trainer, repeats: int) -> float:
    """Median seconds of strategies + loss (forward and backward) on fixed embeddings."""
    g = torch.Generator(device=trainer.device).manual_seed(0)
    b, d = trainer.cfg.optim.batch_size, trainer.cfg.model.dim
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g, device=trainer.device), dim=1)
    k = torch.nn.functional.normalize(torch.randn(b, d, generator=g, device=trainer.device), dim=1)
    idx = torch.arange(b, device=trainer.device)
    times = []
    for _ in range(repeats + 1):
        q_leaf = q.clone().requires_grad_(True)
        t0 = time.perf_counter()
        trainer.contrast(q_leaf, k, idx)[0].backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--out", default="benchmarks/results/strategy_overhead.md")
    parser.add_argument("--readme", default=None)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every variant")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="strategy_overhead_") as tmp:
        return run(args, tmp)


def run(args: argparse.Namespace, tmp: str) -> int:
    base = ["negatives.size=16384", "train.progress=false", "eval.knn_every=-1"] + list(args.overrides)
    trainers, batch = {}, None
    for i, (name, extra) in enumerate(VARIANTS.items()):
        cfg = load_config(None, base + extra + [f"train.out_dir={tmp}/{i}"])
        trainers[name] = trainer = Trainer(cfg, resume=False)
        trainer.model.train()
        if batch is None:
            trainer.sampler.set_epoch(0, 0)
            images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
            batch = tuple(t.to(trainer.device) for t in (images, labels, indices))
    cfg0 = next(iter(trainers.values())).cfg
    print(
        f"{len(VARIANTS)} variants, batch {cfg0.optim.batch_size}, {cfg0.model.backbone}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )

    step_times = {name: [] for name in trainers}
    for trainer in trainers.values():  # warm-up: allocator, first-touch of the queue
        trainer.train_step(*batch)
    for r in range(args.rounds):
        for name, trainer in trainers.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                out = trainer.train_step(*batch)
                out["loss"].item()  # wait for the step (a no-op on the CPU)
                step_times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    neg_times = {name: negatives_time(trainer, args.steps) for name, trainer in trainers.items()}

    plain = "MoCo (queue 16384)"
    base_step = statistics.median(step_times[plain])
    base_neg = neg_times[plain]
    rows = {}
    for name in trainers:
        step = statistics.median(step_times[name])
        rows[name] = {
            "step_ms": step * 1e3,
            "step_ratio": step / base_step,
            "negatives_ms": neg_times[name] * 1e3,
            "added_ms": (neg_times[name] - base_neg) * 1e3,
        }
    lines = [
        f"{cfg0.model.backbone} on Fashion-MNIST 28x28, batch {cfg0.optim.batch_size}, D {cfg0.model.dim}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}; median of "
        f"{args.rounds}x{args.steps} steps per variant, variants interleaved",
        "",
        "| variant | step (ms) | step / MoCo | negatives + loss (ms) | added by the strategy (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['step_ms']:.0f} | {r['step_ratio']:.3f} | {r['negatives_ms']:.1f} | {r['added_ms']:+.1f} |"
        )
    publish(lines, rows, args.out, args.readme, "strategy_overhead")
    return 0


if __name__ == "__main__":
    sys.exit(main())
