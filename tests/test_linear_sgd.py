"""The papers' SGD linear-probe protocol on an ImageNet-layout fixture: learns the classes,
saves after every epoch, and a re-run continues from the saved epoch."""

from __future__ import annotations

import warnings

import torch

from vissl_neg.config import load_config
from vissl_neg.eval.linear_sgd import CHECKPOINT, linear_sgd
from vissl_neg.models import build_backbone
from vissl_neg.runtime import checkpoint as ckpt

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import write_imagenet_fixture


def test_linear_sgd_learns_and_resumes(tmp_path):
    write_imagenet_fixture(tmp_path / "data", train_per_class=8, val_per_class=4, corrupt=False)
    base = [
        "data.name=imagenet",
        f"data.root={tmp_path / 'data'}",
        "data.decode_size=36",
        "augment.size=32",
        "augment.mean=[0.5, 0.5, 0.5]",
        "augment.std=[0.25, 0.25, 0.25]",
        "eval.linear_protocol=sgd",
        "eval.linear_lr=0.5",
        "eval.linear_batch_size=16",
        "eval.linear_milestones=[4]",
    ]
    cfg = load_config(None, base + ["eval.linear_epochs=6"])
    torch.manual_seed(0)
    backbone = build_backbone("resnet10t", 3)
    for m in backbone.modules():  # fixed BN statistics so eval-mode features are not degenerate
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = linear_sgd(cfg, backbone, torch.device("cpu"), tmp_path / "whole", progress=False)
    assert whole["test_size"] == 16 and whole["top1"] >= 75.0  # 4 colour classes: chance is 25 %
    saved = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)  # tensors and plain values only
    assert (
        saved["epoch"] == 6 and saved["optimizer"]["state"] and isinstance(saved["rng"]["numpy"]["keys"], torch.Tensor)
    )
    # 3 epochs, then the same call with 6 continues from epoch 3 and ends where the whole run did
    part = tmp_path / "part"
    short = load_config(None, base + ["eval.linear_epochs=3"])
    torch.manual_seed(0)
    linear_sgd(short, backbone, torch.device("cpu"), part, progress=False)
    assert ckpt.load(part / CHECKPOINT)["epoch"] == 3
    torch.manual_seed(123)  # the saved RNG state, not this, drives the remaining epochs
    resumed = linear_sgd(cfg, backbone, torch.device("cpu"), part, progress=False)
    assert resumed["top1"] == whole["top1"]
    a, b = ckpt.load(tmp_path / "whole" / CHECKPOINT), ckpt.load(part / CHECKPOINT)
    for key in a["classifier"]:
        assert torch.equal(a["classifier"][key], b["classifier"][key])
