"""Export of a trained run's backbone for timm / torchvision, and its model card."""

from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from helpers import tiny_overrides, write_fmnist_fixture
from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.errors import UserError
from vissl_neg.export import export_run


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=256, n_test=64)
    return root


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A resnet10t run trained for 2 steps, exported to RUN_DIR/export."""
    run_dir = tmp_path_factory.mktemp("run") / "r10t"
    cfg = load_config(None, tiny_overrides(data_root, run_dir) + ["train.max_steps=2"])
    trainer = Trainer(cfg)
    initial = {k: v.clone() for k, v in trainer.model.encoder_q.backbone.state_dict().items()}
    result = trainer.fit()
    assert result["step"] == 2
    (run_dir / "knn.json").write_text(json.dumps({"top1": 42.5}))
    card = export_run(run_dir)
    return trainer, run_dir, card, initial


def test_export_files_and_card(trained):
    _, run_dir, card, _ = trained
    weights = run_dir / "export" / "backbone.pth"
    card_path = run_dir / "export" / "model_card.json"
    assert weights.is_file() and card_path.is_file()
    on_disk = json.loads(card_path.read_text())
    assert on_disk == card
    assert card["sha256"] == _sha256(weights)
    assert card["backbone"] == "resnet10t"
    assert card["timm_kwargs"] == {"num_classes": 0, "in_chans": 1}
    assert card["step"] == 2 and card["epochs"] == 0
    assert card["knn_top1"] == 42.5  # picked up from RUN_DIR/knn.json
    assert "linear_probe_top1" not in card
    assert card["config"]["optim"]["batch_size"] == 64
    assert card["data"]["mean"] == [pytest.approx(0.2860)]


def test_backbone_loads_strictly_into_timm(trained):
    trainer, run_dir, _, initial = trained
    sd = torch.load(run_dir / "export" / "backbone.pth", map_location="cpu", weights_only=True)
    model = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    model.load_state_dict(sd, strict=True)
    # the weights are the checkpoint's query backbone, read independently from last.ckpt
    state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    prefix = "encoder_q.backbone."
    ckpt_sd = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    assert set(ckpt_sd) == set(sd)
    for k in sd:
        assert torch.equal(sd[k], ckpt_sd[k]), k
    # two SGD steps changed the weights
    assert any(not torch.equal(sd[k], initial[k]) for k in sd if sd[k].is_floating_point())
    # the released model computes the same features as the trained backbone
    x = torch.randn(4, 1, 28, 28)
    backbone = trainer.model.encoder_q.backbone
    backbone.eval()
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), backbone(x), atol=1e-5)


def test_export_to_other_folder_is_identical(trained, tmp_path):
    _, run_dir, card, _ = trained
    card2 = export_run(run_dir, tmp_path / "out")
    assert (tmp_path / "out" / "backbone.pth").is_file()
    assert card2["sha256"] == _sha256(tmp_path / "out" / "backbone.pth")
    sd1 = torch.load(run_dir / "export" / "backbone.pth", weights_only=True)
    sd2 = torch.load(tmp_path / "out" / "backbone.pth", weights_only=True)
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_resnet18_loads_into_timm_and_torchvision(data_root, tmp_path):
    run_dir = tmp_path / "r18"
    cfg = load_config(None, tiny_overrides(data_root, run_dir) + ["model.backbone=resnet18"])
    trainer = Trainer(cfg)
    with torch.no_grad():  # make the weights distinguishable from any fresh init
        for p in trainer.model.encoder_q.backbone.parameters():
            p.add_(0.01)
    trainer.save()
    card = export_run(run_dir)
    weights = run_dir / "export" / "backbone.pth"
    assert card["sha256"] == _sha256(weights) and card["backbone"] == "resnet18"
    sd = torch.load(weights, map_location="cpu", weights_only=True)

    timm.create_model("resnet18", num_classes=0, in_chans=1).load_state_dict(sd, strict=True)

    tv = torchvision.models.resnet18()
    tv.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    result = tv.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    assert torch.equal(tv.conv1.weight, sd["conv1.weight"])
    assert torch.equal(tv.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    # same pooled features as timm's model
    tv.fc = nn.Identity()
    ref = timm.create_model("resnet18", num_classes=0, in_chans=1)
    ref.load_state_dict(sd)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(tv.eval()(x), ref.eval()(x), atol=1e-5)


def test_export_of_a_non_run_directory(tmp_path):
    with pytest.raises(UserError) as info:
        export_run(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
