"""Evaluate a cross-view run directory: recall of ground panoramas against satellite tiles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vissl_neg.augment.cross_view import EvalPairTransform
from vissl_neg.data.cvusa import cvusa_split
from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.engine.device import resolve_amp
from vissl_neg.eval.run import recalibrate_bn
from vissl_neg.geo.embed import evaluate_recall
from vissl_neg.models.cross_view import build_cross_view_model


def evaluate_geo_run(run_dir: str | Path, random_init: bool = False, device: str = "cpu", root: str | None = None,
                     split: str = "test") -> dict:
    """Recall of RUN_DIR's encoder (or, with ``random_init``, the same architecture untrained,
    BN statistics re-estimated on the training pairs) on a CVUSA split; writes
    RUN_DIR/eval_geo[_random_init].json."""
    cfg, state = ckpt.load_run(run_dir, "geo")
    d = cfg.data
    dev = torch.device(device)
    torch.manual_seed(cfg.train.seed)
    model = build_cross_view_model(cfg.model, d.sat_size, tuple(d.pano_size)).to(dev)
    transform = EvalPairTransform(cfg.augment.mean, cfg.augment.std).to(dev)
    if random_init:
        train_set = cvusa_split(d, "train", root)
        recalibrate_bn(model, train_set, transform, dev, batches=8, batch_size=min(32, len(train_set)),
                       seed=cfg.train.seed, views=(0, 1))
    else:
        model.load_state_dict(state["model"])
    t0 = time.perf_counter()
    dataset = cvusa_split(d, split, root)
    recall = evaluate_recall(model, dataset, transform, dev, cfg.eval.batch_size, d.num_workers,
                             cfg.eval.chunk_size or None, resolve_amp(cfg.train.amp, dev))
    result = {**{k: round(v, 2) for k, v in recall.items()}, "queries": len(dataset), "split": split,
              "seconds": round(time.perf_counter() - t0, 1), "run_dir": str(run_dir), "random_init": random_init,
              "step": state["step"]}
    name = "eval_geo_random_init.json" if random_init else "eval_geo.json"
    (Path(run_dir) / name).write_text(json.dumps(result, indent=2))
    return result
