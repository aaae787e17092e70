"""The repository stands alone: no tracked file points outside it, and docs/methods.md names
only files and functions that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METHODS = REPO / "docs" / "methods.md"

# Written apart so that this file does not match itself.
OUTSIDE = ("../" + "shared", "PAPERS" + ".md")

# Modules another change is adding; docs/methods.md already has their sections. Once a path
# exists, the test below fails until it is removed from this list (and then it is checked).
PENDING: set[str] = set()  # modules a section describes before they land

PATH = re.compile(r"`((?:vissl_neg|configs|tools|benchmarks|tests|docs)/[\w./-]+\.(?:py|yaml|md|txt))`")
# "`vissl_neg/x.py`: `f(a, b)`, `Cls`, `Cls.method`" -> the path, then the listed names
CODE_LINE = re.compile(r"`(vissl_neg/[\w/]+\.py)`: ((?:`[^`]+`(?:, )?)+)")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_points_outside_the_repository():
    hits = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        data = path.read_bytes()
        hits += [f"{path.relative_to(REPO)}: {needle}" for needle in OUTSIDE if needle.encode() in data]
    assert not hits, hits


def test_readme_links_the_methods_page():
    assert "(docs/methods.md)" in (REPO / "README.md").read_text()


def test_every_path_named_in_the_methods_page_exists():
    text = METHODS.read_text()
    named = set(PATH.findall(text))
    assert PENDING <= named, "docs/methods.md should keep a section for each pending module"
    missing = sorted(p for p in named - PENDING if not (REPO / p).is_file())
    assert not missing, missing
    landed = sorted(p for p in PENDING if (REPO / p).is_file())
    assert not landed, f"{landed} now exist: remove them from PENDING in {Path(__file__).name}"


def definitions(source: str) -> set[str]:
    return set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, re.M)) | set(re.findall(r"^(\w+)\s*=", source, re.M))


def test_every_function_named_in_the_methods_page_is_defined_in_its_module():
    lines = CODE_LINE.findall(METHODS.read_text())
    assert len(lines) >= 20  # the format the check relies on is in use
    missing = []
    for path, listed in lines:
        if not (REPO / path).is_file():
            missing += [] if path in PENDING else [path]
            continue
        defined = definitions((REPO / path).read_text())
        for name in re.findall(r"`([\w.]+)", listed):
            missing += [f"{path}: {name}" for part in name.split(".") if part not in defined]
    assert not missing, missing


def test_readme_links_the_cluster_page():
    assert "(docs/cluster.md)" in (REPO / "README.md").read_text() and (REPO / "docs" / "cluster.md").is_file()
