"""Gradient caching on CUDA: the CUDA generator is replayed (dropout / drop-path draws of the
second forward equal the first's, and would not without it), fp16 autocast + GradScaler put
the loss scale on every parameter exactly once, and the MoCo v3 and cross-view steps with
train.grad_cache_chunk equal their plain fp16 steps.

fp16 tolerances: the cached and the plain step round differently (chunked matmuls, fp16
activations of 11 mantissa bits); 5e-2 of a parameter's gradient norm (plus 1e-3 of the largest
one for gradients that cancel to ~0) is far below a missing or doubled scale (x1024) and
a missing replay (unrelated draws, O(1))."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from cuda_helpers import DEVICE, ON_CUDA, make_trainer

from vissl_neg.config import load_config
from vissl_neg.engine.geo_trainer import GeoTrainer
from vissl_neg.geo.fixture import write_cvusa_fixture
from vissl_neg.losses import symmetric_info_nce
from vissl_neg.runtime import grad_cache
from vissl_neg.runtime.grad_cache import GradCache

from helpers import geo_overrides, write_fmnist_fixture

AMP = torch.float16 if ON_CUDA else torch.bfloat16  # the CPU dry run: bf16 autocast
REL, FLOOR = 5e-2, 1e-3


class Tower(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.logit_scale = nn.Parameter(torch.tensor(2.5))

    def forward(self, x):
        return F.normalize(self.backbone(x).float(), dim=1)


def tower(drop: float = 0.0) -> Tower:
    torch.manual_seed(0)
    backbone = timm.create_model("convnext_atto", num_classes=0, drop_path_rate=drop, drop_rate=drop)
    return Tower(backbone).to(DEVICE).train()


def images(n: int = 16, size: int = 64):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, size, size, generator=g).to(DEVICE) for _ in range(2)]


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def off(want: dict, got: dict, rel: float = REL, floor: float = FLOOR) -> list[str]:
    assert want.keys() == got.keys()
    largest = max(w.norm().item() for w in want.values())
    return [
        f"{n}: {(got[n] - w).norm().item():.3g} of {w.norm().item():.3g}"
        for n, w in want.items()
        if (got[n] - w).norm().item() > rel * w.norm().item() + floor * largest
    ]


def test_the_cuda_generator_is_replayed(monkeypatch):
    """Drop-path and dropout on the GPU: each chunk's second forward equals its first; saving only
    the CPU generator (the reference's functional API) gives other draws."""
    model = tower(drop=0.3)
    a, b = images()

    def replays() -> list[bool]:
        seen: dict[bool, list] = {False: [], True: []}
        hook = model.backbone.register_forward_hook(lambda m, i, o: seen[torch.is_grad_enabled()].append(o.detach()))
        cache = GradCache()
        fa, fb = cache.embed(model, a, chunk_size=4), cache.embed(model, b, chunk_size=4)
        cache.backward(symmetric_info_nce(fa, fb, model.logit_scale, 0.1))
        hook.remove()
        return [torch.equal(x, y) for x, y in zip(seen[False], seen[True])]

    assert all(replays())
    if ON_CUDA:
        monkeypatch.setattr(grad_cache, "cuda_devices", lambda *args: [])
        assert not any(replays())


def test_fp16_grad_scaler_scale_reaches_every_parameter_once():
    model = tower()
    a, b = images()
    model.zero_grad(set_to_none=True)
    symmetric_info_nce(model(a), model(b), model.logit_scale, 0.1).backward()  # fp32, whole batch
    want = grads(model)
    scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0**10)
    model.zero_grad(set_to_none=True)
    cache = GradCache()
    with torch.autocast(DEVICE, dtype=AMP):
        fa, fb = cache.embed(model, a, chunk_size=4), cache.embed(model, b, chunk_size=4)
    cache.backward(scaler.scale(symmetric_info_nce(fa, fb, model.logit_scale, 0.1)))
    scaled = grads(model)
    assert not off(want, {n: g / 2.0**10 for n, g in scaled.items()})  # S once: not 1, not S²
    optimizer = torch.optim.AdamW(model.parameters())
    scaler.unscale_(optimizer)
    assert not off(want, grads(model))
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**10  # no inf / NaN found


def test_mocov3_fp16_cached_step_equals_the_plain_fp16_step(tmp_path):
    root = tmp_path / "fmnist"
    write_fmnist_fixture(root, n_train=128, n_test=16)
    extra = [
        "negatives.source=batch",
        "model.backbone=test_vit3",
        "model.patch_size=7",
        "model.head_bn=true",
        "model.predictor_hidden=64",
        "loss.symmetric=true",
        "optim.name=adamw",
        "optim.lr=1e-3",
        "model.channels_last=false",
    ]
    plain = make_trainer(root, tmp_path / "plain", extra, amp="fp16")
    cached = make_trainer(root, tmp_path / "cached", extra + ["train.grad_cache_chunk=16"], amp="fp16")
    plain.sampler.set_epoch(0, 0)
    ids = next(iter(plain.sampler))
    batch = [t.to(plain.device) for t in plain.train_set.__getitems__(ids)]
    out = {}
    for name, t in (("plain", plain), ("cached", cached)):
        torch.manual_seed(3)
        loss = t.train_step(*batch)["loss"]
        out[name] = (loss, grads(t.model), t.scaler.get_scale())
    assert abs(float(out["cached"][0]) - float(out["plain"][0])) <= 1e-2 * abs(float(out["plain"][0]))
    assert out["cached"][2] == out["plain"][2]
    assert not off(out["plain"][1], out["cached"][1])


def test_cross_view_fp16_cached_step_equals_the_plain_fp16_step(tmp_path):
    root = tmp_path / "cvusa"
    write_cvusa_fixture(root, n_train=16, n_val=8, sat_size=64, pano_size=(32, 128))
    common = [
        "data.sat_size=64",
        "data.pano_size=[32,128]",
        "model.backbone=convnext_atto",
        f"train.device={DEVICE}",
        "train.amp=fp16",
        "mixup.enabled=true",
        "eval.every=-1",
    ]

    def build(name, *extra):
        cfg = load_config("configs/cvusa_fixture.yaml", geo_overrides(root, tmp_path / name, *common, *extra))
        return GeoTrainer(cfg)

    plain, cached = build("plain"), build("cached", "train.grad_cache_chunk=2")
    pano, sat, _, _ = plain.train_set.__getitems__(list(range(8)))
    pano, sat = pano.to(plain.device), sat.to(plain.device)
    out = {}
    for name, t in (("plain", plain), ("cached", cached)):
        torch.manual_seed(5)
        loss = t.train_step(pano, sat)["loss"]
        out[name] = (loss, grads(t.model), t.scaler.get_scale())
    assert abs(float(out["cached"][0]) - float(out["plain"][0])) <= 1e-2 * abs(float(out["plain"][0]))
    assert out["cached"][2] == out["plain"][2]
    assert not off(out["plain"][1], out["cached"][1])


@pytest.mark.skipif(not ON_CUDA, reason="CUDA memory counters")
def test_cached_step_holds_one_chunk_of_activations():
    """Peak CUDA memory of a cached step of 32 pairs in chunks of 4 stays well below the plain step's."""
    model = tower()
    a, b = images(32, 128)

    def peak(step) -> int:
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    def plain():
        symmetric_info_nce(model(a), model(b), model.logit_scale, 0.1).backward()

    def cached():
        cache = GradCache()
        fa, fb = cache.embed(model, a, chunk_size=4), cache.embed(model, b, chunk_size=4)
        cache.backward(symmetric_info_nce(fa, fb, model.logit_scale, 0.1))

    assert peak(cached) < 0.5 * peak(plain)
