"""The lint configured in pyproject.toml passes (ruff check; ~1 s). mypy and ruff format
--check run in .ci/run, the formatter's tree-wide rewrite being a separate commit."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is in the dev extra: pip install -e '.[dev]'"
)
def test_ruff_check_passes():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
