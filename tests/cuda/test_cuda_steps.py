"""MoCo steps on CUDA for every family (negative source, strategy, loss): bf16 autocast and fp16
with the GradScaler, channels_last on, equal to the fp32 step within a stated tolerance, and
no host synchronisation inside a step that is not a log or checkpoint step."""

from __future__ import annotations

import pytest
import torch
from cuda_helpers import DEVICE, FAMILIES, ON_CUDA, batch, make_trainer, syncs_recorded

from helpers import write_fmnist_fixture

# |loss_amp - loss_fp32| / loss_fp32 after the same first step from the same weights and views.
# bf16 keeps 8 mantissa bits (~0.4 % per rounding), fp16 11; the loss sums thousands of terms.
TOLERANCE = {"bf16": 0.03, "fp16": 0.01}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=512, n_test=64)
    return root


def _first_loss(trainer, seed=0):
    images, labels, indices = batch(trainer)
    torch.manual_seed(seed)  # same views and strategy draws on both trainers
    return trainer.train_step(images, labels, indices, diagnose=True)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_amp_step_matches_fp32(data_root, tmp_path, family, amp):
    fp32 = make_trainer(data_root, tmp_path / "fp32", FAMILIES[family], amp="off")
    mixed = make_trainer(data_root, tmp_path / amp, FAMILIES[family], amp=amp)
    if ON_CUDA:
        assert mixed.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert next(mixed.model.encoder_q.parameters()).device.type == DEVICE
    mixed.model.load_state_dict(fp32.model.state_dict())
    ref, out = _first_loss(fp32), _first_loss(mixed)
    a, b = float(ref["loss"]), float(out["loss"])
    assert torch.isfinite(out["loss"]) and abs(a - b) <= TOLERANCE[amp] * abs(a), (a, b)
    for i in range(1, 4):  # a few more steps stay finite (the fp16 scaler may skip one at start)
        images, labels, indices = batch(mixed, i)
        assert torch.isfinite(mixed.train_step(images, labels, indices)["loss"])
    assert all(p.grad is None for p in mixed.model.encoder_k.parameters())


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_host_sync_inside_a_step(data_root, tmp_path, family, amp):
    trainer = make_trainer(data_root, tmp_path, FAMILIES[family], amp=amp)
    trainer._start_watch()
    images, labels, indices = batch(trainer)
    for _ in range(2):  # optimizer state, scaler state, cuDNN autotuning happen here
        trainer._watch_loss(trainer.train_step(images, labels, indices)["loss"])
    with syncs_recorded() as syncs:
        for _ in range(2):
            out = trainer.train_step(images, labels, indices)
            trainer._watch_loss(out["loss"])
    assert not syncs, "host syncs inside a training step:\n" + "\n".join(syncs)


def test_sync_recorder_catches_a_host_read():
    if not ON_CUDA:
        pytest.skip("the recorder reads CUDA's sync debug mode")
    x = torch.ones(4, device=DEVICE)
    with syncs_recorded() as syncs:
        float(x.sum())
    assert syncs
