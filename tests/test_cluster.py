"""Past one machine and through faults, on the CPU with gloo: two torchrun "nodes" on localhost
(c10d rendezvous) train exactly as two processes on one node; a SIGKILLed rank under
``--max-restarts 1`` restarts the group from the last checkpoint to the same weights; SIGTERM
(what SLURM sends before preemption) saves and stops, and the requeued job resumes to the same
weights. References are uninterrupted two-process runs of the same global batch and data order.
Faults land at a chosen step through tests/fault_train.py's hooks, never a timed signal. The
torchrun tests are not marked slow: they run in the default suite, each launch bounded by
``TIMEOUT``; ``pytest tests/test_cluster.py`` runs them alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"
FAULTY = Path(__file__).resolve().parent / "fault_train.py"
STEPS = 6  # every run trains to this step; checkpoints every 2
TIMEOUT = 240  # seconds any launch may take before the test fails (with what it printed)
# what must be identical after an interruption and resumption (config and timings may differ)
COMPARED = ("step", "epoch", "batch_in_epoch", "model", "optimizer", "scaler", "rng_per_rank", "metrics")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(data_root, run_dir, *extra) -> list[str]:
    return tiny_overrides(data_root, run_dir) + [
        "optim.batch_size=32",
        "eval.knn_every=-1",
        "train.ckpt_every=2",
        f"train.max_steps={STEPS}",
        *extra,
    ]


def launch(torchrun_args: list[str], script: Path, args: list[str], log: Path, env: dict | None = None):
    """torchrun in its own session, its output in LOG (no pipe to fill up)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, str(script), *args]
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**subprocess_env(), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(procs: list, logs: list[Path], timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    """-> (exit code, output) per process; a launch still running after ``timeout`` is killed and fails the test."""
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
        pytest.fail(f"torchrun did not finish within {timeout:.0f} s (rendezvous or a collective hung):\n{tails}")
    return [(code, log.read_text()) for code, log in zip(codes, logs)]


def one_node(script: Path, args: list[str], log: Path, *torchrun_args: str, env: dict | None = None):
    args_ = ["--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}", *torchrun_args]
    return finish([launch(args_, script, args, log, env)], [log])[0]


def two_nodes(args: list[str], logs: list[Path]) -> list[tuple[int, str]]:
    """Two torchrun agents, one process each, meeting at a c10d rendezvous on this host."""
    port, run_id = free_port(), f"two-nodes-{os.getpid()}-{time.monotonic_ns()}"
    procs = [
        launch(
            [
                "--nnodes=2",
                f"--node_rank={n}",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                f"--rdzv_id={run_id}",
                "--rdzv_conf=join_timeout=90",
                "--local_addr=127.0.0.1",
                "--max-restarts=0",
            ],
            TRAIN,
            args,
            log,
        )
        for n, log in zip((0, 1), logs)
    ]
    return finish(procs, logs)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun's workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def state_of(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same(a, b, where: str = "") -> None:
    """Nested dicts / lists of tensors and plain values, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_training(run_dir: Path, reference: Path) -> None:
    got, want = state_of(run_dir), state_of(reference)
    assert got["step"] == STEPS
    for key in COMPARED:
        assert_same(got[key], want[key], key)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=256, n_test=64)
    return root


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """Two processes on one node, uninterrupted, to STEPS."""
    base = tmp_path_factory.mktemp("reference")
    code, out = one_node(TRAIN, overrides(data_root, base / "run"), base / "torchrun.log")
    assert code == 0, out[-3000:]
    return base / "run"


def test_two_nodes_train_as_one_node_and_resume(data_root, reference, tmp_path):
    """--nnodes 2 (one process each, c10d rendezvous): one process writes the run directory and
    prints the result; both nodes restarted resume; the weights equal the one-node run's."""
    run = tmp_path / "run"
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    first = two_nodes(overrides(data_root, run, "train.max_steps=2"), logs)
    for code, out in first:
        assert code == 0, out[-3000:]
    assert sum(out.count('"step": 2') for _, out in first) == 1  # one process prints the result
    assert sum(f"training {run}" in out for _, out in first) == 1  # and logs
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "last.ckpt", "metrics.json", "tb"]
    assert len(list((run / "tb").iterdir())) == 1 and state_of(run)["step"] == 2

    again = two_nodes(overrides(data_root, run), [tmp_path / "node0b.log", tmp_path / "node1b.log"])
    for code, out in again:
        assert code == 0, out[-3000:]
    assert sum(f"resuming {run} at step 2/" in out for _, out in again) == 1
    assert_same_training(run, reference)


def test_killed_rank_restarts_the_group_from_the_last_checkpoint(data_root, reference, tmp_path):
    """--max-restarts 1: rank 1 SIGKILLed after step 3 (the checkpoint of step 2 is on disk);
    torchrun restarts both, they resume at step 2 and end bit-identical to the uninterrupted run."""
    run = tmp_path / "run"
    code, out = one_node(
        FAULTY,
        overrides(data_root, run),
        tmp_path / "torchrun.log",
        "--max-restarts=1",
        env={"VISSL_NEG_KILL_AT": "1:3"},
    )
    assert code == 0, out[-3000:]
    assert "(exitcode: -9) local_rank: 1" in out, out[-3000:]  # torchrun saw rank 1 killed
    assert out.count(f"training {run}") == 1 and out.count(f"resuming {run} at step 2/") == 1
    assert_same_training(run, reference)


def test_sigterm_saves_and_the_requeued_job_resumes(data_root, reference, tmp_path):
    """SIGTERM to torchrun and its workers (SLURM's preemption notice) while rank 0 is after
    step 3: the ranks agree to stop at the next log step (4), save it and exit; the same
    command again (the requeued job) resumes there and ends as the uninterrupted run."""
    run, paused = tmp_path / "run", tmp_path / "paused"
    log = tmp_path / "torchrun.log"
    proc = launch(
        ["--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}"],
        FAULTY,
        overrides(data_root, run),
        log,
        env={"VISSL_NEG_PAUSE_AT": f"0:3:{paused}"},
    )
    deadline = time.monotonic() + TIMEOUT
    while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert paused.exists(), f"rank 0 never reached step 3:\n{log.read_text()[-3000:]}"
    for pid in [proc.pid, *children_of(proc.pid)]:  # like SLURM: every process of the job step
        os.kill(pid, signal.SIGTERM)
    ((code, out),) = finish([proc], [log])
    assert code != 0, out[-3000:]  # a preempted job has not finished
    assert f"stopped by SIGTERM at step 4; checkpoint saved to {run / 'last.ckpt'}" in out, out[-3000:]
    assert state_of(run)["step"] == 4 and not (run / "metrics.json").exists()

    code, out = one_node(TRAIN, overrides(data_root, run), tmp_path / "requeued.log")
    assert code == 0, out[-3000:]
    assert f"resuming {run} at step 4/" in out and json.loads(out.strip().splitlines()[-1])["step"] == STEPS
    assert_same_training(run, reference)


def test_ranks_that_see_different_run_directories_are_one_error(data_root, tmp_path, monkeypatch):
    """Node-local run directories (rank 0 finds a checkpoint, rank 1 none): every rank stops
    with the same one-line error instead of some ranks starting anew."""
    from vissl_neg.config import load_config
    from vissl_neg.engine import run_dir as rd
    from vissl_neg.engine.trainer import Trainer
    from vissl_neg.errors import UserError

    run = tmp_path / "run"
    Trainer(load_config(None, overrides(data_root, run))).save()
    cfg = load_config(None, overrides(data_root, run))
    monkeypatch.setattr(rd.dist, "all_gather_object", lambda obj: [obj, not obj])
    with pytest.raises(UserError) as info:
        rd.open_run_dir(cfg, None)
    msg = str(info.value)
    assert "\n" not in msg and "rank 0: True; rank 1: False" in msg and "docs/cluster.md" in msg
    monkeypatch.setattr(rd.dist, "all_gather_object", lambda obj: [obj, obj + 2] if type(obj) is int else [obj] * 2)
    with pytest.raises(UserError, match="checkpoint step: rank 0: 0; rank 1: 2"):
        rd.open_run_dir(cfg, None)
    monkeypatch.setattr(rd.dist, "all_gather_object", lambda obj: [obj] * 2)
    assert rd.open_run_dir(cfg, None)["step"] == 0


def _sbatch_script(tmp_path) -> Path:
    """The SLURM script of docs/cluster.md, with stand-ins for srun, scontrol and torchrun on PATH."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    script = tmp_path / "train.sbatch"
    script.write_text("#!/bin/bash\n" + text.split("```bash\n#!/bin/bash\n", 1)[1].split("```", 1)[0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {
        "scontrol": 'if [ "$1 $2" = "show hostnames" ]; then printf "gpu-a\\ngpu-b\\n"; else echo "scontrol $*" >> "$CALLS"; fi',
        "srun": 'while [[ "$1" == --* ]]; do shift; done; exec "$@"',
        "torchrun": 'trap \'echo "torchrun got TERM" >> "$CALLS"; exit 130\' TERM\n'
        'echo "torchrun $*" >> "$CALLS"\nwhile true; do sleep 0.1; done',
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return script


def test_slurm_script_of_the_docs_launches_torchrun_and_requeues_at_the_time_limit(tmp_path):
    script = _sbatch_script(tmp_path)
    text = script.read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --ntasks-per-node=1" in text
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    calls = tmp_path / "calls.txt"
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "SLURM_JOB_NODELIST": "gpu-[a-b]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_JOB_ID": "4242",
    }
    proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (calls.exists() and "torchrun" in calls.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)  # what --signal=B:USR1@300 sends before the time limit
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the script did not end after USR1")
    assert calls.read_text().splitlines() == [
        "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=gpu-a:29500 --rdzv_id=4242 "
        "--max-restarts=2 tools/train.py --config configs/imagenet_mocov2.yaml data.root=/datasets/imagenet "
        "train.out_dir=/shared/runs/imagenet_mocov2",
        "torchrun got TERM",
        "scontrol requeue 4242",
    ]
