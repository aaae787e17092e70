"""The ``vissl-neg`` command in-process: every subcommand reaches its tool's code, bad input is
one ``error:`` line with exit code 2, and ``--config`` finds a shipped config by name."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from vissl_neg.cli.main import COMMANDS, main
from vissl_neg.config import find_config, load_config, shipped_configs

REPO = Path(__file__).resolve().parents[1]
TOOLS = {
    "train": "train",
    "knn": "knn",
    "linear-probe": "linear_probe",
    "export": "export",
    "report": "report",
    "eval-geo": "eval_geo",
}


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_each_tool_is_a_subcommand_running_the_same_function():
    assert set(TOOLS) <= set(COMMANDS)
    for command, tool in TOOLS.items():
        module, function, _ = COMMANDS[command]
        text = (REPO / "tools" / f"{tool}.py").read_text()
        assert f"from {module} import {function}" in text, tool
        assert callable(getattr(importlib.import_module(module), function))


def test_unknown_command_and_unknown_config_are_one_line(capsys):
    assert "did you mean 'train'" in _error(capsys, ["trian"])
    assert _error(capsys, ["train", "--config", "fmnist_mochy"]) == (
        "error: config file 'fmnist_mochy' does not exist and no shipped config is named 'fmnist_mochy' "
        "(did you mean 'fmnist_mochi'?)"
    )


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    assert "usage: vissl-neg export" in capsys.readouterr().out


def test_a_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = shipped_configs()
    assert set(shipped) == {p.stem for p in (REPO / "configs").glob("*.yaml")}
    for given in ("fmnist_mochi", "fmnist_mochi.yaml", "configs/fmnist_mochi.yaml"):
        assert find_config(given) == shipped["fmnist_mochi"]
    assert load_config("fmnist_geodesic").negatives.strategies[0]["name"] == "geodesic"  # its base: resolved too
    own = tmp_path / "fmnist_mochi.yaml"  # a file on disk wins over the shipped one
    own.write_text("optim: {lr: 0.123}\n")
    assert load_config("fmnist_mochi.yaml").optim.lr == pytest.approx(0.123)


def test_train_from_python_is_the_command(tmp_path):
    """``vissl_neg.train(config, overrides)``: the same trainer as ``vissl-neg train``."""
    import vissl_neg

    from helpers import tiny_overrides, write_fmnist_fixture

    write_fmnist_fixture(tmp_path / "data", n_train=64, n_test=32)
    result = vissl_neg.train(
        "fmnist_moco",
        tiny_overrides(tmp_path / "data", tmp_path / "run")
        + ["train.max_steps=1", "eval.knn_every=-1", "optim.batch_size=32"],
    )
    assert result["step"] == 1
    assert (tmp_path / "run" / "last.ckpt").is_file()
