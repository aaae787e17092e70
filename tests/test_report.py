"""The run report: TensorBoard events read back exactly, every panel of a trainer's layout
drawn (or marked 'not logged in this run'), written by training itself for MoCo and
cross-view runs, and one error line for a run directory without events."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vissl_neg.config import load_config
from vissl_neg.engine import report
from vissl_neg.engine.geo_trainer import GeoTrainer
from vissl_neg.engine.trainer import Trainer
from vissl_neg.errors import UserError
from vissl_neg.geo.fixture import write_cvusa_fixture

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

REPO = Path(__file__).resolve().parents[1]

MOCO_PANELS = [
    "loss and learning rate",
    "kNN top-1 on the test split",
    "mean cosine of positives and negatives",
    "same class among the 5 hardest negatives",
    "synthetic negatives harder than the hardest real",
    "training throughput",
]
SYNTHETIC = "synthetic negatives harder than the hardest real"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected_size() -> tuple[int, int]:
    return round(report.FIGSIZE[0] * report.DPI), round(report.FIGSIZE[1] * report.DPI)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=128, n_test=64)
    return root


def moco_run(data_root, out_dir, *extra) -> dict:
    overrides = tiny_overrides(data_root, out_dir) + [
        "optim.batch_size=32",
        "train.epochs=1",
        "negatives.diag_top=5",
        "train.hist_every=1",
        "train.log_every=1",
        "train.report=true",
        *extra,
    ]
    return Trainer(load_config(None, overrides), resume=False).fit()


def test_moco_run_with_a_strategy_writes_every_panel(data_root, tmp_path):
    run = tmp_path / "run"
    moco_run(data_root, run, "negatives.strategies=[{name: mochi, n_hard: 16, s: 8, s_prime: 4}]")
    png = run / report.REPORT
    assert png.is_file() and png_size(png) == expected_size()  # fit() drew it
    png.unlink()
    panels = report.write_report(run)
    assert png_size(png) == expected_size()
    titles = list(panels)
    assert titles[:6] == MOCO_PANELS
    # 4 steps, histograms at each: the first, a middle one and the last
    assert titles[6:] == [
        f"score distributions, {phase} (step {s})" for phase, s in (("early", 1), ("middle", 3), ("late", 4))
    ]
    assert all(panels.values()), panels


def test_run_without_strategy_marks_the_synthetic_panel(data_root, tmp_path):
    run = tmp_path / "run"
    moco_run(data_root, run, "eval.knn_every=-1")
    panels = report.write_report(run)
    assert panels[SYNTHETIC] is False and panels["kNN top-1 on the test split"] is False
    assert panels["same class among the 5 hardest negatives"] is True
    assert sum(t.startswith("score distributions") for t in panels) == 3  # the layout does not change
    events = report.load_run_events(run)
    assert "scores/synthetic" not in events.histograms and "scores/negative" in events.histograms


def test_geo_run_draws_recall(tmp_path):
    root = tmp_path / "cvusa"
    write_cvusa_fixture(root, n_train=16, n_val=8, sat_size=32, pano_size=(16, 64))
    run = tmp_path / "run"
    overrides = [
        f"data.root={root}",
        "data.sat_size=32",
        "data.pano_size=[16,64]",
        "optim.batch_size=8",
        "sampling.neighbour_select=4",
        "sampling.neighbour_range=8",
        "sampling.gps_epochs=1",
        "sampling.mine_every=0",
        "train.epochs=2",
        "train.progress=false",
        "train.log_every=1",
        "train.hist_every=1",
        "eval.every=1",
        "eval.batch_size=16",
        f"train.out_dir={run}",
    ]
    GeoTrainer(load_config(REPO / "configs/cvusa_fixture.yaml", overrides), resume=False).fit()
    assert png_size(run / report.REPORT) == expected_size()
    panels = report.write_report(run, tmp_path / "again.png")
    assert panels["recall of panoramas against satellites (test)"] is True
    assert panels["logit scale (1 / temperature)"] is True
    assert not any("same class" in t or "synthetic" in t for t in panels)
    assert all(panels.values()), panels
    recall = report.load_run_events(run).scalars["eval/R@1"]
    assert list(recall[0]) == [2, 4]  # evaluated at both epoch ends (2 steps per epoch)


def write_events(tb: Path, scalars: dict, histograms: dict | None = None) -> None:
    """scalars: tag -> [(step, value)]; histograms: tag -> [(step, values)]; one writer."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tb)) as writer:
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        for tag, points in (histograms or {}).items():
            for step, values in points:
                writer.add_histogram(tag, torch.as_tensor(values), step)


def test_histograms_read_back_bucket_by_bucket(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.2, 3000), rng.uniform(-0.9, 0.95, 1000)]).clip(-1, 1)
    write_events(tmp_path / "tb", {"train/loss": [(1, 1.0)]}, {"scores/negative": [(7, values)]})
    hist = report.read_events(tmp_path / "tb").histograms["scores/negative"][7]
    assert hist.num == len(values) and hist.mean == pytest.approx(values.mean(), rel=1e-9)
    assert hist.counts.sum() == len(values) and len(hist.edges) == len(hist.counts) + 1
    # each bucket holds exactly the values between its edges (numpy's half-open bins, the last one closed)
    inside = (values[:, None] >= hist.edges[None, :-1]) & (values[:, None] < hist.edges[None, 1:])
    inside[:, -1] |= values == hist.edges[-1]
    np.testing.assert_array_equal(hist.counts, inside.sum(axis=0))
    edges = np.linspace(-1.2, 1.2, 49)  # 0 is an edge; every bucket lies inside
    density = report.rebin(hist, edges)
    assert (density * np.diff(edges)).sum() == pytest.approx(1.0)
    # the mass on each half of the range is the share of values there, up to the bucket straddling 0
    straddle = hist.counts[(hist.edges[:-1] < 0) & (hist.edges[1:] > 0)].sum()
    left = (density * np.diff(edges))[:24].sum()
    assert abs(left - (values < 0).mean()) <= straddle / len(values) + 1e-9


def test_a_step_logged_twice_keeps_the_later_value(tmp_path):
    write_events(tmp_path / "tb", {"train/loss": [(1, 5.0), (2, 4.0), (3, 3.0)]})
    write_events(tmp_path / "tb", {"train/loss": [(2, 2.5), (3, 2.0), (4, 1.0)]})  # a resumed run's second file
    steps, values = report.read_events(tmp_path / "tb").scalars["train/loss"]
    assert list(steps) == [1, 2, 3, 4] and list(values) == [5.0, 2.5, 2.0, 1.0]


def test_panels_without_data_say_so(tmp_path):
    write_events(tmp_path / "tb", {"train/loss": [(s, 1.0 / s) for s in range(1, 6)]})
    panels = report.write_report(tmp_path)
    assert png_size(tmp_path / report.REPORT) == expected_size()
    assert panels["loss and learning rate"] is True
    assert sum(panels.values()) == 1 and len(panels) == 9


def test_missing_run_dir_and_run_dir_without_events_are_one_error_line(tmp_path):
    with pytest.raises(UserError, match="no run directory"):
        report.write_report(tmp_path / "absent")
    (tmp_path / "empty" / "tb").mkdir(parents=True)
    for run_dir in (tmp_path / "absent", tmp_path / "empty"):
        proc = subprocess.run(
            [sys.executable, "tools/report.py", str(run_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "holds no TensorBoard events" in proc.stderr


def test_tool_draws_and_names_the_empty_panels(tmp_path):
    write_events(tmp_path / "tb", {"train/loss": [(1, 2.0), (2, 1.0)], "train/lr": [(1, 0.1), (2, 0.05)]})
    proc = subprocess.run(
        [sys.executable, "tools/report.py", str(tmp_path), "--out", str(tmp_path / "r.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'r.png'}") and "not logged in this run: kNN" in proc.stdout
    assert png_size(tmp_path / "r.png") == expected_size()


def test_a_report_that_cannot_be_drawn_does_not_fail_training(data_root, tmp_path, monkeypatch, capsys):
    def broken(run_dir, path=None):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(report, "write_report", broken)
    result = moco_run(data_root, tmp_path / "run", "eval.knn_every=-1", "train.max_steps=2")
    assert result["step"] == 2 and (tmp_path / "run" / "metrics.json").is_file()
    assert "note: no " in capsys.readouterr().out and not (tmp_path / "run" / report.REPORT).exists()


def test_train_report_false_draws_nothing(data_root, tmp_path):
    result = moco_run(data_root, tmp_path / "run", "eval.knn_every=-1", "train.max_steps=1", "train.report=false")
    assert result["step"] == 1 and (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / report.REPORT).exists()
