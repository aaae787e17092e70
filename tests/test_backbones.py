"""Any timm backbone: one training step of a ResNet, a ConvNeXt, a ViT and an EfficientNet on
Fashion-MNIST (1 channel, 28x28) and on the ImageNet fixture (3 channels, 64x64), random init;
the data's size reaches fixed-size models, patch sizes that cannot tile it and inputs a model
cannot take are one-line errors, and shuffle-BN is skipped for models without BatchNorm."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.errors import ConfigError
from vissl_neg.models import SplitBatchNorm2d, SplitBatchNormAct2d, build_backbone, build_encoder, convert_split_bn

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import write_fmnist_fixture, write_imagenet_fixture

COMMON = [
    "optim.batch_size=16",
    "negatives.size=32",
    "model.head_hidden=32",
    "model.dim=16",
    "model.bn_splits=2",
    "train.max_steps=1",
    "train.progress=false",
    "eval.knn_every=-1",
]
IMAGENET = [
    "data.name=imagenet",
    "data.decode_size=72",
    "augment.size=64",
    "augment.mean=[0.485, 0.456, 0.406]",
    "augment.std=[0.229, 0.224, 0.225]",
]
# backbone -> (its Fashion-MNIST overrides, has BatchNorm). ConvNeXt downsamples by 32 with
# unpadded stride-2 convolutions, so it needs views of at least 32x32 (28x28 is refused below).
BACKBONES = {
    "resnet10t": ([], True),
    "convnext_atto": (["augment.size=32"], False),
    "vit_tiny_patch16_224": (["model.patch_size=4"], False),
    "efficientnet_b0": ([], True),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fmnist_fixture(root / "fmnist", n_train=64, n_test=16)
    write_imagenet_fixture(root / "imagenet", train_per_class=4, val_per_class=1, corrupt=False)
    return root


def _one_step(overrides: list[str]) -> Trainer:
    trainer = Trainer(load_config(None, overrides + COMMON), resume=False)
    before = {k: v.clone() for k, v in trainer.model.encoder_q.backbone.state_dict().items()}
    result = trainer.fit()
    assert result["step"] == 1 and torch.isfinite(torch.tensor(result["last_log"]["train/loss"]))
    after = trainer.model.encoder_q.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    return trainer


@pytest.mark.parametrize("data", ["fmnist", "imagenet"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_one_training_step(roots, tmp_path, name, data):
    extra, has_bn = BACKBONES[name]
    overrides = (
        [f"data.root={roots / 'fmnist'}", *extra]
        if data == "fmnist"
        else [f"data.root={roots / 'imagenet'}", *IMAGENET]
    )
    trainer = _one_step(overrides + [f"model.backbone={name}", f"train.out_dir={tmp_path / 'run'}"])
    size = trainer.cfg.augment.size
    chans = 1 if data == "fmnist" else 3
    backbone = trainer.model.encoder_q.backbone
    assert backbone.eval()(torch.zeros(2, chans, size, size)).shape[0] == 2
    skipped = [n for n in trainer.notes if "no BatchNorm" in n]
    if has_bn:  # every BatchNorm layer computes split statistics, keys are shuffled
        assert not skipped and trainer.model.shuffle_bn == "split"
        n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
        assert n_bn > 0
        assert sum(isinstance(m, (SplitBatchNorm2d, SplitBatchNormAct2d)) for m in backbone.modules()) == n_bn
    else:
        assert len(skipped) == 1 and name in skipped[0] and trainer.model.shuffle_bn == "none"


def test_fixed_size_models_get_the_data_size(roots, tmp_path):
    """The ViT is built for the data's 28x28 views with 4x4 patches (a 7x7 grid + class token)
    on Fashion-MNIST, and for 64x64 with its own 16x16 patches on the ImageNet fixture."""
    vit = build_encoder(
        load_config(None, ["model.backbone=vit_tiny_patch16_224", "model.patch_size=4"]).model, 1, 28
    ).backbone
    assert vit.patch_embed.img_size == (28, 28) and vit.patch_embed.patch_size == (4, 4)
    assert vit.pos_embed.shape[1] == 7 * 7 + 1
    vit64 = build_backbone("vit_tiny_patch16_224", 3, image_size=64)
    assert vit64.patch_embed.img_size == (64, 64) and vit64.pos_embed.shape[1] == 4 * 4 + 1
    # models without a fixed size are built exactly as timm builds them by default
    plain = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    ours = build_backbone("resnet10t", 1, image_size=28)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [(k, v.shape) for k, v in ours.state_dict().items()]


def test_vit_on_fashion_mnist_without_patch_size_says_which_to_use(roots, tmp_path):
    with pytest.raises(ConfigError) as info:
        Trainer(
            load_config(
                None,
                [
                    f"data.root={roots / 'fmnist'}",
                    "model.backbone=vit_tiny_patch16_224",
                    f"train.out_dir={tmp_path / 'run'}",
                    *COMMON,
                ],
            )
        )
    msg = str(info.value)
    assert "\n" not in msg and "'vit_tiny_patch16_224'" in msg and "28x28" in msg and "16x16 patches" in msg
    assert "model.patch_size=7" in msg and "model.patch_size=4" in msg


def test_an_input_the_model_cannot_take_is_one_line(roots, tmp_path):
    """ConvNeXt's four stride-2 stages cannot take 28x28 (7 -> 3 -> 1 -> nothing)."""
    with pytest.raises(ConfigError) as info:
        Trainer(
            load_config(
                None,
                [
                    f"data.root={roots / 'fmnist'}",
                    "model.backbone=convnext_atto",
                    f"train.out_dir={tmp_path / 'run'}",
                    *COMMON,
                ],
            )
        )
    msg = str(info.value)
    assert "\n" not in msg and "'convnext_atto'" in msg and "1x28x28" in msg and "downsamples by 32" in msg
    with pytest.raises(RuntimeError):  # timm's own model fails on that input indeed
        timm.create_model("convnext_atto", num_classes=0, in_chans=1).eval()(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ConfigError) as info:  # a fixed-size model that timm cannot build at that size
        build_backbone("maxvit_tiny_tf_224", 1, image_size=28)
    assert "\n" not in str(info.value) and "'maxvit_tiny_tf_224'" in str(info.value) and "1x28x28" in str(info.value)


def test_patch_size_of_a_model_without_patches(tmp_path):
    with pytest.raises(ConfigError, match="'resnet10t' takes no patch size.*model.patch_size=0"):
        build_backbone("resnet10t", 1, image_size=28, patch_size=4)
    with pytest.raises(ConfigError, match="model.patch_size"):
        load_config(None, ["model.patch_size=-1"])


def test_split_batch_norm_act_matches_per_group_statistics():
    """timm's BatchNormAct2d (EfficientNet) in split form: group g's outputs are BN over the
    samples n = g mod G alone, then the activation; running stats the mean of the groups'."""
    torch.manual_seed(0)
    plain = timm.layers.BatchNormAct2d(5, act_layer=nn.SiLU)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    holder = nn.Sequential(plain)
    assert convert_split_bn(holder, 2) == 1
    split = holder[0]
    assert isinstance(split, SplitBatchNormAct2d) and isinstance(split.act, nn.SiLU)
    x = torch.randn(8, 5, 3, 3) * 2 + 1
    out = split.train()(x)
    for g in range(2):
        xg = x[g::2]
        ref = F.silu(F.batch_norm(xg, None, None, plain.weight, plain.bias, True, 0.1, plain.eps))
        torch.testing.assert_close(out[g::2], ref)
    means = torch.stack([0.1 * x[g::2].mean((0, 2, 3)) for g in range(2)]).mean(0)  # from zeros, momentum 0.1
    torch.testing.assert_close(split.running_mean, means)
    fresh = timm.layers.BatchNormAct2d(5, act_layer=nn.SiLU)
    fresh.load_state_dict(split.state_dict(), strict=True)
    torch.testing.assert_close(fresh.eval()(x), split.eval()(x))
