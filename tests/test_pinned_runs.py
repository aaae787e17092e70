"""Short MoCo runs (queue; memory bank + filter + MoCHi; debiased + dual view + geodesic) and a
short cross-view run (GPS batches, mining, recall) repeat, bit for bit, the per-step losses,
evaluations and final weights recorded in tests/pinned_runs.json (tests/pinned_runs.py)."""

from __future__ import annotations

import json

import pytest

from pinned_runs import MOCO_RUNS, PINNED, run_geo, run_moco


@pytest.fixture(scope="module")
def pinned():
    return json.loads(PINNED.read_text())


@pytest.mark.parametrize("name", sorted(MOCO_RUNS))
def test_moco_run_repeats_the_pinned_run(pinned, tmp_path, name):
    got = run_moco(name, tmp_path)
    want = pinned[name]
    assert got["losses"] == want["losses"]
    assert got["knn"] == want["knn"]
    assert got["weights"] == want["weights"]


def test_geo_run_repeats_the_pinned_run(pinned, tmp_path):
    got = run_geo(tmp_path)
    want = pinned["geo"]
    assert got["losses"] == want["losses"]
    assert got["recall"] == want["recall"]
    assert got["weights"] == want["weights"]
