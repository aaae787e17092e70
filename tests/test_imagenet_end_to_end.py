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
    write_imagenet_fixture(tmp_path / "imagenet", train_per_class=6, val_per_class=3)
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt JPEG warns each time it is met
        first = Trainer(load_config(None, overrides(tmp_path / "imagenet", run, "train.max_steps=3")))
        first.fit()
        resumed = Trainer(load_config(None, overrides(tmp_path / "imagenet", run)))
        assert resumed.step == 3
        result = resumed.fit()
    assert result["step"] == 2 * (25 // 8) and result["knn_top1"] is not None
    assert result["last_log"]["data/skipped_images"] >= 1
    probe = evaluate_run(run, "linear_probe")
    assert probe["test_size"] == 12 and 0 <= probe["top1"] <= 100
    export = export_run(run)
    model = timm.create_model("resnet10t", num_classes=0, in_chans=3)
    model.load_state_dict(
        torch.load(run / "export" / "backbone.pth", map_location="cpu", weights_only=True), strict=True
    )
    assert export["backbone"] == "resnet10t"
    assert json.loads((run / "metrics.json").read_text())["step"] == result["step"]
