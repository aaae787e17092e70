"""Momentum update/schedule, MoCo's key path, split BN and the timm backbone helpers."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.config import load_config
from vissl_neg.errors import ConfigError
from vissl_neg.losses import info_nce
from vissl_neg.models import (
    MoCo,
    SplitBatchNorm2d,
    apply_small_stem,
    build_backbone,
    build_encoder,
    convert_split_bn,
    momentum_at,
    momentum_update,
)
from vissl_neg.models.shuffle_bn import batch_shuffle_single
from vissl_neg.negatives import NegativeQueue

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _small_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5))


# ------------------------------------------------------------------ momentum
@pytest.mark.parametrize("m", [0.0, 0.5, 0.99, 0.999])
def test_momentum_update_is_ema_per_parameter(m):
    online, target = _small_net(0), _small_net(1)
    with torch.no_grad():
        target[1].running_mean.fill_(3.0)
    before_t = {k: v.clone() for k, v in target.named_parameters()}
    before_o = {k: v.clone() for k, v in online.named_parameters()}
    buffers_t = {k: v.clone() for k, v in target.named_buffers()}
    momentum_update(online, target, m)
    for name, p in target.named_parameters():
        expected = m * before_t[name] + (1 - m) * before_o[name]
        assert torch.allclose(p, expected, atol=1e-6), name
    for name, p in online.named_parameters():  # the online network is untouched
        assert torch.equal(p, before_o[name])
    for name, b in target.named_buffers():  # BN statistics are not averaged
        assert torch.equal(b, buffers_t[name]), name


def test_momentum_at_schedules():
    base, total = 0.99, 1000
    assert momentum_at(base, 0, total, "cosine") == pytest.approx(base)
    assert momentum_at(base, total, total, "cosine") == pytest.approx(1.0)
    assert momentum_at(base, total + 50, total, "cosine") == pytest.approx(1.0)
    assert momentum_at(base, total // 2, total, "cosine") == pytest.approx((1 + base) / 2)
    step = 250
    expected = 1 - (1 - base) * (math.cos(math.pi * step / total) + 1) / 2
    assert momentum_at(base, step, total, "cosine") == pytest.approx(expected)
    values = [momentum_at(base, s, total, "cosine") for s in range(0, total + 1, 50)]
    assert values == sorted(values)  # non-decreasing ramp
    for s in (0, 10, total):
        assert momentum_at(base, s, total, "fixed") == base
    assert momentum_at(base, 5, 0, "cosine") == base


# ------------------------------------------------------------------ MoCo
@pytest.fixture(scope="module")
def moco():
    cfg = load_config(None, ["model.backbone=resnet10t", "model.head_hidden=32", "model.dim=16"])
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model, 1, 28)
    return MoCo(encoder, NegativeQueue(20, 16), shuffle_bn="split", bn_splits=2)


def test_encoder_outputs_unit_embeddings():
    cfg = load_config(None, ["model.head_hidden=0", "model.dim=8"])
    enc = build_encoder(cfg.model, 1, 28)
    out = enc(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 8)
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    # head_hidden=0 means the backbone's width
    assert enc.head.net[0].out_features == enc.head.net[0].in_features


def test_moco_key_encoder_gets_no_gradient(moco):
    moco.train()
    x1, x2 = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    for p in moco.parameters():
        p.grad = None
    q = moco.encoder_q(x1)
    k = moco.keys(x2)
    assert not k.requires_grad
    loss = info_nce(q, k, moco.queue.keys, 0.2)
    loss.backward()
    k_params = list(moco.encoder_k.parameters())
    assert k_params
    assert all(p.grad is None and not p.requires_grad for p in k_params)
    q_grads = [p.grad for p in moco.encoder_q.parameters()]
    assert all(g is not None for g in q_grads)
    assert sum(float(g.abs().sum()) for g in q_grads) > 0
    assert moco.queue.keys.grad is None


def test_moco_starts_with_equal_encoders_and_momentum_zero_copies():
    cfg = load_config(None, ["model.head_hidden=16", "model.dim=8"])
    enc = build_encoder(cfg.model, 1, 28)
    m = MoCo(enc, NegativeQueue(10, 8), shuffle_bn="none")
    for (nq, pq), (nk, pk) in zip(m.encoder_q.named_parameters(), m.encoder_k.named_parameters()):
        assert nq == nk and torch.equal(pq, pk) and pq.data_ptr() != pk.data_ptr()
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(1.0)
    m.update_key_encoder(0.0)
    for pq, pk in zip(m.encoder_q.parameters(), m.encoder_k.parameters()):
        assert torch.allclose(pq, pk)
    assert m.queue.keys.shape == (10, 8)


def test_moco_split_converts_every_bn(moco):
    plain = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    n_bn = sum(type(mod) is nn.BatchNorm2d for mod in plain.modules())
    assert n_bn > 0
    for enc in (moco.encoder_q, moco.encoder_k):
        assert sum(isinstance(mod, SplitBatchNorm2d) for mod in enc.backbone.modules()) == n_bn
        assert not any(type(mod) is nn.BatchNorm2d for mod in enc.modules())


def test_moco_keys_unshuffle_restores_order(moco):
    """In eval mode BN is per-sample, so shuffled-then-unshuffled keys must equal plain keys."""
    moco.eval()
    try:
        x = torch.randn(8, 1, 28, 28)
        with torch.no_grad():
            direct = moco.encoder_k(x)
        assert torch.allclose(moco.keys(x), direct, atol=1e-5)
    finally:
        moco.train()


# ------------------------------------------------------------------ split BN
def _reference_split_bn(x, weight, bias, rm, rv, g, momentum, eps):
    """Each group {n : n % g == j} through F.batch_norm on its own; running stats averaged."""
    out = torch.empty_like(x)
    rms, rvs = [], []
    for j in range(g):
        rm_j, rv_j = rm.clone(), rv.clone()
        out[j::g] = F.batch_norm(x[j::g], rm_j, rv_j, weight, bias, True, momentum, eps)
        rms.append(rm_j)
        rvs.append(rv_j)
    return out, torch.stack(rms).mean(0), torch.stack(rvs).mean(0)


@pytest.mark.parametrize("n,g", [(8, 4), (12, 3), (6, 2)])
def test_split_bn_train_matches_per_group_batch_norm(n, g):
    torch.manual_seed(n + g)
    c = 3
    bn = SplitBatchNorm2d(c, g, momentum=0.2)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c) + 0.5)
        bn.bias.copy_(torch.randn(c))
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) + 0.5)
    # groups with clearly different statistics
    x = torch.randn(n, c, 5, 4) + torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) % g * 2.0
    ref_out, ref_rm, ref_rv = _reference_split_bn(
        x, bn.weight.detach(), bn.bias.detach(), bn.running_mean.clone(), bn.running_var.clone(), g, 0.2, bn.eps
    )
    bn.train()
    out = bn(x)
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert torch.allclose(bn.running_mean, ref_rm, atol=1e-6)
    assert torch.allclose(bn.running_var, ref_rv, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    # and by hand, for one group: normalised with the group's biased variance
    xs = x[1::g]
    mean, var = xs.mean(dim=(0, 2, 3)), xs.var(dim=(0, 2, 3), unbiased=False)
    by_hand = (xs - mean.view(1, c, 1, 1)) / torch.sqrt(var.view(1, c, 1, 1) + bn.eps)
    by_hand = by_hand * bn.weight.view(1, c, 1, 1) + bn.bias.view(1, c, 1, 1)
    assert torch.allclose(out[1::g], by_hand, atol=1e-4)
    # differs from whole-batch BN (the point of splitting)
    whole = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    assert not torch.allclose(out, whole, atol=1e-3)


def test_split_bn_gradients_match_reference():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 3, 3)
    bn = SplitBatchNorm2d(2, 4)
    x1 = x.clone().requires_grad_(True)
    (bn(x1) ** 2 * torch.arange(8.0).view(8, 1, 1, 1)).sum().backward()
    w = bn.weight.detach().clone().requires_grad_(True)
    b = bn.bias.detach().clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    ref, _, _ = _reference_split_bn(x2, w, b, torch.zeros(2), torch.ones(2), 4, 0.1, bn.eps)
    (ref**2 * torch.arange(8.0).view(8, 1, 1, 1)).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    assert torch.allclose(bn.weight.grad, w.grad, atol=1e-4)
    assert torch.allclose(bn.bias.grad, b.grad, atol=1e-4)


def test_split_bn_eval_equals_plain_bn():
    torch.manual_seed(1)
    plain = nn.BatchNorm2d(4)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.normal_()
        plain.running_mean.normal_()
        plain.running_var.uniform_(0.5, 2.0)
    split = SplitBatchNorm2d(4, 2)
    split.load_state_dict(plain.state_dict())
    plain.eval(), split.eval()
    x = torch.randn(6, 4, 3, 3)
    assert torch.allclose(split(x), plain(x), atol=1e-6)
    # one split in train mode is plain training BN
    one = SplitBatchNorm2d(4, 1)
    one.load_state_dict(plain.state_dict())
    ref = copy.deepcopy(plain).train()
    assert torch.allclose(one.train()(x), ref(x), atol=1e-6)
    assert torch.allclose(one.running_mean, ref.running_mean, atol=1e-6)


def test_convert_split_bn_keeps_state_dict():
    model = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(type(mod) is nn.BatchNorm2d for mod in model.modules())
    ref = copy.deepcopy(model).eval()
    assert convert_split_bn(model, 4) == n_bn
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert sum(isinstance(mod, SplitBatchNorm2d) for mod in model.modules()) == n_bn
    assert all(mod.num_splits == 4 for mod in model.modules() if isinstance(mod, SplitBatchNorm2d))
    # plain timm model accepts the converted state dict strictly, and eval outputs agree
    fresh = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    fresh.load_state_dict(after, strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ref(x), atol=1e-5)


def test_batch_shuffle_single_inverse():
    torch.manual_seed(0)
    x = torch.arange(64 * 3, dtype=torch.float32).view(64, 3)
    shuffled, inverse = batch_shuffle_single(x)
    assert sorted(shuffled[:, 0].tolist()) == x[:, 0].tolist()  # a permutation of the rows
    assert not torch.equal(shuffled, x)
    assert torch.equal(shuffled[inverse], x)


# ------------------------------------------------------------------ backbone helpers
def test_apply_small_stem_keeps_shapes():
    normal = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    small = apply_small_stem(copy.deepcopy(normal))
    sd_n, sd_s = normal.state_dict(), small.state_dict()
    assert list(sd_n) == list(sd_s)
    assert all(sd_n[k].shape == sd_s[k].shape for k in sd_n)
    first = next(m for m in small.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    # weights of the normal model load strictly, and the stem keeps more resolution
    small.load_state_dict(sd_n, strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        fs = small.eval().forward_features(x)
        fn = normal.eval().forward_features(x)
    assert fs.shape[-1] == 4 * fn.shape[-1]
    assert small.eval()(x).shape == normal.eval()(x).shape


def test_build_backbone_small_stem_flag():
    bb = build_backbone("resnet10t", 1, small_stem=True)
    assert isinstance(bb.maxpool, nn.Identity)
    assert bb(torch.randn(2, 1, 28, 28)).dim() == 2


@pytest.mark.parametrize("name,suggestion", [("resnet10", "resnet10t"), ("resnt18", "resnet18")])
def test_build_backbone_unknown_name_suggests(name, suggestion):
    with pytest.raises(ConfigError) as info:
        build_backbone(name, 1)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"'{name}'" in msg and "model.backbone" in msg
    assert f"'{suggestion}'" in msg
    assert timm.is_model(suggestion)


@pytest.mark.parametrize("n,g", [(8, 4), (12, 3)])
def test_split_bn_on_channels_last_normalises_contiguous_blocks(n, g):
    """channels_last activations: groups are blocks of N/G samples (no layout copy), each the
    per-group BN of the reference, running statistics the mean of the groups' updates, and
    the output stays channels_last."""
    torch.manual_seed(n * g)
    c = 3
    bn = SplitBatchNorm2d(c, g, momentum=0.2)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c) + 0.5)
        bn.bias.copy_(torch.randn(c))
    x = torch.randn(n, c, 5, 4) + torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) // (n // g) * 2.0
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    blocks = x.view(g, n // g, c, 5, 4).transpose(0, 1).reshape(n, c, 5, 4)  # block j -> samples j, j+g, ...
    ref_out, ref_rm, ref_rv = _reference_split_bn(blocks, bn.weight.detach(), bn.bias.detach(), rm, rv, g, 0.2, bn.eps)
    xl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = bn.train()(xl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    want = ref_out.view(n // g, g, c, 5, 4).transpose(0, 1).reshape(n, c, 5, 4)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_mean, ref_rm, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(bn.running_var, ref_rv, atol=1e-6, rtol=1e-6)
    out.square().sum().backward()
    assert xl.grad is not None and torch.isfinite(xl.grad).all()
