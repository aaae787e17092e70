#!/usr/bin/env python
"""Linear-probe and kNN top-1 of MoCo and each hard-negative strategy on Fashion-MNIST,
same budget, several seeds, beside the random-init backbone: a summary table (mean ± std,
Δ vs MoCo with Welch's t-test), every seed's numbers, and a PNG bar chart.

Each (method, seed) is a ``Trainer`` on ``configs/fmnist_<variant>.yaml`` with
``train.epochs`` set to the budget. Its result goes to ``<results>/<method>__seed<N>.json``
with a hash of the run's full config; a re-run skips the results whose hash matches (and
re-runs those whose config changed), and a half-trained run resumes from its checkpoint
(its run directory carries the hash too), so a killed benchmark continues where it stopped.

    python benchmarks/fmnist_strategies.py [--epochs 1] [--seeds 0 1 2] [--readme README.md]
    python benchmarks/fmnist_strategies.py --max-steps 2 --subset 512 --seeds 0 1   # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402
from stats import welch_t_test  # noqa: E402

from vissl_neg.augment import EvalTransform  # noqa: E402
from vissl_neg.config import config_from_dict, flatten, load_config, to_dict  # noqa: E402
from vissl_neg.data import build_dataset  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.errors import ConfigError  # noqa: E402
from vissl_neg.eval.evaluate import evaluate_features, frozen_features, recalibrate_bn  # noqa: E402
from vissl_neg.models import build_backbone  # noqa: E402

# τ⁺ of the two debiased rows: the class prior of 10 balanced classes, checked with the clamp
# diagnostic (loss/debiased_clamped_fraction, tau_plus_below_half) over one epoch of the default
# recipe (queue 4096, T 0.2, seed 0, every 10 steps): after the first steps (while the queue
# still holds its random initial keys, 81-89 % of Ng are clamped) 0-23 % of the queries are
# clamped with β = 0 and none with β = 1; the τ⁺ that keeps fewer than half clamped stayed
# above 0.17 (β = 0) and 0.35 (β = 1). The per-seed table reports the fraction at each run's end.
TAU_PLUS = 0.1
FN_ELIMINATE = "negatives.strategies=[{name: false_negatives, top: 10, threshold: 0.7, mode: eliminate}]"
METHODS = {  # key: (label, config, extra overrides)
    "moco": ("MoCo v2", "fmnist_moco", []),
    "mochi": ("MoCHi (512, 512, 128)", "fmnist_mochi", []),
    "geodesic": ("geodesic mixup (512, 512, 128)", "fmnist_geodesic", []),
    "filter_dual": ("filter 1024 + dual-view loss", "fmnist_filter_dual", []),
    "feature_transform": ("feature transformation (2.0, 1.6, one λ per step)", "fmnist_feature_transform", []),
    "debiased": (f"debiased (τ⁺ {TAU_PLUS})", "fmnist_debiased", [f"loss.tau_plus={TAU_PLUS}", "loss.beta=0"]),
    "hard_weighted": (
        f"hardness-weighted (τ⁺ {TAU_PLUS}, β 1)",
        "fmnist_debiased",
        [f"loss.tau_plus={TAU_PLUS}", "loss.beta=1.0"],
    ),
    "ambiguous": ("ambiguous negatives, SimANS weights (keep 1024 of the queue)", "fmnist_ambiguous", []),
    "fn_eliminate": ("false negatives: eliminate (top 10, > 0.7)", "fmnist_false_negatives", [FN_ELIMINATE]),
    "fn_attract": ("false negatives: attract (top 10, > 0.7)", "fmnist_false_negatives", []),
    "in_batch": (
        "in-batch negatives, symmetric (SimCLR-style MoCo)",
        "fmnist_moco",
        ["negatives.source=batch", "loss.symmetric=true"],
    ),
    "mocov3": ("MoCo v3, small ViT (test_vit3)", "fmnist_mocov3", []),
}
RANDOM, BASE = "random_init", "moco"
# Random-init baselines: key -> (label, config of the architecture, the methods it is the baseline of).
BASELINES = {
    RANDOM: ("random init", "fmnist_moco", None),
    "random_init_vit": ("random init, small ViT (test_vit3)", "fmnist_mocov3", ("mocov3",)),
}
LABELS = {**{key: spec[0] for key, spec in BASELINES.items()}, **{key: spec[0] for key, spec in METHODS.items()}}
# What turns a trained backbone into the reported numbers; part of every result's hash.
PROTOCOL = "frozen backbone features; kNN (eval.knn_k, eval.knn_temperature); L-BFGS linear probe; v1"
# Keys that do not change a result (loader, logging, checkpoints, paths): left out of the hash.
UNHASHED = (
    "data.num_workers",
    "data.prefetch_factor",
    "data.persistent_workers",
    "data.pin_memory",
    "train.out_dir",
    "train.progress",
    "train.ckpt_every",
    "train.log_every",
    "train.hist_every",
    "train.cudnn_benchmark",
    "eval.knn_every",
    "eval.chunk_size",
    "eval.batch_size",
)


def config_hash(cfg, kind: str) -> str:
    """A hash of everything that decides a result: the full config and the protocol."""
    values = {k: v for k, v in flatten(to_dict(cfg)).items() if k not in UNHASHED}
    blob = json.dumps({"kind": kind, "protocol": PROTOCOL, "config": values}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_result(path: Path, digest: str, kind: str) -> dict | None:
    """The stored row when ``path`` holds a result of this exact config, else None. The stored
    config is also read with today's schema, so keys added since (at their defaults) do not
    force a re-run."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if stored.get("config_hash") == digest:
        return stored["result"]
    try:
        same = config_hash(config_from_dict(stored["config"]), kind) == digest
    except (ConfigError, KeyError):
        same = False
    return stored["result"] if same else None


def save_result(path: Path, method: str, seed: int, digest: str, cfg, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {
        "method": method,
        "label": LABELS[method],
        "seed": seed,
        "config_hash": digest,
        "config": to_dict(cfg),
        "result": row,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=2, default=str))
    tmp.replace(path)


def scores(cfg, backbone, device) -> dict:
    feats = frozen_features(cfg, backbone, device)
    return {kind: evaluate_features(cfg, feats, kind)["top1"] for kind in ("linear_probe", "knn")}


def method_config(method: str, seed: int, args, out_dir: Path | None = None):
    _, config, extra = METHODS[method]
    overrides = [f"train.seed={seed}", f"train.epochs={args.epochs}", "eval.knn_every=-1", "train.progress=false"]
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.subset:
        overrides.append(f"data.subset={args.subset}")
    if out_dir is not None:
        overrides.append(f"train.out_dir={out_dir}")
    return load_config(ROOT / "configs" / f"{config}.yaml", overrides + extra + list(args.overrides))


def run_method(method: str, seed: int, args, results: Path, device) -> dict | None:
    """The row of (method, seed): stored, or trained (resuming its run directory) and scored.
    None when the run was stopped by a signal (its checkpoint is kept)."""
    path = results / f"{method}__seed{seed}.json"
    digest = config_hash(method_config(method, seed, args), method)
    row = load_result(path, digest, method)
    if row is not None:
        print(f"{LABELS[method]}, seed {seed}: done ({path.name}, config {digest}), skipped", flush=True)
        return row
    out_dir = Path(args.runs) / f"{method}__seed{seed}__{digest}"
    cfg = method_config(method, seed, args, out_dir)
    print(f"{LABELS[method]}, seed {seed} ... ({out_dir})", flush=True)
    finished = out_dir / "metrics.json"  # a run killed while scoring: its diagnostics are there
    earlier = json.loads(finished.read_text()).get("last_log", {}) if finished.is_file() else {}
    trainer = Trainer(cfg)
    result = trainer.fit()
    if "stopped" in result:
        return None
    t0 = time.perf_counter()
    row = scores(cfg, trainer.model.encoder_q.backbone, device)
    last = result["last_log"] or earlier
    fnr = f"negatives/false_negative_rate@{cfg.negatives.diag_top}"
    row.update(
        {
            "img_s": result["img_per_s"],
            "fnr": last.get(fnr),
            "same_class": last.get("negatives/same_class_rate"),
            "clamped": last.get("loss/debiased_clamped_fraction"),
            "train_min": round(result["train_seconds"] / 60, 2),
            "wall_min": round((result["train_seconds"] + time.perf_counter() - t0) / 60, 2),
        }
    )
    save_result(path, method, seed, digest, cfg, row)
    print(f"  linear {row['linear_probe']:.2f}  kNN {row['knn']:.2f}  ({row['wall_min']} min)", flush=True)
    return row


def random_init(seed: int, args, results: Path, device, key: str = RANDOM) -> dict:
    """The untrained architecture of ``BASELINES[key]``, BN statistics re-estimated, scored."""
    overrides = [f"train.seed={seed}"] + ([f"data.subset={args.subset}"] if args.subset else [])
    cfg = load_config(ROOT / "configs" / f"{BASELINES[key][1]}.yaml", overrides + list(args.overrides))
    path = results / f"{key}__seed{seed}.json"
    digest = config_hash(cfg, key)
    row = load_result(path, digest, key)
    if row is not None:
        print(f"{LABELS[key]}, seed {seed}: done ({path.name}, config {digest}), skipped", flush=True)
        return row
    print(f"{LABELS[key]}, seed {seed} ...", flush=True)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    backbone = build_backbone(
        cfg.model.backbone, 1, cfg.model.small_stem, image_size=cfg.augment.size, patch_size=cfg.model.patch_size
    )
    train_set = build_dataset(cfg.data, "train")
    recalibrate_bn(backbone, train_set, EvalTransform(cfg.augment, 1), device, seed=seed)
    row = scores(cfg, backbone, device)
    row["wall_min"] = round((time.perf_counter() - t0) / 60, 2)
    save_result(path, key, seed, digest, cfg, row)
    return row


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def summarise(per_seed: dict) -> dict:
    summary = {}
    base = per_seed.get(BASE)
    for method, rows in per_seed.items():
        s = {kind: mean_std([r[kind] for r in rows]) for kind in ("linear_probe", "knn")}
        s.update({key: _mean(rows, key) for key in ("img_s", "fnr", "same_class", "wall_min")})
        if base and method != BASE and method not in BASELINES:
            for kind in ("linear_probe", "knn"):
                a, b = [r[kind] for r in rows], [r[kind] for r in base]
                t, df, p = welch_t_test(a, b)
                s[f"delta_{kind}"] = statistics.fmean(a) - statistics.fmean(b)
                s[f"p_{kind}"] = None if math.isnan(p) else p
        summary[method] = s
    return summary


def _delta(s: dict, kind: str) -> str:
    if f"delta_{kind}" not in s:
        return "-"
    p = s[f"p_{kind}"]
    return f"{s[f'delta_{kind}']:+.2f} (p {p:.2g})" if p is not None else f"{s[f'delta_{kind}']:+.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def tables(per_seed: dict, summary: dict) -> list[str]:
    lines = [
        "| method | linear top-1 (%) | kNN top-1 (%) | Δ linear vs MoCo (Welch p) | Δ kNN vs MoCo (Welch p) | "
        "same class among the 64 hardest negatives (among all) | train img/s | wall (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        fnr = f"{_pct(s['fnr'])} ({_pct(s['same_class'])})" if s.get("fnr") is not None else "-"
        ips = f"{s['img_s']:.0f}" if s.get("img_s") else "-"
        wall = f"{s['wall_min']:.1f}" if s.get("wall_min") is not None else "-"
        lines.append(
            f"| {LABELS[method]} | {s['linear_probe'][0]:.2f} ± {s['linear_probe'][1]:.2f} | "
            f"{s['knn'][0]:.2f} ± {s['knn'][1]:.2f} | {_delta(s, 'linear_probe')} | {_delta(s, 'knn')} | "
            f"{fnr} | {ips} | {wall} |"
        )
    lines += [
        "",
        "Every seed:",
        "",
        "| method | seed | linear top-1 (%) | kNN top-1 (%) | same class among the 64 hardest | "
        "debiased Ng clamped | train img/s | wall (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, rows in per_seed.items():
        for seed, r in rows:
            ips = f"{r['img_s']:.0f}" if r.get("img_s") else "-"
            lines.append(
                f"| {LABELS[method]} | {seed} | {r['linear_probe']:.2f} | {r['knn']:.2f} | "
                f"{_pct(r.get('fnr'))} | "
                f"{_pct(r.get('clamped'))} | {ips} | {r.get('wall_min', '-')} |"
            )
    return lines


def chart(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    names = [LABELS[m] for m in methods]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 2.5), sharey=False)
    for ax, kind, label in ((axes[0], "linear_probe", "linear probe top-1 (%)"), (axes[1], "knn", "kNN top-1 (%)")):
        means = [summary[m][kind][0] for m in methods]
        stds = [summary[m][kind][1] for m in methods]
        colors = ["#9e9e9e" if m in BASELINES else "#1f77b4" if m == BASE else "#ff7f0e" for m in methods]
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
    parser.add_argument("--only", default=None, help=f"comma-separated methods (default: all of {', '.join(METHODS)})")
    parser.add_argument("--max-steps", type=int, default=0, help="smoke runs: stop each run after this many steps")
    parser.add_argument("--subset", type=int, default=0, help="smoke runs: only the first N training images")
    parser.add_argument("--runs", default="runs/bench_strategies", help="run directories (kept for resuming)")
    parser.add_argument("--out", default="benchmarks/results/fmnist_strategies.md")
    parser.add_argument(
        "--results", default=None, help="one JSON per (method, seed) (default: the --out path without its suffix)"
    )
    parser.add_argument("--readme", default=None)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else list(METHODS)
    unknown = [m for m in only if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = Path(args.results) if args.results else Path(args.out).with_suffix("")

    per_seed = {RANDOM: [(s, random_init(s, args, results, device)) for s in args.seeds]}
    for method in only:
        for key, (_, _, of) in BASELINES.items():  # another architecture's baseline goes above its method
            if of and method in of and key not in per_seed:
                per_seed[key] = [(s, random_init(s, args, results, device, key)) for s in args.seeds]
        per_seed[method] = []
        for seed in args.seeds:
            row = run_method(method, seed, args, results, device)
            if row is None:
                print("stopped: run the same command again to continue", flush=True)
                return 130
            per_seed[method].append((seed, row))

    summary = summarise({m: [r for _, r in rows] for m, rows in per_seed.items()})
    cfg = load_config(ROOT / "configs" / "fmnist_moco.yaml", list(args.overrides))
    budget = (
        f"{args.epochs} epoch(s) per run"
        + (f", at most {args.max_steps} steps" if args.max_steps else "")
        + (f", first {args.subset} training images" if args.subset else "")
    )
    title = (
        f"Fashion-MNIST, {cfg.model.backbone}, {budget}, seeds {args.seeds}, mean ± std; "
        f"torch {torch.__version__}, {device.type}"
        + ("" if device.type == "cuda" else f" ({torch.get_num_threads()} threads)")
    )
    lines = [title, ""] + tables(per_seed, summary)
    png = Path(args.out).with_suffix(".png")
    chart(summary, png, title)
    publish(
        lines,
        {
            "summary": summary,
            "per_seed": per_seed,
            "epochs": args.epochs,
            "seeds": args.seeds,
            "max_steps": args.max_steps,
            "subset": args.subset,
            "tau_plus": TAU_PLUS,
        },
        args.out,
        args.readme,
        "fmnist_strategies",
        readme_extra=f"\n![linear probe and kNN per strategy]({png.as_posix()})\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
