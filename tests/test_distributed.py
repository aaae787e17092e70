"""Two processes on gloo (CPU) launched by torchrun: identical queues holding both ranks'
keys in order, identical weights, shuffle-BN across ranks, exact mid-epoch resume, and
tools/train.py itself under torchrun (only rank 0 writes)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import subprocess_env, tiny_overrides, write_fmnist_fixture

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(script),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=256, n_test=64)
    return root


def overrides(data_root, out_dir, *extra):
    return tiny_overrides(data_root, out_dir) + [
        "optim.batch_size=32",
        "negatives.size=100",
        "eval.knn_every=-1",
        "train.ckpt_every=2",
        *extra,
    ]


def run_worker(data_root, tmp_path, name, *extra):
    out = tmp_path / name
    out.mkdir()
    torchrun(WORKER, str(out), *overrides(data_root, tmp_path / f"run_{name}", *extra))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def four_steps(data_root, tmp_path_factory):
    return run_worker(data_root, tmp_path_factory.mktemp("ddp"), "whole", "train.max_steps=4")


def test_queues_match_and_hold_both_ranks_keys_in_order(four_steps):
    r0, r1 = four_steps
    assert r0["world"] == 2 and torch.equal(r0["queue"], r1["queue"])
    expected = r0["queue_before"].clone()
    ptr = 0
    for k0, k1 in zip(r0["keys"], r1["keys"]):
        assert k0.shape[0] == 16  # 32 global = 16 per rank
        for row in torch.cat([k0, k1]):
            expected[ptr] = row
            ptr = (ptr + 1) % expected.shape[0]
    torch.testing.assert_close(r0["queue"], expected, rtol=0, atol=0)
    assert r0["ptr"] == ptr == (4 * 32) % 100


def test_weights_stay_identical_across_ranks(four_steps):
    r0, r1 = four_steps
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
    for name, p in r0["key_params"].items():
        assert torch.equal(p, r1["key_params"][name]), name
    seen = [torch.cat([a, b]) for a, b in zip(r0["indices"], r1["indices"])]
    assert all(len(set(s.tolist())) == 32 for s in seen)  # the ranks split each global batch


def test_shuffle_bn_permutes_across_ranks_and_restores(four_steps):
    r0, r1 = four_steps
    for r in (r0, r1):
        assert torch.equal(r["back"], r["x"])
    before = torch.cat([r0["x"], r1["x"]]).flatten().sort().values
    after = torch.cat([r0["shuffled"], r1["shuffled"]]).flatten()
    assert torch.equal(after.sort().values, before)  # a permutation of the global batch
    assert not torch.equal(after, torch.cat([r0["x"], r1["x"]]).flatten())


def test_resume_mid_epoch_on_two_ranks_continues_the_same_order(data_root, tmp_path, four_steps):
    part = run_worker(data_root, tmp_path, "part", "train.max_steps=2", "train.ckpt_every=1")
    assert len(part[0]["indices"]) == 2
    out = tmp_path / "rest"
    out.mkdir()
    torchrun(WORKER, str(out), *overrides(data_root, tmp_path / "run_part", "train.max_steps=4"))
    rest = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r in range(2):
        seen = part[r]["indices"] + rest[r]["indices"]
        assert [s.tolist() for s in seen] == [s.tolist() for s in four_steps[r]["indices"]]
        for name, p in four_steps[r]["params"].items():
            assert torch.equal(p, rest[r]["params"][name]), name


def test_tools_train_under_torchrun_writes_once(data_root, tmp_path):
    run = tmp_path / "run"
    proc = torchrun(
        ROOT / "tools" / "train.py",
        *overrides(data_root, run, "train.max_steps=3", "train.epochs=1", "train.report=true"),
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 3
    assert proc.stdout.count('"step": 3') == 1  # the final JSON line comes from rank 0 only
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "last.ckpt", "metrics.json", "report.png", "tb"]


def test_batch_source_contrasts_with_the_keys_of_every_rank(data_root, tmp_path):
    """negatives.source=batch under DDP: each rank's negatives are the keys of both ranks in rank
    order (its own key excluded per query), and its loss is InfoNCE over the gathered keys."""
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ddp_batch_worker import per_rank

    out = tmp_path / "batch"
    out.mkdir()
    torchrun(
        Path(__file__).resolve().parent / "ddp_batch_worker.py",
        str(out),
        *overrides(data_root, tmp_path / "run", "negatives.source=batch", "train.max_steps=2"),
    )
    keys = torch.cat([per_rank(0)[1], per_rank(1)[1]])
    for r in range(2):
        got = torch.load(out / f"rank{r}.pt", weights_only=True)
        assert torch.equal(got["source"], keys)
        assert torch.equal(got["labels"], torch.cat([torch.arange(8), torch.arange(8) + 10]))
        own = torch.arange(8) + 8 * r
        assert not (got["index"] == own.unsqueeze(1)).any() and got["index"].shape == (8, 15)
        q = per_rank(r)[0]
        want = F.cross_entropy(q @ keys.t() / 0.2, own)
        torch.testing.assert_close(got["loss"], want)
        assert got["step"] == 2
