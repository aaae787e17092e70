"""The papers' linear-probe protocol for large datasets (MoCo, He et al. 2020: SGD lr 30,
no weight decay, 100 epochs, lr x0.1 at epochs 60 and 80, batch 256; or MoCo v3's for ViTs:
lr 3 x batch / 256, batch 1024, 90 epochs, cosine per epoch): a linear classifier
on the frozen backbone (eval-mode BN), trained on RandomResizedCrop + flip views made on
the device, scored on centre crops. Resumable: the classifier, optimizer and RNG state are
saved atomically after every epoch in RUN_DIR/linear_sgd.ckpt.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from vissl_neg.augment import EvalTransform, ViewAugment
from vissl_neg.config import Config
from vissl_neg.data import ResumableBatchSampler, build_dataset, make_loader, to_device
from vissl_neg.runtime import checkpoint as ckpt

CHECKPOINT = "linear_sgd.ckpt"


def probe_augment(cfg: Config, in_chans: int) -> ViewAugment:
    """RandomResizedCrop (0.08, 1) + horizontal flip, no colour or blur: the linear-eval views."""
    a = dataclasses.replace(
        cfg.augment,
        crop_scale=[0.08, 1.0],
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        erase_p=0.0,
        solarize_p=0.0,
        flip_p=0.5,
        view2={},
    )
    return ViewAugment(a, in_chans)


def probe_lr(e) -> float:
    """The probe's initial lr: ``eval.linear_lr``, times linear_batch_size / 256 with
    ``linear_lr_scaling: linear`` (MoCo v3, main_lincls.py:196)."""
    return e.linear_lr * (e.linear_batch_size / 256 if e.linear_lr_scaling == "linear" else 1.0)


def probe_schedule(opt: torch.optim.Optimizer, e) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: x0.1 at each of ``linear_milestones`` (MoCo v1/v2), or with
    ``linear_schedule: cosine`` lr0 * 0.5 * (1 + cos(pi * epoch / epochs)) (MoCo v3's
    ``adjust_learning_rate``, main_lincls.py:499-503)."""
    if e.linear_schedule == "cosine":
        epochs = e.linear_epochs
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(e.linear_milestones), gamma=0.1)


@torch.no_grad()
def top1(backbone: nn.Module, classifier: nn.Module, dataset, transform, device, batch_size: int) -> float:
    correct = 0
    for start in range(0, len(dataset), batch_size):
        images, labels, _ = to_device(
            dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset))))), device
        )
        correct += int((classifier(backbone(transform(images)).float()).argmax(1) == labels).sum())
    return 100.0 * correct / len(dataset)


def linear_sgd(
    cfg: Config, backbone: nn.Module, device: torch.device, run_dir: str | Path | None = None, progress: bool = True
) -> dict:
    """Train and score the linear classifier -> {"top1": percent, ...}."""
    e = cfg.eval
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    backbone = backbone.to(device).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    num_classes = int(train_set.labels.max()) + 1
    with torch.no_grad():
        size = cfg.augment.size
        dim = backbone(torch.zeros(2, train_set.in_chans, size, size, device=device)).shape[1]
    torch.manual_seed(cfg.train.seed)
    classifier = nn.Linear(dim, num_classes).to(device)
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)
    lr = probe_lr(e)
    opt = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=e.linear_weight_decay)
    sched = probe_schedule(opt, e)
    augment, center = (
        probe_augment(cfg, train_set.in_chans).to(device),
        EvalTransform(cfg.augment, train_set.in_chans).to(device),
    )
    path = Path(run_dir) / CHECKPOINT if run_dir else None
    epoch = 0
    if path is not None and path.is_file():
        state = ckpt.load(path)
        classifier.load_state_dict(state["classifier"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        epoch = state["epoch"]
    # image folders with data.crops=image: the crop boxes are drawn over each whole image in the workers
    whole_image = cfg.data.whole_image_crops and hasattr(train_set, "cropped_view")
    loader_set = (
        train_set.cropped_view([(augment.cfg.crop_scale, augment.cfg.crop_ratio)], augment.cfg.size)
        if whole_image
        else train_set
    )
    sampler = ResumableBatchSampler(
        len(train_set), min(e.linear_batch_size, len(train_set)), cfg.train.seed, keyed=whole_image
    )
    loader = make_loader(
        loader_set,
        sampler,
        cfg.data.num_workers,
        cfg.data.pin_memory,
        seed=cfg.train.seed,
        prefetch_factor=cfg.data.prefetch_factor,
        persistent_workers=cfg.data.persistent_workers,
    )
    t0 = time.perf_counter()
    bar = tqdm(total=e.linear_epochs, initial=epoch, unit="epoch", disable=not progress, desc="linear probe")
    while epoch < e.linear_epochs:
        sampler.set_epoch(epoch)
        for batch in loader:
            images, labels, _ = to_device(batch, device)
            with torch.no_grad():
                views = augment(images[:, 0], cropped=True) if whole_image else augment(images)
                feats = backbone(views).float()
            loss = F.cross_entropy(classifier(feats), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        epoch += 1
        bar.update(1)
        if path is not None:
            ckpt.save_atomic(
                {
                    "classifier": classifier.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": ckpt.rng_state(),
                    "epoch": epoch,
                },
                path,
            )
    bar.close()
    acc = top1(backbone, classifier, test_set, center, device, cfg.eval.batch_size)
    return {
        "top1": round(acc, 2),
        "train_size": len(train_set),
        "test_size": len(test_set),
        "classifier": f"linear, SGD lr {lr:g}, wd {e.linear_weight_decay:g}, {e.linear_epochs} epochs, "
        + ("cosine" if e.linear_schedule == "cosine" else f"milestones {list(e.linear_milestones)}")
        + ", RandomResizedCrop"
        + (" (whole image)" if whole_image else "")
        + "+flip, centre-crop eval",
        "seconds": round(time.perf_counter() - t0, 1),
    }
