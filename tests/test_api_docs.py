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
    assert vissl_neg.mochi is negatives.functional.mochi and vissl_neg.contrastive_loss is negatives.contrastive_loss
    assert {n for n in negatives.functional.__all__ if not hasattr(negatives.functional, n)} == set()


def test_no_public_name_hides_a_submodule():
    """``import vissl_neg.negatives.mochi as m`` must give the module, not a function of that name."""
    import pkgutil

    for info in pkgutil.iter_modules(negatives.__path__):
        assert type(getattr(negatives, info.name, negatives)).__name__ == "module", info.name


def test_every_name_in_the_table_exists():
    """Each `name` or `name(...)` in the page's table is public in vissl_neg or one of its families
    (or a registered loss name); `.method` entries are attributes of the sources."""
    import vissl_neg.geo as geo
    import vissl_neg.losses as losses

    table = [line for line in API.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = {m for line in table for m in re.findall(r"`(?:vissl_neg\.\w+\.)?(\.?\w+)(?:\(|`)", line)}
    assert len(names) > 25
    homes = (vissl_neg, negatives, negatives.functional, losses, geo)
    sources = (negatives.NegativeQueue(4, 2), negatives.MemoryBank(4, 2))
    missing = sorted(
        n
        for n in names
        if not (
            any(hasattr(m, n.lstrip(".")) for m in sources)
            if n.startswith(".")
            else n in losses.LOSSES or any(n in m.__all__ for m in homes)
        )
    )
    assert not missing, missing


def test_the_package_ships_its_type_marker():
    assert (Path(vissl_neg.__file__).parent / "py.typed").is_file()
