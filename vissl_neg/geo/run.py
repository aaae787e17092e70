"""Evaluate a cross-view run directory: recall of ground panoramas against satellite tiles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vissl_neg.augment.views import Normalize
from vissl_neg.data.cvusa import CVUSADataset
from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.engine.trainer import resolve_amp
from vissl_neg.geo.embed import evaluate_recall
from vissl_neg.models.cross_view import CrossViewModel, build_cross_view_model


@torch.no_grad()
def recalibrate_bn_pairs(model: CrossViewModel, dataset: CVUSADataset, normalize: Normalize, device: torch.device,
                         batches: int = 8, batch_size: int = 32, seed: int = 0) -> None:
    """Re-estimate BN running statistics over random batches of both views (plain averages),
    so an untrained baseline is not crippled by its initial statistics; weights stay random."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    batch_size = min(batch_size, len(dataset))
    for b in range(min(batches, len(dataset) // batch_size)):
        pano, sat, _, _ = dataset.__getitems__(order[b * batch_size : (b + 1) * batch_size])
        for view in (pano, sat):
            model(normalize(view.to(device).float().div_(255.0)))
    model.eval()


def evaluate_geo_run(run_dir: str | Path, random_init: bool = False, device: str = "cpu", root: str | None = None,
                     split: str = "test") -> dict:
    """Recall of RUN_DIR's encoder (or, with ``random_init``, the same architecture untrained,
    BN statistics re-estimated on the training pairs) on a CVUSA split; writes
    RUN_DIR/eval_geo[_random_init].json."""
    cfg, state = ckpt.load_run(run_dir, "geo")
    d = cfg.data
    root = root or d.root
    dev = torch.device(device)
    torch.manual_seed(cfg.train.seed)
    model = build_cross_view_model(cfg.model, d.sat_size, tuple(d.pano_size)).to(dev)
    normalize = Normalize(cfg.augment.mean, cfg.augment.std, 3).to(dev)
    if random_init:
        train_set = CVUSADataset(root, "train", d.sat_size, tuple(d.pano_size))
        recalibrate_bn_pairs(model, train_set, normalize, dev, seed=cfg.train.seed)
    else:
        model.load_state_dict(state["model"])
    t0 = time.perf_counter()
    dataset = CVUSADataset(root, split, d.sat_size, tuple(d.pano_size))
    recall = evaluate_recall(model, dataset, normalize, dev, cfg.eval.batch_size, d.num_workers,
                             cfg.eval.chunk_size or None, resolve_amp(cfg.train.amp, dev))
    result = {**{k: round(v, 2) for k, v in recall.items()}, "queries": len(dataset), "split": split,
              "seconds": round(time.perf_counter() - t0, 1), "run_dir": str(run_dir), "random_init": random_init,
              "step": state["step"]}
    name = "eval_geo_random_init.json" if random_init else "eval_geo.json"
    (Path(run_dir) / name).write_text(json.dumps(result, indent=2))
    return result
