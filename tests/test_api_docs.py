"""docs/api.md is runnable: every ```python block runs as its own script (fresh namespace,
a temporary working folder), and the names its table lists exist where it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import vissl_neg
import vissl_neg.negatives as negatives

REPO = Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", API.read_text(), re.S | re.M)


def test_the_readme_links_the_api_page_and_it_has_one_block_per_family():
    assert "(docs/api.md)" in (REPO / "README.md").read_text()
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_code_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    code = compile(BLOCKS[index], f"docs/api.md block {index + 1}", "exec")
    exec(code, {"__name__": f"api_block_{index}"})


def test_every_public_name_resolves():
    assert {n for n in vissl_neg.__all__ if not hasattr(vissl_neg, n)} == set()
    assert {n for n in negatives.__all__ if not hasattr(negatives, n)} == set()
    assert vissl_neg.mochi is negatives.mochi and vissl_neg.contrastive_loss is negatives.contrastive_loss


def test_the_package_ships_its_type_marker():
    assert (Path(vissl_neg.__file__).parent / "py.typed").is_file()
