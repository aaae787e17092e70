"""Whole runs on CUDA through the tools: kill-and-resume with deterministic kernels repeats
the uninterrupted run exactly; train -> knn -> export end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cuda_helpers import DEVICE

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

ROOT = Path(__file__).resolve().parents[2]


def tool(name, *args, timeout=600):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / name), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=1024, n_test=128)
    return root


def cuda_run(data_root, out_dir, *extra):
    return tiny_overrides(data_root, out_dir) + [
        f"train.device={DEVICE}",
        "train.amp=bf16",
        "model.channels_last=true",
        "train.deterministic=true",
        "train.epochs=2",
        "train.ckpt_every=4",
        "eval.knn_every=-1",
        *extra,
    ]


def weights(run_dir):
    return torch.load(Path(run_dir) / "last.ckpt", map_location="cpu", weights_only=True)


def test_killed_cuda_run_resumes_to_identical_weights(data_root, tmp_path):
    """SIGKILL as the 11th of 32 steps starts (tests/fault_train.py's hook; checkpoints every 4
    steps, so step 8's is on disk); the same command resumes there and ends bit-identical."""
    whole = tool("train.py", *cuda_run(data_root, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fault_train.py"), *cuda_run(data_root, run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**subprocess_env(), "VISSL_NEG_KILL_AT": "0:10"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert weights(run)["step"] == 8 and not (run / "metrics.json").exists()  # stopped mid-run
    resumed = tool("train.py", *cuda_run(data_root, run))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} at step 8/32" in resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == 32
    a, b = weights(tmp_path / "whole"), weights(run)
    assert a["step"] == b["step"] == 32
    diffs = {
        k: (a["model"][k].float() - b["model"][k].float()).abs().max().item()
        for k in a["model"]
        if a["model"][k].is_floating_point()
    }
    assert max(diffs.values()) == 0.0, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]


def test_train_knn_export_end_to_end_on_cuda(data_root, tmp_path):
    run = tmp_path / "run"
    out = tool("train.py", *tiny_overrides(data_root, run), f"train.device={DEVICE}", "train.compile=false")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["knn_top1"] is not None and f"on {DEVICE}" in out.stdout + out.stderr
    knn = tool("knn.py", run, "--device", DEVICE)
    assert knn.returncode == 0, knn.stderr
    assert json.loads((run / "knn.json").read_text())["top1"] > 10.0
    exported = tool("export.py", run)
    assert exported.returncode == 0, exported.stderr
    assert any((run / "export").iterdir())
