"""train.grad_cache_chunk in the two tasks whose negatives come from the batch.

MoCo v3 (negatives.source=batch, symmetric loss, BN projector and predictor): the cached step
caches at the backbone output, so its loss, the keys it leaves, the momentum encoder and every
gradient (backbone, BN heads, predictor) are those of the plain step, to float rounding; the
heads' BN running statistics are the plain step's; with drop-path and chunk = batch it is the
plain step bit for bit. Cross-view (Sample4Geo with m²-mix and label smoothing): the same
against its plain step, the logit scale included. Resuming a cached run ends bit-identical to
an uninterrupted one; bad combinations are one-line config errors; the run says whether its
step is the full-batch one.

Tolerance: per parameter ‖g_cached − g_plain‖ ≤ 3e-5 ‖g_plain‖, as in test_grad_cache.py
(caching measured there at ≤ 3.5e-6 on this CPU; the plain step on a permuted batch differs from
itself by as much), plus 1e-6 of the largest parameter gradient: a gradient that is zero in
exact arithmetic comes out as the rounding of its summands (measured: the last bias of the
backbone, which the projector's BatchNorm makes shift-invariant, 2.9e-5 with a 5.5e-6
difference where the largest gradient is 39, i.e. 1.4e-7 of it).
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import DropPath

from vissl_neg.config import load_config
from vissl_neg.engine.geo_trainer import GeoTrainer
from vissl_neg.engine.trainer import Trainer
from vissl_neg.errors import ConfigError
from vissl_neg.geo.fixture import write_cvusa_fixture

from helpers import MOCOV3_TINY, geo_overrides, tiny_overrides, write_fmnist_fixture

TOL, FLOOR = 3e-5, 1e-6
B = 16

MOCOV3 = [*MOCOV3_TINY, f"optim.batch_size={B}", "optim.name=adamw", "optim.lr=1e-3"]


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=64, n_test=16)
    return root


@pytest.fixture(scope="module")
def cvusa(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvusa")
    write_cvusa_fixture(root, n_train=16, n_val=8, sat_size=64, pano_size=(32, 128))
    return root


def moco(root, out_dir, *extra, resume=False) -> Trainer:
    return Trainer(load_config(None, tiny_overrides(root, out_dir) + MOCOV3 + list(extra)), resume=resume)


def geo(root, out_dir, *extra, resume=None) -> GeoTrainer:
    overrides = geo_overrides(
        root,
        out_dir,
        "data.sat_size=64",
        "data.pano_size=[32,128]",
        "model.backbone=test_convnext",
        "loss.label_smoothing=0.1",
        "mixup.enabled=true",
        "mixup.weight=0.5",
        "optim.clip_grad=0",
        "eval.every=-1",
        *extra,
    )
    return GeoTrainer(load_config("configs/cvusa_fixture.yaml", overrides), resume)


def with_drop_path(*modules: torch.nn.Module, p: float = 0.3) -> int:
    """Drop-path in every timm ViT / ConvNeXt block (the configs build them without it) -> how many."""
    count = 0
    for module in modules:
        for block in module.modules():
            for name in ("drop_path", "drop_path1", "drop_path2"):
                if isinstance(getattr(block, name, None), torch.nn.Identity):
                    setattr(block, name, DropPath(p))
                    count += 1
    return count


def forward_count(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def moco_batch(trainer: Trainer):
    trainer.sampler.set_epoch(0, 0)
    return trainer.train_set.__getitems__(next(iter(trainer.sampler)))


def moco_step(trainer: Trainer, batch, seed: int = 3) -> dict:
    """One step from the trainer's state with the global generator at ``seed``; -> its loss, every
    gradient, the keys it leaves the source, the momentum encoder, the BN buffers and the generator after."""
    added = []
    add = trainer.model.source.add
    trainer.model.source.add = lambda keys, labels, indices: (
        added.append([k.clone() for k in keys]),
        add(keys, labels, indices),
    )
    torch.manual_seed(seed)
    out = trainer.train_step(*batch)
    model = trainer.model
    return {
        "loss": out["loss"],
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "keys": added[0],
        "key_params": {n: p.detach().clone() for n, p in model.encoder_k.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "rng": torch.get_rng_state(),
        "key_grads": [p.grad for p in model.encoder_k.parameters()],
    }


def off(want: dict, got: dict) -> list[str]:
    """Parameters whose gradients differ by more than TOL ‖g‖ + FLOOR max‖g‖ (all must be present)."""
    assert want.keys() == got.keys()
    largest = max(w.norm().item() for w in want.values())
    return [
        f"{name}: {(got[name] - w).norm().item():.3g} of {w.norm().item():.3g}"
        for name, w in want.items()
        if (got[name] - w).norm().item() > TOL * w.norm().item() + FLOOR * largest
    ]


def test_mocov3_cached_step_equals_the_plain_step(fmnist, tmp_path):
    plain = moco(fmnist, tmp_path / "plain")
    cached = moco(fmnist, tmp_path / "cached", "train.grad_cache_chunk=4")
    assert any("the step equals the full-batch step" in n for n in cached.notes)
    batch = moco_batch(plain)
    calls = forward_count(cached.model.encoder_q.backbone)
    want, got = moco_step(plain, batch), moco_step(cached, batch)
    assert calls[0] == 2 * 2 * B // 4  # two views, four chunks each, each forwarded twice
    torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-6, atol=0)
    heads = [n for n in want["grads"] if n.startswith(("encoder_q.head", "predictor"))]
    assert heads and any(n.startswith("encoder_q.backbone") for n in want["grads"])
    assert not off(want["grads"], got["grads"])
    assert len(got["keys"]) == 2
    for k_got, k_want in zip(got["keys"], want["keys"]):
        torch.testing.assert_close(k_got, k_want, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(got["key_params"][n], w) for n, w in want["key_params"].items())  # one EMA update
    assert all(g is None for g in got["key_grads"])
    bn = [n for n in want["buffers"] if "running_mean" in n and not n.startswith("encoder_k")]
    assert bn  # the projector's and predictor's BN: whole-batch statistics, updated once
    for name in bn + [n.replace("running_mean", "num_batches_tracked") for n in bn]:
        torch.testing.assert_close(got["buffers"][name], want["buffers"][name], rtol=1e-5, atol=1e-6)


def test_mocov3_with_drop_path_and_chunk_equal_to_the_batch_is_the_plain_step_bit_for_bit(fmnist, tmp_path):
    plain = moco(fmnist, tmp_path / "plain")
    cached = moco(fmnist, tmp_path / "cached", f"train.grad_cache_chunk={B}")
    assert all(with_drop_path(t.model.encoder_q, t.model.encoder_k) > 0 for t in (plain, cached))
    batch = moco_batch(plain)
    want, got = moco_step(plain, batch), moco_step(cached, batch)
    assert torch.equal(got["loss"], want["loss"]) and torch.equal(got["rng"], want["rng"])
    assert want["grads"].keys() == got["grads"].keys()
    assert all(torch.equal(got["grads"][n], g) for n, g in want["grads"].items())
    without = moco_step(moco(fmnist, tmp_path / "without"), batch)  # the same step without drop-path
    assert not torch.equal(without["loss"], want["loss"])  # drop-path is on


def test_mocov3_cached_run_resumes_bit_identical(fmnist, tmp_path):
    full = moco(fmnist, tmp_path / "full", "train.grad_cache_chunk=4", "train.max_steps=4")
    full.fit()
    part = moco(fmnist, tmp_path / "part", "train.grad_cache_chunk=4", "train.max_steps=2")
    part.fit()
    resumed = moco(fmnist, tmp_path / "part", "train.grad_cache_chunk=4", "train.max_steps=4", resume=True)
    assert resumed.step == 2
    resumed.fit()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def geo_step(trainer: GeoTrainer, seed: int = 5) -> dict:
    pano, sat, _, _ = trainer.train_set.__getitems__(list(range(8)))
    torch.manual_seed(seed)
    out = trainer.train_step(pano, sat)
    return {
        "loss": out["loss"],
        "lambda": out["m2mix_lambda"],
        "grads": {n: p.grad.clone() for n, p in trainer.model.named_parameters()},
        "rng": torch.get_rng_state(),
    }


def test_cross_view_cached_step_equals_the_plain_step(cvusa, tmp_path):
    plain, cached = geo(cvusa, tmp_path / "plain"), geo(cvusa, tmp_path / "cached", "train.grad_cache_chunk=2")
    assert any("the step equals the full-batch step" in n for n in cached.notes)
    calls = forward_count(cached.model.backbone)
    want, got = geo_step(plain), geo_step(cached)
    assert calls[0] == 2 * 2 * 8 // 2  # panoramas and satellites, four chunks each, each forwarded twice
    assert torch.equal(got["lambda"], want["lambda"])  # m²-mix's draw, once, after the forwards
    torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-6, atol=0)
    assert "logit_scale" in want["grads"] and not off(want["grads"], got["grads"])


def test_cross_view_with_drop_path_and_chunk_equal_to_the_batch_is_the_plain_step_bit_for_bit(cvusa, tmp_path):
    plain, cached = geo(cvusa, tmp_path / "plain"), geo(cvusa, tmp_path / "cached", "train.grad_cache_chunk=8")
    assert all(with_drop_path(t.model.backbone) > 0 for t in (plain, cached))
    want, got = geo_step(plain), geo_step(cached)
    assert torch.equal(got["loss"], want["loss"]) and torch.equal(got["rng"], want["rng"])
    assert all(torch.equal(got["grads"][n], g) for n, g in want["grads"].items())
    assert not torch.equal(geo_step(geo(cvusa, tmp_path / "without"))["loss"], want["loss"])  # drop-path is on


def test_cross_view_caching_adds_no_host_reads_to_the_step(cvusa, tmp_path):
    """The CPU AdamW reads its step count back (CUDA uses the fused one): the cached step reads
    back exactly what the plain step does."""
    from host_sync import host_reads

    reads = {}
    for chunk in (0, 2):
        t = geo(cvusa, tmp_path / str(chunk), f"train.grad_cache_chunk={chunk}")
        pano, sat, _, _ = t.train_set.__getitems__(list(range(8)))
        t.train_step(pano, sat)  # the first step allocates optimizer state
        with host_reads() as r:
            t.train_step(pano, sat)
        reads[chunk] = dict(r.ops)
    assert reads[2] == reads[0], reads


def test_a_batch_norm_backbone_is_told_its_step_is_not_the_full_batch_step(cvusa, tmp_path):
    t = GeoTrainer(
        load_config("configs/cvusa_fixture.yaml", geo_overrides(cvusa, tmp_path, "train.grad_cache_chunk=4"))
    )
    notes = [n for n in t.notes if "grad_cache_chunk" in n]
    assert len(notes) == 1 and "BatchNorm layers" in notes[0] and "is not the full-batch step" in notes[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["negatives.source=queue"], "train.grad_cache_chunk=4 caches in-batch negatives; negatives.source=queue"),
        (["negatives.source=memory_bank"], "negatives.source=memory_bank"),
        (["train.grad_cache_chunk=5"], r"train.grad_cache_chunk=5 must divide the batch of each process \(optim"),
        (["train.grad_cache_chunk=-1"], "config key 'train.grad_cache_chunk' must be >= 0"),
    ],
)
def test_bad_combinations_are_one_line_errors(extra, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, MOCOV3 + ["train.grad_cache_chunk=4", *extra])
    assert "\n" not in str(err.value)


def test_cross_view_chunk_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"train.grad_cache_chunk=3 must divide .*optim.batch_size=16"):
        load_config("configs/cvusa_fixture.yaml", ["train.grad_cache_chunk=3"])
    assert load_config("configs/cvusa_fixture.yaml", ["train.grad_cache_chunk=4"]).train.grad_cache_chunk == 4


def test_per_process_division_and_split_shuffle_bn_groups(fmnist, tmp_path):
    from vissl_neg.config.schema import check_grad_cache_chunk

    check_grad_cache_chunk(4, 16, 2)  # 8 per process
    with pytest.raises(ConfigError, match=r"grad_cache_chunk=8 must divide .*optim.batch_size=24 over 2 processes"):
        check_grad_cache_chunk(8, 24, 2)  # 24 divides by 8, but 12 per process does not
    with pytest.raises(ConfigError, match="must be divisible by model.bn_splits=8: split shuffle-BN"):
        moco(fmnist, tmp_path, "model.backbone=resnet10t", "model.patch_size=0", "train.grad_cache_chunk=4")
