"""The package as a user installs it: a wheel built from the repository carries the shipped
configs and the ``vissl-neg`` command, and that command trains from another folder in a fresh
venv where only the wheel provides vissl_neg (its dependencies come from this environment)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import subprocess_env, write_fmnist_fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # a copy of what the build reads: setuptools' build/ folder would otherwise keep deleted modules in the wheel
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    for name in ("configs", "vissl_neg"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (found,) = out.glob("vissl_neg-*.whl")
    return found


def test_the_wheel_holds_the_configs_the_command_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    shipped = {f"vissl_neg/configs/{p.name}" for p in (REPO / "configs").glob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"vissl_neg/py.typed", "vissl_neg/data/imagenet100.txt"} <= names
    assert "vissl-neg = vissl_neg.cli.main:main" in entry_points
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert not any(n.startswith(("tests/", "tools/", "benchmarks/")) for n in names)


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (no deps, nothing downloaded), then given sight of
    this environment's site-packages (after the install, so pip never sees another vissl_neg)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_outer_site_packages.pth").write_text("\n".join(sorted(here)) + "\n")
    return root


def _env() -> dict:
    env = subprocess_env()
    env.pop("PYTHONPATH", None)  # the installed wheel, not this checkout
    return env


def test_vissl_neg_train_runs_from_another_folder_with_a_shipped_config(venv, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    write_fmnist_fixture(work / "data", n_train=64, n_test=32)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import vissl_neg; print(vissl_neg.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(venv), where
    cmd = [
        str(venv / "bin" / "vissl-neg"),
        "train",
        "--config",
        "fmnist_moco",
        "data.root=data",
        "model.backbone=resnet10t",
        "optim.batch_size=32",
        "negatives.size=64",
        "train.max_steps=2",
        "train.progress=false",
        "eval.knn_every=-1",
        "train.out_dir=run",
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"step": 2' in proc.stdout.strip().splitlines()[-1]
    assert (work / "run" / "last.ckpt").is_file()


def test_the_installed_command_lists_the_configs_it_ships(venv, tmp_path):
    listed = subprocess.run(
        [str(venv / "bin" / "vissl-neg"), "configs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    paths = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert set(paths) == {p.stem for p in (REPO / "configs").glob("*.yaml")}
    assert all(Path(p).is_relative_to(venv) for p in paths.values())


def test_the_wheel_ships_no_second_copy_of_a_config(wheel):
    """The configs in the wheel are the repository's files, byte for byte."""
    with zipfile.ZipFile(wheel) as zf:
        for path in (REPO / "configs").glob("*.yaml"):
            assert zf.read(f"vissl_neg/configs/{path.name}") == path.read_bytes(), path.name
