#!/usr/bin/env python
"""Linear-probe and kNN top-1 of MoCo and each hard-negative strategy on Fashion-MNIST,
same budget, several seeds, beside the random-init backbone; a markdown table and a PNG
bar chart (mean ± std over seeds).

Each run is a ``Trainer`` on ``configs/fmnist_<variant>.yaml`` with ``train.epochs`` set to
the budget; its run directory keeps ``bench_eval.json``, so an interrupted benchmark
re-run skips the finished runs (and resumes a half-trained one from its checkpoint).

    python benchmarks/fmnist_strategies.py [--epochs 1] [--seeds 0 1 2] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402
from vissl_neg.augment import EvalTransform  # noqa: E402
from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.data import build_dataset  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.eval.run import evaluate_features, frozen_features, recalibrate_bn  # noqa: E402
from vissl_neg.models import build_backbone  # noqa: E402

VARIANTS = {
    "MoCo v2": "fmnist_moco",
    "MoCHi (512, 512, 128)": "fmnist_mochi",
    "geodesic mixup (512, 512, 128)": "fmnist_geodesic",
    "filter 1024 + dual-view loss": "fmnist_filter_dual",
    "feature transformation (2.0, 1.6)": "fmnist_feature_transform",
    "debiased + hardness-weighted (τ⁺ 0.1, β 1)": "fmnist_debiased",
    "memory bank (4096 per query)": "fmnist_memory_bank",
}
FNR = "negatives/false_negative_rate@64"


def scores(cfg, backbone, device) -> dict:
    feats = frozen_features(cfg, backbone, device)
    return {kind: evaluate_features(cfg, feats, kind)["top1"] for kind in ("linear_probe", "knn")}


def run_variant(config: str, seed: int, epochs: int, out_root: Path, overrides: list[str], device) -> dict:
    out_dir = out_root / f"{config}_seed{seed}"
    done = out_dir / "bench_eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = load_config(ROOT / "configs" / f"{config}.yaml",
                      [f"train.seed={seed}", f"train.epochs={epochs}", f"train.out_dir={out_dir}",
                       "eval.knn_every=-1", "train.progress=false"] + overrides)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    result = trainer.fit()
    row = scores(cfg, trainer.model.encoder_q.backbone, device)
    row.update({"img_s": result["img_per_s"], "fnr": result["last_log"].get(FNR),
                "same_class": result["last_log"].get("negatives/same_class_rate"),
                "minutes": round((time.perf_counter() - t0) / 60, 1)})
    done.write_text(json.dumps(row, indent=2))
    return row


def random_init(seed: int, out_root: Path, overrides: list[str], device) -> dict:
    done = out_root / f"random_init_seed{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = load_config(ROOT / "configs" / "fmnist_moco.yaml", [f"train.seed={seed}"] + overrides)
    torch.manual_seed(seed)
    backbone = build_backbone(cfg.model.backbone, 1, cfg.model.small_stem, image_size=cfg.augment.size,
                              patch_size=cfg.model.patch_size)
    train_set = build_dataset(cfg.data, "train")
    recalibrate_bn(backbone, train_set, EvalTransform(cfg.augment, 1), device, seed=seed)
    row = scores(cfg, backbone, device)
    out_root.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row, indent=2))
    return row


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def chart(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=False)
    for ax, kind, label in ((axes[0], "linear_probe", "linear probe top-1 (%)"), (axes[1], "knn", "kNN top-1 (%)")):
        means = [summary[n][kind][0] for n in names]
        stds = [summary[n][kind][1] for n in names]
        colors = ["#9e9e9e" if n == "random init" else "#1f77b4" if n == "MoCo v2" else "#ff7f0e" for n in names]
        ax.barh(range(len(names)), means, xerr=stds, color=colors, capsize=3)
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        lo = min(m - s for m, s in zip(means, stds))
        ax.set_xlim(max(0.0, lo - 2.0), max(m + s for m, s in zip(means, stds)) + 1.0)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        for i, (m, s) in enumerate(zip(means, stds)):
            ax.text(m + s + 0.1, i, f"{m:.2f}", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="training budget of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default=None, help="comma-separated config names to run (default: all)")
    parser.add_argument("--runs", default="runs/bench_strategies", help="run directories (kept for re-use)")
    parser.add_argument("--out", default="benchmarks/results/fmnist_strategies.md")
    parser.add_argument("--readme", default=None)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_root = Path(args.runs)
    only = args.only.split(",") if args.only else None
    variants = {n: c for n, c in VARIANTS.items() if only is None or c in only}

    per_seed = {"random init": [random_init(s, out_root, args.overrides, device) for s in args.seeds]}
    for name, config in variants.items():
        per_seed[name] = []
        for seed in args.seeds:
            print(f"{name}, seed {seed} ...", flush=True)
            row = run_variant(config, seed, args.epochs, out_root, args.overrides, device)
            print(f"  linear {row['linear_probe']:.2f}  kNN {row['knn']:.2f}  ({row['minutes']} min)", flush=True)
            per_seed[name].append(row)

    summary = {}
    for name, rows in per_seed.items():
        summary[name] = {kind: mean_std([r[kind] for r in rows]) for kind in ("linear_probe", "knn")}
        for key in ("img_s", "fnr", "same_class"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            summary[name][key] = statistics.fmean(vals) if vals else None
    cfg = load_config(ROOT / "configs" / "fmnist_moco.yaml", args.overrides)
    base = per_seed.get("MoCo v2")
    title = (f"Fashion-MNIST, {cfg.model.backbone}, {args.epochs} epoch(s) per run, seeds {args.seeds}, "
             f"mean ± std; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    lines = [title, "",
             "| method | linear top-1 (%) | kNN top-1 (%) | Δ linear vs MoCo | same class among the 64 hardest "
             "negatives (among all negatives of the loss) | train img/s |",
             "|---|---|---|---|---|---|"]
    for name, r in summary.items():
        delta = "-"
        if base and name not in ("MoCo v2", "random init"):
            delta = f"{r['linear_probe'][0] - summary['MoCo v2']['linear_probe'][0]:+.2f}"
        fnr = f"{100 * r['fnr']:.1f} % ({100 * r['same_class']:.1f} %)" if r.get("fnr") is not None else "-"
        ips = f"{r['img_s']:.0f}" if r.get("img_s") else "-"
        lines.append(f"| {name} | {r['linear_probe'][0]:.2f} ± {r['linear_probe'][1]:.2f} | "
                     f"{r['knn'][0]:.2f} ± {r['knn'][1]:.2f} | {delta} | {fnr} | {ips} |")
    png = Path(args.out).with_suffix(".png")
    chart(summary, png, title)
    publish(lines, {"summary": summary, "per_seed": per_seed, "epochs": args.epochs, "seeds": args.seeds},
            args.out, args.readme, "fmnist_strategies",
            readme_extra=f"\n![linear probe and kNN per strategy]({png.as_posix()})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
