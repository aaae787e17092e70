#!/usr/bin/env python
"""MoCo training-step throughput at ImageNet scale on the CPU: vissl_neg's Trainer step
vs lightly's MoCo (same timm ResNet-50 and initial weights, same device views, batch,
queue, temperature) in one process, steps interleaved.

The like-for-like row runs vissl_neg with shuffle-BN off, as lightly's step has none; a
third side shows what vissl_neg's default single-process shuffle-BN (split BN + a permuted
key batch) costs on top.

    python benchmarks/step_throughput.py [--batch 32] [--steps 3] [--rounds 2] [--readme README.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LightlyMoCo, publish  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.models import build_backbone  # noqa: E402


def write_tree(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(2):
        folder = root / split_name(c)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")


def split_name(c: int) -> str:
    return f"class{c}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/imagenet_mocov2.yaml")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/step_throughput.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for split in ("train", "val"):
            write_tree(root / split, 2 * args.batch)
        cfg = load_config(
            args.config,
            [
                "data.name=image_folder",
                f"data.root={root}",
                f"optim.batch_size={args.batch}",
                "train.amp=off",
                "train.progress=false",
                "eval.knn_every=-1",
                f"train.out_dir={tmp}/run",
            ],
        )
        trainer = Trainer(cfg, resume=False)
        trainer.model.train()
        plain_cfg = load_config(
            args.config,
            [
                "data.name=image_folder",
                f"data.root={root}",
                f"optim.batch_size={args.batch}",
                "train.amp=off",
                "train.progress=false",
                "eval.knn_every=-1",
                f"train.out_dir={tmp}/run_plain",
                "model.shuffle_bn=none",
            ],
        )
        plain = Trainer(plain_cfg, resume=False)
        plain.model.train()
        trainer.sampler.set_epoch(0, 0)
        images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
        torch.manual_seed(0)
        theirs = build_backbone(
            cfg.model.backbone, 3, cfg.model.small_stem, image_size=cfg.augment.size, patch_size=cfg.model.patch_size
        )
        ours_state = {k: v for k, v in trainer.model.encoder_q.backbone.state_dict().items()}
        theirs.load_state_dict({k: v for k, v in ours_state.items() if k in theirs.state_dict()}, strict=False)
        lightly = LightlyMoCo(cfg, theirs, 3)

        sides = {
            "vissl_neg": lambda: trainer.train_step(images, labels, indices),
            "vissl_neg_plain": lambda: plain.train_step(images, labels, indices),
            "lightly": lambda: lightly.step(images, cfg.optim.lr, cfg.model.momentum),
        }
        for fn in sides.values():  # warm-up
            fn()
        times = {name: [] for name in sides}
        for r in range(args.rounds):
            for name, fn in sides.items():
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}/{args.rounds}", flush=True)
    ips = {name: args.batch / statistics.median(t) for name, t in times.items()}
    ratio = ips["vissl_neg_plain"] / ips["lightly"]
    lines = [
        f"{cfg.model.backbone} at {cfg.augment.size}x{cfg.augment.size}, batch {args.batch}, queue "
        f"{cfg.negatives.size}, fp32, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; median of "
        f"{args.rounds}x{args.steps} steps per side, interleaved",
        "",
        "| MoCo step | img/s |",
        "|---|---|",
        f"| vissl_neg, shuffle-BN off (what lightly's step does) | {ips['vissl_neg_plain']:.2f} |",
        f"| lightly | {ips['lightly']:.2f} |",
        f"| **vissl_neg / lightly, same work** | **{ratio:.3f}** |",
        f"| vissl_neg with split shuffle-BN (its default on one process) | {ips['vissl_neg']:.2f} |",
        f"| shuffle-BN's cost (with / without) | {ips['vissl_neg'] / ips['vissl_neg_plain']:.3f} |",
    ]
    publish(lines, {"img_s": ips, "ratio": ratio, "batch": args.batch}, args.out, args.readme, "step_throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
