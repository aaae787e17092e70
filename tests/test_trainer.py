"""The trainer in-process: bf16 autocast on CPU, logs and run-directory contents."""

from __future__ import annotations

import json

import torch

from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.runtime.device import resolve_amp

from helpers import nan_loss_at, tiny_overrides, write_fmnist_fixture


def test_bf16_autocast_on_cpu_trains_and_writes_the_run_directory(tmp_path):
    # CPUs without native bf16 (AVX2) emulate bf16 convolutions slowly: a small batch keeps this cheap
    write_fmnist_fixture(tmp_path / "data", n_train=32, n_test=32)
    run_dir = tmp_path / "run"
    cfg = load_config(
        None,
        tiny_overrides(tmp_path / "data", run_dir)
        + ["train.amp=bf16", "train.epochs=1", "train.hist_every=2", "optim.batch_size=16", "model.bn_splits=4"],
    )
    trainer = Trainer(cfg)
    assert trainer.amp_dtype is torch.bfloat16
    keys_before = trainer.model.encoder_k.head.net[0].weight.clone()
    result = trainer.fit()
    assert result["step"] == 2 and result["knn_top1"] is not None
    assert not torch.equal(keys_before, trainer.model.encoder_k.head.net[0].weight)  # EMA moved
    assert int(trainer.model.queue.ptr) == 2 * 16
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 2
    assert (run_dir / "config.yaml").is_file() and (run_dir / "last.ckpt").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_amp_falls_back_cleanly_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("fp16", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16


def test_cuda_only_options_fall_back_on_cpu_with_a_note(tmp_path):
    write_fmnist_fixture(tmp_path / "data", n_train=128, n_test=32)
    cfg = load_config(
        None,
        tiny_overrides(tmp_path / "data", tmp_path / "run")
        + ["train.compile=true", "model.channels_last=true", "train.max_steps=1", "eval.knn_every=-1"],
    )
    trainer = Trainer(cfg)
    assert trainer.query_encoder is trainer.model.encoder_q  # not compiled on the CPU
    assert any("CUDA only" in n for n in trainer.notes) and any("channels_last" in n for n in trainer.notes)
    assert trainer.fit()["step"] == 1


def test_linear_lr_scaling_uses_the_global_batch(tmp_path):
    write_fmnist_fixture(tmp_path / "data", n_train=128, n_test=32)
    base = tiny_overrides(tmp_path / "data", tmp_path / "run") + ["optim.lr=0.03", "optim.batch_size=64"]
    assert Trainer(load_config(None, base + ["optim.lr_scaling=linear"])).base_lr == 0.03 * 64 / 256
    assert Trainer(load_config(None, base), resume=False).base_lr == 0.03


def test_a_nan_on_an_epochs_last_step_is_caught_before_its_evaluation_saves(tmp_path):
    """The epoch-end kNN evaluation writes a checkpoint: it must not write NaN-touched weights."""
    import pytest

    from vissl_neg.errors import TrainingDiverged

    write_fmnist_fixture(tmp_path / "data", n_train=256, n_test=64)
    cfg = load_config(
        None, tiny_overrides(tmp_path / "data", tmp_path / "run") + ["train.ckpt_every=3", "train.log_every=100"]
    )
    trainer = Trainer(cfg)
    nan_loss_at(trainer, 4)  # the last of 4 steps per epoch; not a log or checkpoint step
    with pytest.raises(TrainingDiverged, match="NaN/inf at step 4; kept the last good checkpoint .*step 3"):
        trainer.fit()
    assert torch.load(trainer.ckpt_path, weights_only=True)["step"] == 3


def test_a_nan_after_an_evaluation_names_the_checkpoint_that_evaluation_saved(tmp_path):
    import pytest

    from vissl_neg.errors import TrainingDiverged

    write_fmnist_fixture(tmp_path / "data", n_train=256, n_test=64)
    cfg = load_config(
        None, tiny_overrides(tmp_path / "data", tmp_path / "run") + ["train.ckpt_every=100", "train.log_every=100"]
    )
    trainer = Trainer(cfg)
    nan_loss_at(trainer, 6)  # epoch 1 ends at step 4 with a kNN evaluation, which saves
    with pytest.raises(TrainingDiverged, match="NaN/inf at step 6; kept the last good checkpoint .*step 4"):
        trainer.fit()
    state = torch.load(trainer.ckpt_path, weights_only=True)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_nan_before_any_checkpoint_says_none_was_written_and_a_resumed_run_names_its_own(tmp_path):
    """A new run has no checkpoint before its first save: the message says so (and no file
    appears). A resumed run's last good checkpoint is the one it resumed from."""
    import pytest

    from vissl_neg.errors import TrainingDiverged

    write_fmnist_fixture(tmp_path / "data", n_train=256, n_test=64)
    run = tmp_path / "run"
    base = tiny_overrides(tmp_path / "data", run) + ["train.ckpt_every=3", "train.log_every=100", "eval.knn_every=-1"]
    trainer = Trainer(load_config(None, base))
    nan_loss_at(trainer, 2)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    assert str(info.value) == (
        f"loss became NaN/inf at step 2 before the first checkpoint: no checkpoint was written in '{run}'; "
        "try a lower optim.lr or train.amp=off"
    )
    assert not trainer.ckpt_path.exists()
    Trainer(load_config(None, base + ["train.max_steps=3"]), resume=False).fit()
    resumed = Trainer(load_config(None, base))
    assert resumed.step == 3
    nan_loss_at(resumed, 5)  # before the next save (step 6)
    with pytest.raises(
        TrainingDiverged, match=f"NaN/inf at step 5; kept the last good checkpoint '{run / 'last.ckpt'}' \\(step 3\\)"
    ):
        resumed.fit()
    state = torch.load(resumed.ckpt_path, weights_only=True)
    assert state["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_fused_sgd_starts_from_zero_momentum_buffers():
    """On CUDA the trainers use fused SGD, whose own first step allocates its momentum buffers
    uninitialised and fills them only if the GradScaler does not skip that step (fp16
    overflow): use_fused creates them as zeros, which gives the same first update."""
    from vissl_neg.runtime.device import use_fused

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    use_fused(opt, torch.device("cuda"))  # a device object; nothing runs on it
    assert all(g["fused"] for g in opt.param_groups) and opt._step_supports_amp_scaling
    assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in params)
    use_fused(opt, torch.device("cpu"))
    assert not any(g["fused"] for g in opt.param_groups) and not opt._step_supports_amp_scaling
    ref = [p.detach().clone().requires_grad_(True) for p in params]
    plain = torch.optim.SGD(ref, lr=0.1, momentum=0.9)
    for _ in range(2):  # zero buffers: the same updates as buffers made from the first gradient
        for ps, o in ((params, opt), (ref, plain)):
            o.zero_grad()
            sum((p * p).sum() for p in ps).backward()
            o.step()
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b)
