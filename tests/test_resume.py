"""Kill-and-resume equality, SIGTERM checkpointing and the NaN stop, through tools/train.py. The
faults land at a chosen step through tests/fault_train.py's hooks (never a timed signal): 24
steps, checkpoints every 3 and at the epoch ends (8, 16, 24)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

ROOT = Path(__file__).resolve().parents[1]


FAULTY = ROOT / "tests" / "fault_train.py"
STEPS = 24  # 512 images, batch 64, 3 epochs
FAULT_AT = 13  # the fault hooks act as the 14th batch starts, one after the checkpoint of step 12


def train_cmd(overrides, script=ROOT / "tools" / "train.py"):
    return [sys.executable, str(script), *overrides]


def run(overrides, fault: dict | None = None, **kw):
    """tools/train.py, or with ``fault`` (VISSL_NEG_*_AT variables) tests/fault_train.py."""
    return subprocess.run(
        train_cmd(overrides, FAULTY if fault else ROOT / "tools" / "train.py"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**subprocess_env(), **(fault or {})},
        **kw,
    )


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def interrupt_at(overrides, run_dir: Path, sig: int, step: int) -> subprocess.CompletedProcess:
    """SIGKILL: the run kills itself as it starts the batch after ``step`` steps. SIGTERM: the
    run parks there (writing a file) until the signal, which this sends once the file is there."""
    if sig == signal.SIGKILL:
        return run(overrides, {"VISSL_NEG_KILL_AT": f"0:{step}"})
    parked = run_dir.parent / "parked"
    proc = subprocess.Popen(
        train_cmd(overrides, FAULTY),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**subprocess_env(), "VISSL_NEG_PAUSE_AT": f"0:{step}:{parked}"},
    )
    deadline = time.time() + 300
    while not parked.exists():  # waits for the run to reach the step; the signal's place is the hook's
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    assert parked.read_text() == str(step)
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
    assert reference["step"] == STEPS
    interrupted = interrupt_at(overrides, run_dir, sig, FAULT_AT)
    out = interrupted.stdout + interrupted.stderr
    if sig == signal.SIGKILL:  # killed mid-run: the checkpoint of step 12 is what is left
        assert interrupted.returncode == -signal.SIGKILL, out
        stopped_at = 12
    else:  # the step in progress ends, is saved, and the run stops
        assert interrupted.returncode == 130, out
        stopped_at = FAULT_AT + 1
        assert f"stopped by SIGTERM at step {stopped_at}; checkpoint saved to {run_dir / 'last.ckpt'}" in out
    assert final_state(run_dir)["step"] == stopped_at and not (run_dir / "metrics.json").exists()
    resumed = run(overrides)  # the same command again resumes
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} at step {stopped_at}/{STEPS}" in resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == STEPS
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


def test_nan_loss_before_the_first_checkpoint_says_none_was_written(data_root, tmp_path):
    run_dir = tmp_path / "run"
    result = run(tiny_overrides(data_root, run_dir) + ["optim.lr=1e30", "optim.warmup_epochs=0"])
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"error: loss became NaN/inf at step 2 before the first checkpoint: no checkpoint was written in "
        f"'{run_dir}'; try a lower optim.lr or train.amp=off"
    ), result.stderr
    assert "Traceback" not in result.stderr and not (run_dir / "last.ckpt").exists()


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
