"""Checkpoints hold only tensors and plain values, so they load with torch.load(weights_only=True);
a file that would run code when unpickled is refused in one line by the real tools and runs
nothing; a file that is no checkpoint at all (text, empty, cut short) is refused as such;
checkpoints are written with the user's umask."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vissl_neg.config import load_config, save_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.errors import UserError
from vissl_neg.runtime import checkpoint as ckpt

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

ROOT = Path(__file__).resolve().parents[1]
PLAIN = (torch.Tensor, int, float, str, bool, type(None))


class Payload:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plain_leaves(obj, where: str = "state") -> list[str]:
    """Paths in ``obj`` to anything but dicts / lists / tuples of tensors and plain values."""
    if isinstance(obj, dict):
        bad = [f"{where} key {k!r}" for k in obj if not isinstance(k, (str, int))]
        return bad + [p for k, v in obj.items() for p in plain_leaves(v, f"{where}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in plain_leaves(v, f"{where}[{i}]")]
    return [] if isinstance(obj, PLAIN) else [f"{where}: {type(obj).__name__}"]


def run_tool(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=300
    )


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    detail = f"rc={proc.returncode}\nstdout={proc.stdout!r}\nstderr={proc.stderr!r}"
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), detail
    assert "Traceback" not in proc.stderr + proc.stdout, detail
    for needle in needles:
        assert needle in lines[0], detail
    return lines[0]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=128, n_test=32)
    return root


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state ...
    np.random.standard_normal()  # ... and in numpy's

    def draws():
        return (
            random.random(),
            random.gauss(0, 1),
            np.random.rand(3).tolist(),
            np.random.standard_normal(),
            torch.rand(3).tolist(),
        )

    ckpt.save_atomic({"rng": ckpt.rng_state()}, tmp_path / "rng.ckpt")
    expected = draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    state = torch.load(tmp_path / "rng.ckpt", weights_only=True)
    assert plain_leaves(state) == []
    ckpt.set_rng_state(state["rng"])
    assert draws() == expected


@pytest.mark.parametrize(
    "extra", [[], ["negatives.source=memory_bank", "negatives.size=60"]], ids=["queue", "memory_bank"]
)
def test_a_trainer_checkpoint_loads_weights_only_with_the_users_umask(data_root, tmp_path, extra):
    overrides = tiny_overrides(data_root, tmp_path / "run") + [
        "optim.batch_size=32",
        "train.max_steps=2",
        "eval.knn_every=-1",
        *extra,
    ]
    previous = os.umask(0o027)
    try:
        Trainer(load_config(None, overrides)).fit()
    finally:
        os.umask(previous)
    path = tmp_path / "run" / "last.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["step"] == 2 and plain_leaves(state) == []
    assert ("model.bank.bank" if extra else "model.queue.keys") in [f"model.{k}" for k in state["model"]]
    assert state["optimizer"]["state"]  # momentum buffers were saved
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_save_atomic_gives_the_mode_a_plain_open_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        ckpt.save_atomic({"x": torch.zeros(2)}, tmp_path / "a.ckpt")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def crafted_run_dir(data_root, run_dir: Path, marker: Path) -> Path:
    """A run directory whose config is valid and whose last.ckpt would create ``marker`` if unpickled."""
    run_dir.mkdir()
    cfg = load_config(None, tiny_overrides(data_root, run_dir))
    save_config(cfg, run_dir / "config.yaml")
    torch.save({"step": 1, "config": {}, "model": Payload(marker)}, run_dir / "last.ckpt")
    return run_dir / "last.ckpt"


def test_the_payload_would_run_without_weights_only(data_root, tmp_path):
    """The control: the crafted checkpoint does run code when loaded the unsafe way."""
    marker = tmp_path / "ran"
    path = crafted_run_dir(data_root, tmp_path / "run", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_checkpoint_with_code_is_refused_in_process(data_root, tmp_path):
    marker = tmp_path / "ran"
    path = crafted_run_dir(data_root, tmp_path / "run", marker)
    with pytest.raises(UserError, match="contains objects other than tensors and plain values \\(io.open\\)"):
        ckpt.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("tool", ["train", "knn"])
def test_a_checkpoint_with_code_is_refused_by_the_tools(data_root, tmp_path, tool):
    marker = tmp_path / "ran"
    path = crafted_run_dir(data_root, tmp_path / "run", marker)
    argv = ["tools/train.py", "--resume", path.parent] if tool == "train" else ["tools/knn.py", path.parent]
    line = assert_one_error_line(
        run_tool(*argv), str(path), "contains objects other than tensors and plain values", "not loaded"
    )
    assert "weights_only" not in line
    assert not marker.exists()


def _zip_checkpoint(path: Path) -> bytes:
    ckpt.save_atomic({"x": torch.zeros(4)}, path)
    return path.read_bytes()


NOT_CHECKPOINTS = {  # name -> (the file's bytes, given a real checkpoint's; how the reason begins)
    "text": (lambda real: b"step: 3\nthis is not a checkpoint\n", "text, not a zip archive"),
    "empty": (lambda real: b"", "the file is empty"),
    "truncated": (lambda real: real[:100], "a zip archive cut short"),
    "binary": (lambda real: bytes(range(256)) * 4, "not a zip archive"),
}


@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path, kind):
    path = tmp_path / "last.ckpt"
    make, says = NOT_CHECKPOINTS[kind]
    path.write_bytes(make(_zip_checkpoint(path)))
    with pytest.raises(UserError) as info:
        ckpt.load(path)
    assert str(info.value).startswith(f"'{path}' is not a checkpoint ({says}")
    assert "objects other than tensors" not in str(info.value)


def test_a_zip_archive_that_torch_did_not_write_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/weights.txt", "1 2 3")
    with pytest.raises(UserError, match="is not a checkpoint \\(a zip archive without data.pkl\\)"):
        ckpt.load(path)


def test_legacy_checkpoints_load_and_a_cut_one_says_so(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"x": torch.arange(4)}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes().startswith(ckpt.LEGACY_MAGIC)
    assert torch.equal(ckpt.load(path)["x"], torch.arange(4))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="is not a complete checkpoint"):
        ckpt.load(path)


def test_the_tools_refuse_a_text_file_as_not_a_checkpoint(data_root, tmp_path):
    """One line, exit code 2, and not the message for a checkpoint holding other objects."""
    path = crafted_run_dir(data_root, tmp_path / "run", tmp_path / "ran")
    path.write_text("not a checkpoint\n")
    line = assert_one_error_line(
        run_tool("tools/knn.py", path.parent), f"'{path}' is not a checkpoint (text, not a zip archive)"
    )
    assert "objects other than tensors" not in line
