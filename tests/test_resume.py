"""Kill-and-resume equality, SIGTERM checkpointing and the NaN stop, through tools/train.py."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

ROOT = Path(__file__).resolve().parents[1]


def train_cmd(overrides):
    return [sys.executable, str(ROOT / "tools" / "train.py"), *overrides]


def run(overrides, **kw):
    return subprocess.run(
        train_cmd(overrides), cwd=ROOT, capture_output=True, text=True, timeout=600, env=subprocess_env(), **kw
    )


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def interrupt_after_first_checkpoint(overrides, run_dir: Path, sig: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        train_cmd(overrides), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    deadline = time.time() + 300
    while not (run_dir / "last.ckpt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    # an arbitrary step after the first checkpoint, well before the last: the 20 steps left take
    # seconds even on a fast CPU, so the signal always lands mid-run
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=512, n_test=128)
    return root


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    result = run(tiny_overrides(data_root, run_dir) + ["train.epochs=3"])
    assert result.returncode == 0, result.stderr
    return final_state(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_run_resumes_to_identical_weights(data_root, reference, tmp_path, sig):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(data_root, run_dir) + ["train.epochs=3"]
    interrupted = interrupt_after_first_checkpoint(overrides, run_dir, sig)
    if sig == signal.SIGKILL:
        assert interrupted.returncode == -signal.SIGKILL
    else:
        assert interrupted.returncode == 130, interrupted.stderr
        assert "stopped by SIGTERM" in interrupted.stdout + interrupted.stderr
    stopped_at = final_state(run_dir)["step"]
    assert 0 < stopped_at < reference["step"] or sig == signal.SIGKILL
    resumed = run(overrides)  # the same command again resumes
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr
    assert_same_weights(final_state(run_dir), reference)
    assert not list(run_dir.glob("*.tmp"))


def test_explicit_resume_from_run_dir(data_root, reference, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(data_root, run_dir) + ["train.epochs=3"]
    first = run(overrides + ["train.max_steps=5"])
    assert first.returncode == 0, first.stderr
    assert final_state(run_dir)["step"] == 5
    resumed = run(["--resume", str(run_dir), "train.max_steps=0"])  # max_steps is saved in config.yaml
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(final_state(run_dir), reference)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path):
    run_dir = tmp_path / "run"
    result = run(tiny_overrides(data_root, run_dir) + ["optim.lr=1e30", "optim.warmup_epochs=0"])
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: loss became NaN/inf at step "), result.stderr
    assert "Traceback" not in result.stderr
    if (run_dir / "last.ckpt").exists():
        state = final_state(run_dir)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_key_added_to_the_schema_since_the_run_counts_as_its_default(tmp_path):
    """A run directory written before a config key existed resumes when the key keeps its
    default, and refuses when the key is set to something else."""
    from vissl_neg.config import config_from_dict, load_config, to_dict
    from vissl_neg.engine.run_dir import config_differences

    cfg = load_config(None, [])
    saved = to_dict(cfg)
    del saved["loss"]["scale"], saved["model"]["predictor_hidden"]
    assert config_differences(saved, cfg) == []
    assert config_differences(saved, load_config(None, ["loss.scale=2.0"])) == ["loss.scale: 1.0 -> 2.0"]
    assert config_from_dict(to_dict(cfg)) == cfg
