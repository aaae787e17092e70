"""MoCo v3 as the reference code builds it (facebookresearch/moco-v3 at c349e6e): the fixed 2-D
sin-cos position embedding, the ViT initialisation, the MLP builder, SyncBN under DDP, BYOL's
solarisation and asymmetric views, the ViT linear probe's schedule, and the shipped
imagenet_mocov3_vits.yaml putting them together. Each reference function is transcribed here."""

from __future__ import annotations

import math
from functools import reduce
from operator import mul

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image, ImageOps

from vissl_neg.augment import ViewAugment, ops, second_view
from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer, sync_batch_norms
from vissl_neg.errors import ConfigError
from vissl_neg.eval.linear_sgd import probe_augment, probe_lr, probe_schedule
from vissl_neg.models import (
    ProjectionHead,
    build_backbone,
    build_encoder,
    build_predictor,
    mocov3_vit_init,
    sincos_position_embedding,
)

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import tiny_overrides, write_fmnist_fixture


# ---------------------------------------------------------------- transcriptions of the reference
def ref_sincos(grid_size: tuple[int, int], embed_dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """moco-v3 c349e6e vits.py:53-69 (VisionTransformerMoCo.build_2d_sincos_position_embedding),
    with self.patch_embed.grid_size / self.embed_dim as arguments; torch.meshgrid's default
    indexing, written out, is 'ij'."""
    h, w = grid_size
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    assert embed_dim % 4 == 0
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
    omega = 1.0 / (temperature**omega)
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    pos_emb = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None, :, :]
    pe_token = torch.zeros([1, 1, embed_dim], dtype=torch.float32)
    return torch.cat([pe_token, pos_emb], dim=1)


def ref_init(self) -> None:
    """moco-v3 c349e6e vits.py:31-47 (VisionTransformerMoCo.__init__'s weight initialisation) on a
    timm VisionTransformer ``self``; timm's PatchEmbed is imported from timm.layers today."""
    from timm.layers import PatchEmbed

    for name, m in self.named_modules():
        if isinstance(m, nn.Linear):
            if "qkv" in name:
                # treat the weights of Q, K, V separately
                val = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                nn.init.uniform_(m.weight, -val, val)
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(self.cls_token, std=1e-6)

    if isinstance(self.patch_embed, PatchEmbed):
        # xavier_uniform initialization
        val = math.sqrt(6.0 / float(3 * reduce(mul, self.patch_embed.patch_size, 1) + self.embed_dim))
        nn.init.uniform_(self.patch_embed.proj.weight, -val, val)
        nn.init.zeros_(self.patch_embed.proj.bias)


def ref_build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
    """moco-v3 c349e6e moco/builder.py:36-52 (MoCo._build_mlp)."""
    mlp = []
    for l in range(num_layers):  # noqa: E741 (the reference's name)
        dim1 = input_dim if l == 0 else mlp_dim
        dim2 = output_dim if l == num_layers - 1 else mlp_dim

        mlp.append(nn.Linear(dim1, dim2, bias=False))

        if l < num_layers - 1:
            mlp.append(nn.BatchNorm1d(dim2))
            mlp.append(nn.ReLU(inplace=True))
        elif last_bn:
            # follow SimCLR's design: https://github.com/google-research/simclr/blob/master/model_util.py#L157
            # for simplicity, we further removed gamma in BN
            mlp.append(nn.BatchNorm1d(dim2, affine=False))

    return nn.Sequential(*mlp)


def ref_adjust_learning_rate(init_lr: float, epoch: int, epochs: int) -> float:
    """moco-v3 c349e6e main_lincls.py:499-503 (adjust_learning_rate), returning cur_lr."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


# ---------------------------------------------------------------- ViT
@pytest.mark.parametrize("grid,dim", [((14, 14), 384), ((4, 4), 96), ((3, 5), 8)])
def test_sincos_embedding_is_the_references(grid, dim):
    assert torch.equal(sincos_position_embedding(*grid, dim), ref_sincos(grid, dim))


def test_sincos_backbone_keeps_the_table_frozen():
    model = build_backbone("test_vit3", 1, image_size=28, patch_size=7, pos_embed="sincos")
    assert not model.pos_embed.requires_grad
    assert torch.equal(model.pos_embed.detach(), ref_sincos((4, 4), 96))
    plain = build_backbone("test_vit3", 1, image_size=28, patch_size=7)
    assert plain.pos_embed.requires_grad and not torch.equal(plain.pos_embed.detach(), ref_sincos((4, 4), 96))
    with pytest.raises(ConfigError, match="model.pos_embed=sincos"):
        build_backbone("resnet10t", 1, pos_embed="sincos")


def test_vit_init_is_the_references():
    """Same seed, same timm ViT: the transcribed reference and ours draw the same tensors."""
    ours = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8)
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8)
    ref.load_state_dict(ours.state_dict())  # what the init leaves alone (pos_embed, norms) starts equal
    torch.manual_seed(3)
    mocov3_vit_init(ours)
    torch.manual_seed(3)
    ref_init(ref)
    ref_sd = ref.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, ref_sd[name]), name
    # it differs from timm's own: zero patch bias, Q/K/V bound of a (D, D) matrix
    assert torch.count_nonzero(ours.patch_embed.proj.bias) == 0
    qkv = ours.blocks[0].attn.qkv.weight
    bound = math.sqrt(6.0 / (qkv.shape[1] + qkv.shape[0] // 3))
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.9 * bound


def test_build_backbone_applies_the_reference_init_and_heads():
    torch.manual_seed(0)
    model = build_backbone(
        "vit_small_patch16_224", 3, image_size=32, patch_size=8, num_heads=12, init="mocov3", pos_embed="sincos"
    )
    assert model.blocks[0].attn.num_heads == 12 and model.blocks[0].attn.head_dim == 32
    assert torch.count_nonzero(model.patch_embed.proj.bias) == 0
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0
    with pytest.raises(ConfigError, match="model.vit_init=mocov3"):
        build_backbone("resnet10t", 1, init="mocov3")


# ---------------------------------------------------------------- heads
def _structure(seq: nn.Sequential) -> list[tuple]:
    out = []
    for m in seq:
        if isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("bn", m.num_features, m.affine))
        else:
            out.append((type(m).__name__,))
    return out


@pytest.mark.parametrize("layers,last_bn", [(3, True), (2, True)])
def test_mlp_is_the_references(layers, last_bn):
    """The ViT projector (3 layers) and the ViT predictor (2 layers, last BN) of moco-v3 builder.py:118, 122."""
    ours = ProjectionHead(24, 40, 16, bn=True, last_bn=last_bn, layers=layers)
    ref = ref_build_mlp(layers, 24, 40, 16, last_bn)
    assert _structure(ours.net) == _structure(ref)
    ours.net.load_state_dict(ref.state_dict())
    x = torch.randn(12, 24)
    torch.testing.assert_close(ours(x), ref(x))  # train mode: batch statistics


def test_imagenet_v3_config_builds_the_references_vit_s():
    cfg = load_config("configs/imagenet_mocov3_vits.yaml")
    m = cfg.model
    assert (m.num_heads, m.pos_embed, m.vit_init, m.head_layers, m.predictor_last_bn, m.sync_bn) == (
        12,
        "sincos",
        "mocov3",
        3,
        True,
        True,
    )
    torch.manual_seed(0)
    encoder = build_encoder(m, 3, 224)
    backbone = encoder.backbone
    assert len(backbone.blocks) == 12 and backbone.embed_dim == 384
    assert all(b.attn.num_heads == 12 for b in backbone.blocks)
    assert not backbone.pos_embed.requires_grad and torch.equal(backbone.pos_embed.detach(), ref_sincos((14, 14), 384))
    assert not any(p.requires_grad for p in backbone.patch_embed.parameters())
    assert _structure(encoder.head.net) == _structure(ref_build_mlp(3, 384, 4096, 256))
    assert _structure(build_predictor(m).net) == _structure(ref_build_mlp(2, 256, 4096, 256))


# ---------------------------------------------------------------- training pieces
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=64, n_test=32)
    return root


V3_VIT = [
    "model.backbone=test_vit3",
    "model.patch_size=7",
    "model.num_heads=4",
    "model.pos_embed=sincos",
    "model.vit_init=mocov3",
    "model.head_layers=3",
    "model.head_bn=true",
    "model.predictor_hidden=32",
    "model.predictor_last_bn=true",
    "model.sync_bn=true",
    "model.freeze_patch_embed=true",
    "negatives.source=batch",
    "loss.symmetric=true",
    "optim.name=adamw",
    "optim.lr=1e-3",
    "optim.batch_size=16",
    "eval.knn_every=-1",
    "augment.view2={blur_p: 0.1, solarize_p: 0.2}",
    "augment.blur_p=1.0",
]


def test_v3_vit_trains_with_frozen_sincos_outside_the_optimizer(data_root, tmp_path):
    trainer = Trainer(load_config(None, tiny_overrides(data_root, tmp_path) + V3_VIT), resume=False)
    backbone = trainer.model.encoder_q.backbone
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(backbone.pos_embed) not in optimised  # neither trained nor weight-decayed
    assert id(backbone.reg_token) in optimised  # test_vit3's one prefix token is a register token
    assert trainer.augment2 is not trainer.augment and trainer.augment2.cfg.solarize_p == 0.2
    before = backbone.pos_embed.detach().clone()
    trainer.sampler.set_epoch(0, 0)
    images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    out = trainer.train_step(images, labels, indices)
    assert torch.isfinite(out["loss"])
    assert torch.equal(backbone.pos_embed, before)
    # the EMA runs over every parameter, as the reference's (builder.py:60-61): m x + (1 - m) x is x up to rounding
    torch.testing.assert_close(trainer.model.encoder_k.backbone.pos_embed.detach(), before, atol=1e-6, rtol=1e-6)


def test_sync_bn_converts_every_head_bn_under_ddp(data_root, tmp_path):
    trainer = Trainer(load_config(None, tiny_overrides(data_root, tmp_path) + V3_VIT), resume=False)
    model = trainer.model
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert n_bn == 2 * 3 + 2  # both projectors (3 BNs each) and the predictor (2)
    same, note = sync_batch_norms(model, 1, "cuda")
    assert same is model and note is None
    same, note = sync_batch_norms(model, 2, "cpu")
    assert same is model and "CUDA" in note
    synced, note = sync_batch_norms(model, 2, "cuda")
    assert note is None
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == n_bn
    assert isinstance(synced.predictor.net[4], nn.SyncBatchNorm) and not synced.predictor.net[4].affine


def test_sync_bn_and_shuffle_bn_exclude_each_other():
    with pytest.raises(ConfigError, match="model.sync_bn=true .* model.shuffle_bn=split"):
        load_config(None, ["model.sync_bn=true", "model.shuffle_bn=split"])
    with pytest.raises(ConfigError, match="model.head_layers"):
        load_config(None, ["model.head_layers=1"])
    with pytest.raises(ConfigError, match="model.pos_embed"):
        load_config(None, ["model.pos_embed=fixed"])


# ---------------------------------------------------------------- views
def test_solarize_is_pils():
    """moco-v3 c349e6e moco/loader.py:38-42: Solarize = PIL ImageOps.solarize (threshold 128)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    want = torch.from_numpy(np.array(ImageOps.solarize(Image.fromarray(img)))).permute(2, 0, 1).float() / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    got = ops.solarize(x, torch.tensor([True]))
    torch.testing.assert_close(got[0], want, atol=1e-6, rtol=0)
    assert torch.equal(ops.solarize(x, torch.tensor([False])), x)


def test_view2_gives_the_second_view_its_own_values():
    cfg = load_config("configs/imagenet_mocov3_vits.yaml")
    a, b = cfg.augment, second_view(cfg.augment)
    # moco-v3 c349e6e main_moco.py:262-285 (crop-min 0.08 at :117-118)
    assert (a.crop_scale, a.saturation, a.blur_p, a.solarize_p) == ([0.08, 1.0], 0.2, 1.0, 0.0)
    assert (b.crop_scale, b.saturation, b.blur_p, b.solarize_p) == ([0.08, 1.0], 0.2, 0.1, 0.2)
    assert b.view2 == {} and a.view2 == {"blur_p": 0.1, "solarize_p": 0.2}
    # solarisation applies to a second view with p 1: a white image turns black
    view = ViewAugment(
        second_view(
            load_config(
                None,
                [
                    "augment.view2={solarize_p: 1.0}",
                    "augment.jitter_p=0",
                    "augment.blur_p=0",
                    "augment.mean=[0]",
                    "augment.std=[1]",
                ],
            ).augment
        ),
        1,
    )
    assert torch.equal(view(torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)), torch.zeros(2, 1, 28, 28))
    # the probe's views never solarise
    probe = probe_augment(cfg, 3)
    assert probe.cfg.solarize_p == 0 and probe.cfg.view2 == {}


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "augment.view2={blur_q: 0.1}",
            "unknown config key 'augment.view2.blur_q' (did you mean 'augment.view2.blur_p'?)",
        ),
        ("augment.view2={size: 32}", "'augment.view2.size': both views share augment.size"),
        ("augment.view2={blur_p: high}", "config key 'augment.view2.blur_p' must be of type float"),
        ("augment.view2={solarize_p: 2}", "config key 'augment.view2.solarize_p' must be a probability"),
        ("augment.solarize_p=-1", "config key 'augment.solarize_p' must be a probability"),
    ],
)
def test_view2_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_configs_without_view2_use_one_pipeline(data_root, tmp_path):
    trainer = Trainer(
        load_config(None, tiny_overrides(data_root, tmp_path) + ["eval.knn_every=-1", "optim.batch_size=16"]),
        resume=False,
    )
    assert trainer.augment2 is trainer.augment


# ---------------------------------------------------------------- linear probe
def test_cosine_probe_schedule_is_the_references():
    cfg = load_config("configs/imagenet_mocov3_vits.yaml").eval
    init_lr = 3.0 * 1024 / 256  # main_lincls.py:196 with CONFIG.md's --lr=3 and the default batch 1024
    assert probe_lr(cfg) == init_lr and cfg.linear_epochs == 90 and cfg.linear_weight_decay == 0
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=probe_lr(cfg))
    sched = probe_schedule(opt, cfg)
    for epoch in range(cfg.linear_epochs):  # the reference sets the lr at each epoch's start
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_adjust_learning_rate(init_lr, epoch, 90), rel=1e-12)
        opt.step()
        sched.step()


def test_stepped_probe_schedule_is_unchanged():
    cfg = load_config("configs/imagenet_mocov2.yaml").eval
    assert probe_lr(cfg) == 30.0
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=probe_lr(cfg))
    sched = probe_schedule(opt, cfg)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[59] == 30.0 and lrs[60] == pytest.approx(3.0) and lrs[80] == pytest.approx(0.3)


def test_v3_vit_exports_into_timm_with_its_heads_and_sincos_table(data_root, tmp_path):
    """The sin-cos table is a weight of timm's ViT and num_heads is a model argument: the hub
    layout rebuilds the trained backbone with the same features; evaluation rebuilds it too."""
    import json

    from vissl_neg.cli.evaluate import evaluate_run
    from vissl_neg.export import export_run

    run_dir = tmp_path / "run"
    trainer = Trainer(load_config(None, tiny_overrides(data_root, run_dir) + V3_VIT + ["train.max_steps=1"]))
    trainer.fit()
    export_run(run_dir)
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["model_args"]["num_heads"] == 4
    model = timm.create_model(f"local-dir:{run_dir / 'export'}", pretrained=True).eval()
    assert model.blocks[0].attn.num_heads == 4
    assert torch.equal(model.pos_embed.detach(), ref_sincos((4, 4), 96))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model.encoder_q.backbone.eval()(x))
    assert evaluate_run(run_dir, "knn")["step"] == 1
