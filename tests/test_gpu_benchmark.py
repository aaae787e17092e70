"""benchmarks/gpu_throughput.py: one line and exit 2 without CUDA; its --smoke run (tiny sizes on
whatever device there is) goes through every part and renders the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_throughput.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_in_one_line_without_cuda(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpu_throughput: needs a CUDA GPU (torch.cuda.is_available() is False)"]
    assert not (tmp_path / "out.md").exists()


@pytest.mark.slow
def test_smoke_run_goes_through_every_part(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    assert {"moco", "strategies", "loader"} <= set(results)
    assert set(results["moco"]["img_s"]) == {
        "vissl_neg",
        "vissl_neg, split per_group",
        "vissl_neg, shuffle-BN off",
        "lightly",
    }
    assert len(results["strategies"]) == 9 and results["strategies"]["MoCo v2 (queue)"]["ratio"] == 1.0
    text = out.read_text()
    assert "| strategy (eager, shuffle-BN off) | step (ms) | step / MoCo |" in text
