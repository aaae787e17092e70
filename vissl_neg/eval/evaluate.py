"""Evaluate a backbone on its config's dataset: frozen features, kNN or linear probe, and the
BN re-estimation that makes a random-init baseline meaningful."""

from __future__ import annotations

import time

import torch

from vissl_neg.augment import EvalTransform
from vissl_neg.config import Config
from vissl_neg.data import build_dataset
from vissl_neg.eval.features import extract_features
from vissl_neg.eval.knn import knn_top1
from vissl_neg.eval.linear_probe import linear_probe


def frozen_features(cfg: Config, backbone: torch.nn.Module, device: torch.device):
    """-> (train feats, train labels, test feats, test labels) of the config's dataset."""
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    transform = EvalTransform(cfg.augment, train_set.in_chans).to(device)
    backbone = backbone.to(device)
    train = extract_features(backbone, train_set, transform, device, cfg.eval.batch_size)
    test = extract_features(backbone, test_set, transform, device, cfg.eval.batch_size)
    return (*train, *test)


@torch.no_grad()
def recalibrate_bn(
    backbone: torch.nn.Module,
    dataset,
    transform,
    device: torch.device,
    batches: int = 50,
    batch_size: int = 256,
    seed: int = 0,
    views: tuple[int, ...] = (0,),
) -> None:
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
    return {
        "top1": round(top1, 2),
        "train_size": len(tr_y),
        "test_size": len(te_y),
        "seconds": round(time.perf_counter() - t0, 1),
        **extra,
    }


def evaluate_backbone(cfg: Config, backbone: torch.nn.Module, kind: str, device: torch.device) -> dict:
    """kind 'knn' or 'linear_probe' -> {"top1": percent, ...} (seconds include feature extraction)."""
    t0 = time.perf_counter()
    result = evaluate_features(cfg, frozen_features(cfg, backbone, device), kind)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
