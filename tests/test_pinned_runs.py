"""Short MoCo runs (queue; memory bank + filter + MoCHi; debiased + dual view + geodesic) and a
short cross-view run (GPS batches, mining, recall) repeat the per-step losses, evaluations and
final weights recorded in tests/pinned_runs.json (tests/pinned_runs.py): bit for bit on the
torch version and CPU capability that recorded them, within kernel-noise tolerances elsewhere.
The tolerances are shown to be tight enough: a temperature of 0.201, one MoCHi coefficient
changed, or the two views swapped each break them; and loose enough: the same run with
another CPU capability's kernels stays inside them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import subprocess_env
from pinned_runs import HERE, PINNED, RUNS, compare, deviations, platform, run


@pytest.fixture(scope="module")
def record():
    return json.loads(PINNED.read_text())


@pytest.mark.parametrize("name", RUNS)
def test_run_repeats_the_record(record, tmp_path, name):
    same = record["platform"] == platform()
    problems = compare(run(name, tmp_path), record["runs"][name], same_platform=same)
    where = "this platform (bit for bit)" if same else f"{platform()} against {record['platform']} (tolerances)"
    assert not problems, f"{name} on {where}: " + "; ".join(problems)


MOCHI_S5 = "negatives.strategies=[{name: filter, fraction: 0.5}, {name: mochi, n_hard: 8, s: 5, s_prime: 2}]"


@pytest.mark.parametrize(
    "name, change",
    [
        ("moco_queue", ["loss.temperature=0.201"]),
        ("moco_bank_filter_mochi", [MOCHI_S5]),
        ("geo", ["loss.label_smoothing=0.101"]),
    ],
)
def test_a_real_change_breaks_the_tolerances(record, tmp_path, name, change):
    got = run(name, tmp_path, change)
    assert compare(got, record["runs"][name], same_platform=False), f"{change} passed as kernel noise"


def test_swapped_views_break_the_tolerances(record, tmp_path, monkeypatch):
    from vissl_neg.engine.trainer import Trainer

    views = Trainer._views
    monkeypatch.setattr(Trainer, "_views", lambda self, images: views(self, images)[::-1])
    got = run("moco_queue", tmp_path)
    assert compare(got, record["runs"]["moco_queue"], same_platform=False), "swapped views passed as kernel noise"


def test_another_cpu_capability_stays_inside_the_tolerances(record, tmp_path):
    """The same runs with PyTorch's plain (non-vectorised) kernels and oneDNN / MKL held to
    SSE4: other float kernels, the same behaviour."""
    env = {
        **subprocess_env(),
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    }
    out = tmp_path / "default.json"
    code = (
        "import sys, json, pathlib; sys.path.insert(0, sys.argv[1]); import pinned_runs as p; "
        "tmp = pathlib.Path(sys.argv[2]); "
        "pathlib.Path(sys.argv[3]).write_text(json.dumps({'platform': p.platform(), "
        "'runs': {n: p.run(n, tmp) for n in ('moco_debiased_dual_view', 'geo')}}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(HERE), str(tmp_path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.getcwd(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["platform"]["cpu_capability"] == "DEFAULT"
    for name, result in got["runs"].items():
        want = record["runs"][name]
        assert not compare(result, want, same_platform=False), (name, deviations(result, want))
