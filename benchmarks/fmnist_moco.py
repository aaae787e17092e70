#!/usr/bin/env python
"""vissl_neg MoCo vs lightly's MoCo vs the random-init backbone on Fashion-MNIST, in one process.

Both methods get the same recipe and budget: the default config's timm backbone (same
initial weights), device views on the device, batch, queue size, temperature, SGD with
warm-up + cosine, momentum schedule, epochs. lightly's side uses its own building blocks
(MoCoProjectionHead, NTXentLoss with its memory bank, update_momentum). Each backbone is
then scored by weighted kNN and a linear probe on frozen features.

    python benchmarks/fmnist_moco.py [--epochs N] [--out benchmarks/results/fmnist_moco.md] [--readme README.md]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LightlyMoCo, publish  # noqa: E402

from vissl_neg.augment import EvalTransform  # noqa: E402
from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.data import ResumableBatchSampler, build_dataset  # noqa: E402
from vissl_neg.engine.schedule import warmup_cosine  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.eval.evaluate import evaluate_backbone, recalibrate_bn  # noqa: E402
from vissl_neg.models import build_backbone, momentum_at  # noqa: E402


def train_lightly(cfg, backbone: torch.nn.Module) -> float:
    """MoCo v2 with lightly's modules on the same views and schedule; returns img/s."""
    torch.manual_seed(cfg.train.seed)
    data = build_dataset(cfg.data, "train")
    moco = LightlyMoCo(cfg, backbone, data.in_chans)
    sampler = ResumableBatchSampler(len(data), cfg.optim.batch_size, cfg.train.seed)
    total = cfg.train.epochs * sampler.batches_per_epoch()
    warmup = round(cfg.optim.warmup_epochs * sampler.batches_per_epoch())
    step, t0 = 0, time.perf_counter()
    for epoch in range(cfg.train.epochs):
        sampler.set_epoch(epoch)
        for idx in sampler:
            images, _, _ = data.__getitems__(idx)
            lr = warmup_cosine(step, total, warmup, cfg.optim.lr, cfg.optim.min_lr)
            moco.step(images, lr, momentum_at(cfg.model.momentum, step, total, cfg.model.momentum_schedule))
            step += 1
    return step * cfg.optim.batch_size / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="default: the built-in Fashion-MNIST recipe")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs for both methods")
    parser.add_argument("--out", default="benchmarks/results/fmnist_moco.md")
    parser.add_argument("--readme", default=None, help="also replace the table between the markers in this file")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = list(args.overrides) + [
        "train.progress=false",
        "eval.knn_every=-1",
        "train.out_dir=runs/bench_fmnist_moco",
    ]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.config, overrides)
    device = torch.device("cpu")
    rows = []

    torch.manual_seed(cfg.train.seed)
    random_backbone = build_backbone(
        cfg.model.backbone, 1, cfg.model.small_stem, image_size=cfg.augment.size, patch_size=cfg.model.patch_size
    )
    init_state = copy.deepcopy(random_backbone.state_dict())
    train_set = build_dataset(cfg.data, "train")
    recalibrate_bn(random_backbone, train_set, EvalTransform(cfg.augment, 1), device, seed=cfg.train.seed)
    for kind in ("knn", "linear_probe"):
        print(f"random init {kind} ...", flush=True)
        rows.append(("random init", kind, evaluate_backbone(cfg, random_backbone, kind, device)["top1"], None))

    shutil.rmtree(cfg.train.out_dir, ignore_errors=True)
    print("vissl_neg MoCo ...", flush=True)
    trainer = Trainer(cfg, resume=False)
    result = trainer.fit()
    ours_ips = result["img_per_s"]
    ours = trainer.model.encoder_q.backbone

    print("lightly MoCo ...", flush=True)
    theirs = build_backbone(
        cfg.model.backbone, 1, cfg.model.small_stem, image_size=cfg.augment.size, patch_size=cfg.model.patch_size
    )
    theirs.load_state_dict(init_state)
    theirs_ips = train_lightly(cfg, theirs)

    table = {"random init": {}, "vissl_neg MoCo": {"img_s": ours_ips}, "lightly MoCo": {"img_s": theirs_ips}}
    for name, kind, top1, _ in rows:
        table[name][kind] = top1
    for name, model in (("vissl_neg MoCo", ours), ("lightly MoCo", theirs)):
        for kind in ("knn", "linear_probe"):
            print(f"{name} {kind} ...", flush=True)
            table[name][kind] = evaluate_backbone(cfg, model, kind, device)["top1"]

    v, lt = table["vissl_neg MoCo"], table["lightly MoCo"]
    lines = [
        f"Fashion-MNIST, {cfg.model.backbone}, batch {cfg.optim.batch_size}, queue {cfg.negatives.size}, "
        f"T {cfg.loss.temperature}, {cfg.train.epochs} epochs, {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}",
        "",
        "| backbone | linear top-1 (%) | kNN top-1 (%) | train img/s |",
        "|---|---|---|---|",
    ]
    for name, r in table.items():
        ips = f"{r['img_s']:.0f}" if "img_s" in r else "-"
        lines.append(f"| {name} | {r['linear_probe']:.2f} | {r['knn']:.2f} | {ips} |")
    lines.append(
        f"| vissl_neg / lightly | {v['linear_probe'] / lt['linear_probe']:.3f} | "
        f"{v['knn'] / lt['knn']:.3f} | {v['img_s'] / lt['img_s']:.2f} |"
    )
    publish(lines, table, args.out, args.readme, "fmnist_moco")
    return 0


if __name__ == "__main__":
    sys.exit(main())
