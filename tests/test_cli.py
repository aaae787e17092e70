"""Bad inputs through the real tools: exit code 2 and one 'error: ...' line on stderr, no traceback.

Each case is an argv for ``sys.executable tools/<tool>.py ...``. A fresh process costs
~5 s of imports (torch, timm, torchvision) on this small machine, so by default five
cases, one per layer, run as real processes and every case runs through the tool's own
``main`` in-process; ``pytest -m slow`` runs every case as a real process too.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vissl_neg.config import Config, load_config, save_config
from vissl_neg.engine.trainer import Trainer

from helpers import FILES, subprocess_env, tiny_overrides, write_fmnist_fixture

REPO = Path(__file__).resolve().parents[1]
N_TRAIN = 128


def _case_table(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Prepare the inputs; -> {case: (argv after the python executable, substrings of the error)}."""
    data = tmp / "data"
    write_fmnist_fixture(data, n_train=N_TRAIN, n_test=32)
    corrupt = tmp / "corrupt"
    shutil.copytree(data, corrupt)
    image_file = corrupt / FILES["train"][0]
    blob = image_file.read_bytes()
    image_file.write_bytes(blob[: len(blob) // 2])

    def train(name, *extra, root=data):
        return ["tools/train.py", *tiny_overrides(root, tmp / "runs" / name), *extra]

    # a real run (1 step) whose checkpoint a changed config must refuse to resume
    run_dir = tmp / "runs" / "trained"
    Trainer(load_config(None, tiny_overrides(data, run_dir) + ["train.max_steps=1"])).fit()
    assert (run_dir / "last.ckpt").is_file()
    changed = tiny_overrides(data, run_dir) + ["train.max_steps=1", "optim.lr=0.5"]

    empty = tmp / "empty"
    empty.mkdir()
    a_file = tmp / "a_file"  # tests run as root, whom permission bits do not stop: a file in the way does
    a_file.write_text("")
    config_only = tmp / "config_only"
    config_only.mkdir()
    save_config(load_config(None, tiny_overrides(data, config_only)), config_only / "config.yaml")

    return {
        "missing_dataset": (
            train("a", "data.root=/nonexistent/fmnist"),
            ["/nonexistent/fmnist", "apt-get install -y dataset-fashion-mnist"],
        ),
        "corrupt_idx": (train("b", root=corrupt), [FILES["train"][0]]),
        "unknown_key": (train("c", "optim.lrr=0.1"), ["optim.lrr", "'optim.lr'"]),
        "wrong_type": (train("d", "optim.lr=abc"), ["optim.lr", "abc"]),
        "unknown_timm_model": (train("e", "model.backbone=resnt18"), ["resnt18", "'resnet18'"]),
        "negatives_zero": (train("f", "negatives.size=0"), ["negatives.size"]),
        "image_folder_key_on_fashion_mnist": (
            train("l", "data.crops=image"),
            ["config key 'data.crops' belongs to data.name=imagenet or imagenet100 or image_folder"],
        ),
        "strategy_count_too_large": (
            train("i", "negatives.strategies=[{name: mochi, n_hard: 128, s: 4}]"),
            ["negatives.strategies[0].n_hard=128 is larger than the 100 negatives"],
        ),
        "batch_larger_than_dataset": (
            train("g", f"optim.batch_size={2 * N_TRAIN}"),
            ["optim.batch_size", str(N_TRAIN)],
        ),
        "resume_dir_without_run": (["tools/train.py", "--resume", str(empty)], ["cannot resume", str(empty)]),
        "resume_dir_without_checkpoint": (
            ["tools/train.py", "--resume", str(config_only)],
            ["cannot resume", "last.ckpt"],
        ),
        "resume_flag_without_checkpoint": (train("h", "--resume"), ["cannot resume", "last.ckpt"]),
        "resume_changed_config": (["tools/train.py", *changed], ["optim.lr", "0.5", "different config"]),
        "resume_dir_changed_config": (
            ["tools/train.py", "--resume", str(run_dir), "optim.lr=0.5"],
            ["optim.lr", "0.5", "different config"],
        ),
        "grad_cache_with_a_queue": (
            train("l", "train.grad_cache_chunk=8"),
            ["train.grad_cache_chunk=8 caches in-batch negatives; negatives.source=queue"],
        ),
        "grad_cache_chunk_not_dividing": (
            train("m", "negatives.source=batch", "train.grad_cache_chunk=10"),
            ["train.grad_cache_chunk=10 must divide the batch of each process (optim.batch_size=64)"],
        ),
        "export_non_run_dir": (["tools/export.py", str(empty)], [str(empty), "no checkpoint"]),
        "config_file_missing": (["tools/train.py", "--config", str(tmp / "nope.yaml")], ["nope.yaml"]),
        "out_dir_in_proc": (
            train("i", "train.out_dir=/proc/vissl_neg_run"),
            ["train.out_dir '/proc/vissl_neg_run' cannot be created or written"],
        ),
        "out_dir_under_a_file": (
            train("j", f"train.out_dir={a_file / 'run'}"),
            [f"train.out_dir '{a_file / 'run'}' cannot be created or written"],
        ),
        "out_dir_is_a_file": (train("k", f"train.out_dir={a_file}"), [f"train.out_dir '{a_file}' is a file"]),
        "export_out_under_a_file": (
            ["tools/export.py", str(run_dir), "--out", str(a_file / "export")],
            [f"export folder '{a_file / 'export'}' cannot be created or written"],
        ),
    }


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, env=subprocess_env(), timeout=180
    )


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(rc: int, stdout: str, stderr: str, needles: list[str]) -> None:
    detail = f"rc={rc}\nstdout={stdout!r}\nstderr={stderr!r}"
    assert rc == 2, detail
    assert "Traceback" not in stderr and "Traceback" not in stdout, detail
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("error: "), detail
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    return tmp, _case_table(tmp)


CASES = [
    "missing_dataset",
    "corrupt_idx",
    "unknown_key",
    "wrong_type",
    "unknown_timm_model",
    "negatives_zero",
    "image_folder_key_on_fashion_mnist",
    "strategy_count_too_large",
    "batch_larger_than_dataset",
    "resume_dir_without_run",
    "resume_dir_without_checkpoint",
    "resume_flag_without_checkpoint",
    "resume_changed_config",
    "resume_dir_changed_config",
    "grad_cache_with_a_queue",
    "grad_cache_chunk_not_dividing",
    "export_non_run_dir",
    "config_file_missing",
    "out_dir_in_proc",
    "out_dir_under_a_file",
    "out_dir_is_a_file",
    "export_out_under_a_file",
]
# Run as real processes by default: one case per layer (data, config, strategy counts, resume, export tool,
# output folder). Every other case runs as a process too with `pytest -m slow`; all of them run in-process below.
SUBPROCESS_DEFAULT = [
    "missing_dataset",
    "unknown_key",
    "strategy_count_too_large",
    "resume_changed_config",
    "export_non_run_dir",
    "out_dir_in_proc",
]
SUBPROCESS_CASES = [c if c in SUBPROCESS_DEFAULT else pytest.param(c, marks=pytest.mark.slow) for c in CASES]


def test_every_case_is_listed(cases):
    assert sorted(cases[1]) == sorted(CASES)


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_real_process(cases, case):
    argv, needles = cases[1][case]
    proc = _run(argv)
    _check(proc.returncode, proc.stdout, proc.stderr, needles)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_through_tool_main(cases, case, capsys):
    """The same argv through the tool's own ``main`` (argparse + cli_entry) in this process."""
    argv, needles = cases[1][case]
    tool = _load_tool(Path(argv[0]).stem)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        tool.main(argv[1:])
    out = capsys.readouterr()
    _check(info.value.code, out.out, out.err, needles)


def test_refused_resume_keeps_the_run(cases):
    """A refused resume must leave the run's checkpoint and config as they were."""
    tmp, table = cases
    with pytest.raises(SystemExit):
        _load_tool("train").main(table["resume_changed_config"][0][1:])
    run_dir = tmp / "runs" / "trained"
    state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["step"] == 1
    assert state["config"]["optim"]["lr"] == pytest.approx(Config().optim.lr)
    assert load_config(run_dir / "config.yaml").optim.lr == pytest.approx(Config().optim.lr)
