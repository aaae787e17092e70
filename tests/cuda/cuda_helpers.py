"""Shared pieces of the CUDA suite: trainers on a fixture, one batch, sync reports."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer

from helpers import tiny_overrides

DEVICE = os.environ.get("VISSL_NEG_CUDA_SUITE_DEVICE", "cuda")
ON_CUDA = DEVICE == "cuda"

# One MoCo step per family: negative source, strategy, loss.
FAMILIES = {
    "queue": [],
    "memory_bank_bf16": ["negatives.source=memory_bank", "negatives.size=120", "negatives.bank_dtype=bfloat16"],
    "mochi": ["negatives.strategies=[{name: mochi, n_hard: 32, s: 16, s_prime: 8}]"],
    "geodesic": ["negatives.strategies=[{name: geodesic, n_hard: 32, s: 16, s_prime: 8, alpha: 0.5}]"],
    "filter": ["negatives.strategies=[{name: filter, keep: 64}]"],
    "dual_view": ["loss.dual_view=true"],
    "feature_transform": ["negatives.strategies=[{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6}]"],
    "debiased": ["loss.name=debiased", "loss.tau_plus=0.1", "loss.beta=1.0"],
    "batch_grad_cache": ["negatives.source=batch", "train.grad_cache_chunk=16"],
    "bank_filter_mochi": [
        "negatives.source=memory_bank",
        "negatives.size=120",
        "negatives.strategies=[{name: filter, fraction: 0.5}, {name: mochi, n_hard: 16, s: 8, s_prime: 4}]",
    ],
}


def make_trainer(data_root, out_dir, extra=(), device=DEVICE, amp="off") -> Trainer:
    overrides = tiny_overrides(data_root, out_dir) + [
        "optim.batch_size=64",
        "negatives.size=256",
        "eval.knn_every=-1",
        f"train.device={device}",
        f"train.amp={amp}",
        "model.channels_last=true",
        "negatives.diag_top=8",
    ]
    return Trainer(load_config(None, overrides + list(extra)), resume=False)


def batch(trainer, index: int = 0):
    """The ``index``-th batch of epoch 0, on the trainer's device."""
    trainer.sampler.set_epoch(0, 0)
    ids = list(iter(trainer.sampler))[index]
    images, labels, indices = trainer.train_set.__getitems__(ids)
    return images.to(trainer.device), labels.to(trainer.device), indices.to(trainer.device)


@contextlib.contextmanager
def syncs_recorded():
    """Records (file:line, message) of every synchronising CUDA call made inside, all of them
    (``set_sync_debug_mode('warn')`` + recorded warnings), instead of failing at the first."""
    found: list[str] = []
    if not ON_CUDA:
        yield found
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for w in caught:
        if "called a synchronizing" in str(w.message):
            found.append(f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}")
