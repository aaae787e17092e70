"""negatives.source: batch (SimCLR / MoCo v3): the step's loss against a hand computation of
in-batch InfoNCE (positives on the diagonal, both directions when symmetric), strategies on
it equal to the public functions composed by hand, MoCo v3's predictor on the query side
only, and the ViT recipe's pieces (AdamW, frozen patch projection, scale)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.losses import info_nce
from vissl_neg.negatives.filtering import hardest_negatives
from vissl_neg.negatives.mochi import mix_hard_negatives
from vissl_neg.negatives.source import other_rows

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import tiny_overrides, write_fmnist_fixture

B, D, T = 32, 128, 0.2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=192, n_test=64)
    return root


def make(data_root, out_dir, *extra):
    overrides = tiny_overrides(data_root, out_dir) + [
        "optim.batch_size=32",
        "train.epochs=1",
        "eval.knn_every=-1",
        "negatives.source=batch",
        "negatives.diag_top=5",
        *extra,
    ]
    return Trainer(load_config(None, overrides), resume=False)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def in_batch_info_nce(q, k, temperature):
    """SimCLR / MoCo v3: logits q·kᵀ/T over the whole batch, the positive on the diagonal."""
    logits = q @ k.t() / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0]))


def per_query_others(k):
    """(B, B−1, D): for each query every key but its own, in order."""
    return torch.stack([torch.cat([k[:i], k[i + 1 :]]) for i in range(k.shape[0])])


def test_other_rows_skips_each_querys_own_row():
    rows = other_rows(torch.tensor([0, 2, 4]), 5)
    assert rows.tolist() == [[1, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 3]]


def test_batch_loss_is_in_batch_info_nce(data_root, tmp_path):
    trainer = make(data_root, tmp_path)
    q, k = unit(B, D).requires_grad_(True), unit(B, D, seed=1)
    loss, negs, *_ = trainer.contrast(q, k, torch.arange(B))
    assert negs.index.shape == (B, B - 1) and torch.equal(negs.source, k)
    torch.testing.assert_close(loss, in_batch_info_nce(q, k, T))
    loss.backward()
    assert q.grad is not None and not k.requires_grad
    assert trainer.model.queue is None and trainer.model.bank is None
    state = trainer.model.state_dict()
    assert not any(key.startswith(("queue.", "bank.")) for key in state)  # nothing kept between steps


def test_symmetric_step_averages_both_directions(data_root, tmp_path):
    """With loss.symmetric each view's query meets the other view's key: the step's loss is
    ½[ctr(q1, k2) + ctr(q2, k1)], each ctr the in-batch InfoNCE, times loss.scale."""
    trainer = make(data_root, tmp_path, "loss.symmetric=true", "loss.scale=0.8")
    trainer.sampler.set_epoch(0, 0)
    images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    calls = []
    contrast = trainer.contrast

    def spy(q, k, idx, lab=None):
        calls.append((q.detach().clone(), k.detach().clone()))
        return contrast(q, k, idx, lab)

    trainer.contrast = spy
    out = trainer.train_step(images, labels, indices)
    (q1, k2), (q2, k1) = calls
    want = 0.8 * 0.5 * (in_batch_info_nce(q1, k2, T) + in_batch_info_nce(q2, k1, T))
    torch.testing.assert_close(out["loss"], want)
    assert not torch.allclose(q1, q2)  # the two views differ


def test_filter_on_the_batch_equals_the_public_function(data_root, tmp_path):
    trainer = make(data_root, tmp_path, "negatives.strategies=[{name: filter, keep: 8}]")
    q, k = unit(B, D, seed=2).requires_grad_(True), unit(B, D, seed=3)
    loss, *_ = trainer.contrast(q, k, torch.arange(B))
    kept = hardest_negatives(q, per_query_others(k), 8)
    torch.testing.assert_close(loss, info_nce(q, k, kept, T))


def test_mochi_on_the_batch_equals_the_public_function(data_root, tmp_path):
    trainer = make(data_root, tmp_path, "negatives.strategies=[{name: mochi, n_hard: 8, s: 6, s_prime: 3}]")
    q, k = unit(B, D, seed=4).requires_grad_(True), unit(B, D, seed=5)
    torch.manual_seed(9)
    loss, negs, *_ = trainer.contrast(q, k, torch.arange(B))
    others = per_query_others(k)
    torch.manual_seed(9)
    synthetic = mix_hard_negatives(q, others, 8, 6, 3)
    torch.testing.assert_close(loss, info_nce(q, k, torch.cat([others, synthetic], dim=1), T))


def test_strategy_counts_are_checked_against_the_batch(data_root, tmp_path):
    from vissl_neg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"strategies\[0\].keep=40 is larger than the 31 negatives each query has"):
        load_config(
            None, ["negatives.source=batch", "optim.batch_size=32", "negatives.strategies=[{name: filter, keep: 40}]"]
        )


def test_predictor_is_on_the_query_side_only(data_root, tmp_path):
    trainer = make(
        data_root, tmp_path, "model.predictor_hidden=64", "model.head_bn=true", "optim.name=adamw", "optim.lr=1e-3"
    )
    model = trainer.model
    assert model.predictor is not None
    assert not any("predictor" in name for name, _ in model.encoder_k.named_parameters())
    assert sum(p.numel() for p in model.encoder_q.parameters()) == sum(p.numel() for p in model.encoder_k.parameters())
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in optimised for p in model.predictor.parameters())
    assert not any(id(p) in optimised for p in model.encoder_k.parameters())
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    with torch.no_grad():  # queries go through the predictor, keys do not
        q = trainer.query_encoder(x)
        want = F.normalize(model.predictor(model.encoder_q.project(x)).float(), dim=1)
        torch.testing.assert_close(q, want)
        assert not torch.allclose(q, model.encoder_q(x))
        torch.testing.assert_close(model.keys(x), model.encoder_k(x))
    model.train()
    trainer.sampler.set_epoch(0, 0)
    images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    before = {n: p.clone() for n, p in model.predictor.named_parameters()}
    trainer.train_step(images, labels, indices)
    assert any(not torch.equal(before[n], p) for n, p in model.predictor.named_parameters())
    assert all(p.grad is None for p in model.encoder_k.parameters())


def test_frozen_patch_embedding_stays_at_its_initialisation(data_root, tmp_path):
    trainer = make(
        data_root,
        tmp_path,
        "model.backbone=test_vit3",
        "model.patch_size=7",
        "model.freeze_patch_embed=true",
        "optim.name=adamw",
        "optim.lr=1e-3",
    )
    patch = trainer.model.encoder_q.backbone.patch_embed
    before = [p.clone() for p in patch.parameters()]
    trainer.sampler.set_epoch(0, 0)
    images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    out = trainer.train_step(images, labels, indices)
    assert torch.isfinite(out["loss"])
    assert all(torch.equal(a, b) and not b.requires_grad for a, b in zip(before, patch.parameters()))
    from vissl_neg.errors import ConfigError

    with pytest.raises(ConfigError, match="patch embedding"):
        make(data_root, tmp_path / "r", "model.freeze_patch_embed=true")


def test_shipped_mocov3_configs_train_a_step(data_root, tmp_path):
    cfg = load_config(
        "configs/fmnist_mocov3.yaml",
        [
            f"data.root={data_root}",
            f"train.out_dir={tmp_path}",
            "optim.batch_size=32",
            "eval.knn_every=-1",
            "train.max_steps=2",
            "train.progress=false",
        ],
    )
    assert cfg.negatives.source == "batch" and cfg.loss.symmetric and cfg.model.predictor_hidden
    assert Trainer(cfg).fit()["step"] == 2
