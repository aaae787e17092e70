#!/usr/bin/env python
"""Cross-view training-step throughput: vissl_neg's GeoTrainer step vs a plain Sample4Geo
step written out by hand (same timm model and initial weights, same pair views, symmetric
InfoNCE with label smoothing, AdamW, clipping by value) in one process, steps interleaved.
The ratio is what the trainer's machinery costs beyond the work itself.

    python benchmarks/geo_step.py [--backbone convnext_atto] [--batch 32] [--steps 3] [--rounds 3] [--readme README.md]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.geo_trainer import GeoTrainer  # noqa: E402
from vissl_neg.geo.fixture import write_cvusa_fixture  # noqa: E402


class PlainStep:
    """Sample4Geo's step as a user would write it, on the trainer's own view module."""

    def __init__(self, trainer: GeoTrainer):
        cfg = trainer.cfg
        self.augment = trainer.augment
        self.model = copy.deepcopy(trainer.model.backbone)
        self.scale = torch.nn.Parameter(trainer.model.logit_scale.detach().clone())
        self.params = list(self.model.parameters()) + [self.scale]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.smoothing, self.clip = cfg.loss.label_smoothing, cfg.optim.clip_grad

    def __call__(self, pano_u8: torch.Tensor, sat_u8: torch.Tensor) -> torch.Tensor:
        pano, sat = self.augment(pano_u8, sat_u8)
        a, b = F.normalize(self.model(pano), dim=-1), F.normalize(self.model(sat), dim=-1)
        logits = self.scale.exp() * a @ b.t()
        labels = torch.arange(a.shape[0])
        loss = (
            F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
            + F.cross_entropy(logits.t(), labels, label_smoothing=self.smoothing)
        ) / 2
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(self.params, self.clip)
        self.opt.step()
        return loss.detach()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="convnext_atto")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sat", type=int, default=128)
    parser.add_argument("--pano", type=int, nargs=2, default=[64, 256])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/geo_step.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="geo_step_") as work:
        return run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> int:
    write_cvusa_fixture(work / "data", n_train=args.batch, n_val=4, sat_size=args.sat, pano_size=tuple(args.pano))
    cfg = load_config(
        "configs/cvusa_sample4geo.yaml",
        [
            f"data.root={work / 'data'}",
            f"data.sat_size={args.sat}",
            f"data.pano_size=[{args.pano[0]},{args.pano[1]}]",
            f"model.backbone={args.backbone}",
            "model.pretrained=false",
            f"optim.batch_size={args.batch}",
            "data.num_workers=0",
            "train.device=cpu",
            "train.progress=false",
            f"train.out_dir={work / 'run'}",
        ],
    )
    torch.manual_seed(0)
    trainer = GeoTrainer(cfg, resume=False)
    plain = PlainStep(trainer)
    pano, sat, _, _ = trainer.train_set.__getitems__(list(range(args.batch)))
    sides = {
        "vissl_neg GeoTrainer.train_step": lambda: trainer.train_step(pano, sat)["loss"],
        "plain Sample4Geo step": lambda: plain(pano, sat),
    }
    for step in sides.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, step in sides.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    pairs_s = {name: args.batch / statistics.median(t) for name, t in times.items()}
    names = list(sides)
    lines = [
        f"{args.backbone} (random init), batch {args.batch} pairs, satellite {args.sat}², panorama "
        f"{args.pano[0]}×{args.pano[1]}, fp32, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
        f"median of {args.rounds}×{args.steps} steps per side, interleaved",
        "",
        "| step | pairs/s |",
        "|---|---:|",
        *(f"| {name} | {v:.1f} |" for name, v in pairs_s.items()),
        f"| **vissl_neg / plain** | **{pairs_s[names[0]] / pairs_s[names[1]]:.3f}** |",
    ]
    publish(
        lines,
        {"pairs_per_s": pairs_s, "seconds_per_step": times, "backbone": args.backbone, "batch": args.batch},
        args.out,
        args.readme,
        "geo_step",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
