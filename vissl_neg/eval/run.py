"""Evaluate a run directory's backbone (or the random-init baseline of its config)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vissl_neg.augment import EvalTransform
from vissl_neg.config import Config
from vissl_neg.data import build_dataset
from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.eval.features import extract_features
from vissl_neg.eval.knn import knn_top1
from vissl_neg.eval.linear_probe import linear_probe
from vissl_neg.export.release import backbone_state_dict
from vissl_neg.models import backbone_from_config


def frozen_features(cfg: Config, backbone: torch.nn.Module, device: torch.device):
    """-> (train feats, train labels, test feats, test labels) of the config's dataset."""
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    transform = EvalTransform(cfg.augment, train_set.in_chans).to(device)
    backbone = backbone.to(device)
    train = extract_features(backbone, train_set, transform, device, cfg.eval.batch_size)
    test = extract_features(backbone, test_set, transform, device, cfg.eval.batch_size)
    return (*train, *test)


@torch.no_grad()
def recalibrate_bn(backbone: torch.nn.Module, dataset, transform, device: torch.device,
                   batches: int = 50, batch_size: int = 256, seed: int = 0, views: tuple[int, ...] = (0,)) -> None:
    """Re-estimate BN running statistics as plain averages over ``batches`` random batches,
    feeding the tensors at positions ``views`` of each ``dataset.__getitems__`` batch
    (images: (0,); cross-view pairs: (0, 1), panoramas and satellites).

    For the random-init baseline: with the initial running statistics (mean 0, var 1) a
    deep random network's eval-mode features collapse, which would make the baseline
    meaninglessly weak; the weights stay random.
    """
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    backbone.train()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    for b in range(min(batches, len(dataset) // batch_size)):
        batch = dataset.__getitems__(order[b * batch_size : (b + 1) * batch_size].tolist())
        for view in views:
            backbone(transform(batch[view].to(device)))
    backbone.eval()


def evaluate_features(cfg: Config, features: tuple, kind: str) -> dict:
    """kind 'knn' or 'linear_probe' on ``frozen_features`` output -> {"top1": percent, ...}."""
    t0 = time.perf_counter()
    tr_x, tr_y, te_x, te_y = features
    if kind == "knn":
        e = cfg.eval
        top1 = knn_top1(tr_x, tr_y, te_x, te_y, e.knn_k, e.knn_temperature, e.chunk_size)
        extra = {"k": e.knn_k, "temperature": e.knn_temperature}
    else:
        top1 = linear_probe(tr_x, tr_y, te_x, te_y, seed=cfg.train.seed)
        extra = {"classifier": "multinomial logistic regression, L-BFGS, standardised features"}
    return {"top1": round(top1, 2), "train_size": len(tr_y), "test_size": len(te_y),
            "seconds": round(time.perf_counter() - t0, 1), **extra}


def evaluate_backbone(cfg: Config, backbone: torch.nn.Module, kind: str, device: torch.device) -> dict:
    """kind 'knn' or 'linear_probe' -> {"top1": percent, ...} (seconds include feature extraction)."""
    t0 = time.perf_counter()
    result = evaluate_features(cfg, frozen_features(cfg, backbone, device), kind)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def evaluate_run(run_dir: str | Path, kind: str, random_init: bool = False, device: str = "cpu") -> dict:
    """Evaluate RUN_DIR's trained backbone (or, with ``random_init``, the same architecture
    freshly initialised with the run's seed, BN statistics re-estimated); writes RUN_DIR/<kind>[_random_init].json."""
    cfg, state = ckpt.load_run(run_dir)
    torch.manual_seed(cfg.train.seed)
    backbone = backbone_from_config(cfg.model, state["in_chans"], cfg.augment.size)
    if random_init:
        train_set = build_dataset(cfg.data, "train")
        dev = torch.device(device)
        recalibrate_bn(backbone.to(dev), train_set, EvalTransform(cfg.augment, state["in_chans"]).to(dev), dev,
                       seed=cfg.train.seed)
    else:
        backbone.load_state_dict(backbone_state_dict(state["model"]))
    if kind == "linear_probe" and cfg.eval.linear_protocol == "sgd":
        from vissl_neg.eval.linear_sgd import linear_sgd

        probe_dir = Path(run_dir) / ("linear_sgd_random_init" if random_init else "linear_sgd")
        probe_dir.mkdir(exist_ok=True)
        result = linear_sgd(cfg, backbone, torch.device(device), probe_dir)
    else:
        result = evaluate_backbone(cfg, backbone, kind, torch.device(device))
    result.update({"run_dir": str(run_dir), "random_init": random_init, "step": state["step"]})
    name = f"{kind}_random_init.json" if random_init else f"{kind}.json"
    (Path(run_dir) / name).write_text(json.dumps(result, indent=2))
    return result


def cli(kind: str, doc: str, argv=None) -> int:
    """The shared command line of tools/knn.py and tools/linear_probe.py."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--random-init", action="store_true", help="evaluate the same architecture, untrained")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_run(args.run_dir, kind, args.random_init, args.device)))
    return 0
