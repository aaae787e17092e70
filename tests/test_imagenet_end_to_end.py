"""An ImageNet-layout fixture (with one corrupt JPEG) end to end: train, resume, linear
probe, export; the corrupt file is counted in the logs and never stops the run."""

from __future__ import annotations

import json
import warnings

import timm
import torch

from vissl_neg.cli.evaluate import evaluate_run
from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.eval.evaluate import evaluate_features, frozen_features
from vissl_neg.export.release import export_run

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import write_imagenet_fixture


def overrides(root, out_dir, *extra):
    return [
        "data.name=imagenet",
        f"data.root={root}",
        "data.decode_size=36",
        "data.num_workers=0",
        "augment.size=32",
        "augment.mean=[0.485, 0.456, 0.406]",
        "augment.std=[0.229, 0.224, 0.225]",
        "augment.blur_kernel=3",
        "model.backbone=resnet10t",
        "model.head_hidden=64",
        "model.dim=32",
        "model.bn_splits=2",
        "negatives.size=40",
        "optim.batch_size=8",
        "train.epochs=2",
        "train.ckpt_every=2",
        "train.log_every=1",
        "train.progress=false",
        "eval.knn_every=1",
        "eval.knn_k=5",
        f"train.out_dir={out_dir}",
        *extra,
    ]


def test_train_resume_probe_export(tmp_path):
    """Train 3 steps, resume to the end (6): the same weights, optimizer state and kNN history as
    an uninterrupted run; the linear probe's top-1 is what the exported timm backbone's own
    features give; the corrupt JPEG is counted."""
    write_imagenet_fixture(tmp_path / "imagenet", train_per_class=6, val_per_class=3)
    run, whole_run = tmp_path / "run", tmp_path / "whole"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt JPEG warns each time it is met
        whole = Trainer(load_config(None, overrides(tmp_path / "imagenet", whole_run))).fit()
        first = Trainer(load_config(None, overrides(tmp_path / "imagenet", run, "train.max_steps=3")))
        first.fit()
        assert torch.load(run / "last.ckpt", weights_only=True)["step"] == 3  # stopped mid-run
        resumed = Trainer(load_config(None, overrides(tmp_path / "imagenet", run)))
        assert resumed.step == 3
        result = resumed.fit()
    assert result["step"] == whole["step"] == 2 * (25 // 8) and result["knn_top1"] is not None
    a, b = (torch.load(r / "last.ckpt", weights_only=True) for r in (whole_run, run))
    for part in ("model", "optimizer"):
        flat_a, flat_b = flatten(a[part]), flatten(b[part])
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            x, y = flat_a[key], flat_b[key]
            assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, (part, key)
    assert [(m["step"], m["knn_top1"]) for m in result["history"]] == [
        (m["step"], m["knn_top1"]) for m in whole["history"]
    ]
    assert result["last_log"]["data/skipped_images"] >= 1
    probe = evaluate_run(run, "linear_probe")
    export = export_run(run)
    model = timm.create_model("resnet10t", num_classes=0, in_chans=3)
    model.load_state_dict(
        torch.load(run / "export" / "backbone.pth", map_location="cpu", weights_only=True), strict=True
    )
    cfg = load_config(None, overrides(tmp_path / "imagenet", run))
    timm_probe = evaluate_features(cfg, frozen_features(cfg, model.eval(), torch.device("cpu")), "linear_probe")
    assert probe["test_size"] == timm_probe["test_size"] == 12 and probe["top1"] == timm_probe["top1"]
    assert export["backbone"] == "resnet10t"
    assert json.loads((run / "metrics.json").read_text())["step"] == result["step"]


def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts / lists of a state dict -> {dotted path: leaf}."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in flatten(sub, f"{prefix}{i}.").items()}
    return {prefix: tree}
