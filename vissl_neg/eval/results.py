"""The evaluation results a run directory holds, as a model card lists them: knn.json,
linear_probe.json and eval_geo.json (written by the evaluation tools) beside their
``*_random_init.json`` baselines, or the training's last monitor when they are absent. A result
computed at another step than the checkpoint's is left out and named."""

from __future__ import annotations

import json
from pathlib import Path


def _read(run_dir: Path, name: str) -> dict | None:
    path = run_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _current(result: dict | None, step: int, name: str, skipped: list[str]) -> dict | None:
    """``result`` unless it was computed at another step than the checkpoint's (then noted in ``skipped``)."""
    if result is not None and result.get("step", step) != step:
        skipped.append(f"{name}.json (evaluated at step {result['step']}, the checkpoint is at step {step})")
        return None
    return result


def _entry(task: str, metric: str, name: str, value, baseline, split: str, source: str) -> dict:
    return {
        "task": task,
        "metric": metric,
        "name": name,
        "value": value,
        "random_init": baseline,
        "split": split,
        "source": source,
    }


def moco_results(run_dir: Path, cfg, state: dict) -> tuple[list[dict], list[str]]:
    """-> (results, skipped files): kNN and linear-probe top-1 from RUN_DIR/knn.json and
    linear_probe.json (tools/knn.py, tools/linear_probe.py), the random-init baselines beside
    them; the training's last kNN monitor when knn.json is absent."""
    step, skipped, results = state["step"], [], []
    split = cfg.data.eval_split
    base = {n: r["top1"] for n in ("knn", "linear_probe") if (r := _read(run_dir, f"{n}_random_init"))}
    knn = _current(_read(run_dir, "knn"), step, "knn", skipped)
    monitor = state.get("metrics") or []
    if knn is not None:
        results.append(
            _entry(
                "kNN classification",
                "accuracy",
                f"kNN top-1 (k={knn.get('k', cfg.eval.knn_k)})",
                knn["top1"],
                base.get("knn"),
                split,
                "knn.json",
            )
        )
    elif monitor and monitor[-1]["step"] == step and monitor[-1].get("knn_top1") is not None:
        results.append(
            _entry(
                "kNN classification",
                "accuracy",
                f"kNN top-1 (k={cfg.eval.knn_k}, training monitor)",
                round(monitor[-1]["knn_top1"], 2),
                None,
                split,
                "last.ckpt",
            )
        )
    probe = _current(_read(run_dir, "linear_probe"), step, "linear_probe", skipped)
    if probe is not None:
        results.append(
            _entry(
                "linear probe",
                "accuracy",
                "linear probe top-1",
                probe["top1"],
                base.get("linear_probe"),
                split,
                "linear_probe.json",
            )
        )
    return results, skipped


def geo_results(run_dir: Path, cfg, state: dict) -> tuple[list[dict], list[str]]:
    """-> (results, skipped files): the benchmark's numbers (R@k, and VIGOR's hit rate or
    University-1652's mAP) from RUN_DIR/eval_geo.json (tools/eval_geo.py) with its random-init
    baseline, else the training's last monitor; each names the benchmark's protocol."""
    step, skipped = state["step"], []
    found = _current(_read(run_dir, "eval_geo"), step, "eval_geo", skipped)
    base = _read(run_dir, "eval_geo_random_init") or {}
    d = cfg.data
    source, split = "eval_geo.json", (found or {}).get("split", d.monitor_split)
    if found is None:
        monitor = state.get("metrics") or []
        if not (monitor and monitor[-1]["step"] == step):
            return [], skipped
        found, source = {k: round(v, 2) for k, v in monitor[-1].items() if k not in ("epoch", "step")}, "last.ckpt"
    protocol = found.get("protocol") or d.protocol(split)
    results = []
    for k, v in found.items():
        if k in NOT_METRICS or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        entry = _entry(
            d.retrieval_task, "recall" if "R@" in k else k.rsplit("/", 1)[-1], k, v, base.get(k), split, source
        )
        results.append({**entry, "protocol": protocol})
    return results, skipped


# eval_geo.json's keys that are not numbers of the evaluation
NOT_METRICS = ("queries", "seconds", "step", "split", "benchmark", "protocol", "run_dir", "random_init", "weights")
