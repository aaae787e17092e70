"""A training step reads nothing back to the host (the CPU stand-in for CUDA's sync debug
mode, see host_sync.py): every negative source, strategy and loss, and the cross-view step."""

from __future__ import annotations

import pytest
import torch

from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import tiny_overrides, write_fmnist_fixture
from host_sync import host_reads

FAMILIES = {
    "queue": [],
    "memory_bank_bf16": ["negatives.source=memory_bank", "negatives.size=60", "negatives.bank_dtype=bfloat16"],
    "mochi": ["negatives.strategies=[{name: mochi, n_hard: 16, s: 8, s_prime: 4}]"],
    "geodesic": ["negatives.strategies=[{name: geodesic, n_hard: 16, s: 8, s_prime: 4, alpha: 0.5}]"],
    "filter_dual_view": ["negatives.strategies=[{name: filter, keep: 40}]", "loss.dual_view=true"],
    "feature_transform": ["negatives.strategies=[{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6}]"],
    "debiased": ["loss.name=debiased", "loss.tau_plus=0.1", "loss.beta=1.0"],
    "batch_grad_cache": ["negatives.source=batch", "train.grad_cache_chunk=16"],
    "bank_filter_mochi": [
        "negatives.source=memory_bank",
        "negatives.size=60",
        "negatives.strategies=[{name: filter, fraction: 0.5}, {name: mochi, n_hard: 8, s: 6, s_prime: 2}]",
    ],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=128, n_test=32)
    return root


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_moco_step_reads_nothing_back(data_root, tmp_path, family):
    overrides = tiny_overrides(data_root, tmp_path) + ["optim.batch_size=32", "eval.knn_every=-1"]
    trainer = Trainer(load_config(None, overrides + FAMILIES[family]), resume=False)
    trainer.sampler.set_epoch(0, 0)
    images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    trainer._start_watch()
    trainer.train_step(images, labels, indices)  # the first step allocates optimizer state
    with host_reads() as reads:
        trainer.train_step(images, labels, indices)
        trainer._watch_loss(torch.zeros(()))
    assert reads.ops == {}, reads.report()
