"""Short runs whose per-step losses, evaluations and final weights are pinned in
tests/pinned_runs.json, so a refactor of the loop, the registries or the negative sources
shows any change of behaviour.

PyTorch picks its float kernels per CPU (AVX-512, AVX2, plain; MKL and oneDNN likewise), so
the same run differs in the last bits from one CPU to another. The record therefore says where
it was made (torch version and ``torch.backends.cpu.get_cpu_capability()``):

- there, a run must repeat it bit for bit (losses, evaluations, a hash of every weight);
- elsewhere, :func:`compare` allows kernel-order noise. These short runs are chaotic: a
  rounding difference of 1e-7 in the first step's loss grows to ~1e-3 by the fifth (measured
  between AVX-512, AVX2 and plain kernels), so the loss of step t must agree within
  ``loss_rtol(t)`` = 1e-5 * 10**t, at most 1e-2; evaluations within ``EVAL_SAMPLES`` test
  samples; the final weights (all float tensors, a fixed random projection of each stored in
  the record) within ``WEIGHT_RTOL`` relative L2 distance. The early steps are where a change
  shows: tests/test_pinned_runs.py shows that a temperature of 0.201 instead of 0.2, one
  strategy coefficient changed, a label smoothing of 0.101 instead of 0.1, or the two views
  swapped all break these tolerances, while the same runs on another CPU capability's kernels
  stay inside them.

``python tests/pinned_runs.py --write`` records them (only when a change of results is
intended, and the commit says why); ``--dump FILE`` writes this machine's results without
touching the record (to measure the noise between CPUs).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import helpers  # noqa: E402,F401  (one CPU thread)
from helpers import geo_overrides, tiny_overrides, write_fmnist_fixture  # noqa: E402

PINNED = HERE / "pinned_runs.json"
MOCO_RUNS = {
    "moco_queue": [],
    "moco_bank_filter_mochi": [
        "negatives.source=memory_bank",
        "negatives.size=60",
        "negatives.strategies=[{name: filter, fraction: 0.5}, {name: mochi, n_hard: 8, s: 6, s_prime: 2}]",
    ],
    "moco_debiased_dual_view": [
        "loss.name=debiased",
        "loss.tau_plus=0.1",
        "loss.beta=1.0",
        "loss.dual_view=true",
        "negatives.strategies=[{name: geodesic, n_hard: 16, s: 8, s_prime: 4, alpha: 0.5}]",
    ],
}
# Measured between AVX-512, AVX2 and plain kernels (torch 2.14.1): loss noise at step t <= 2e-7,
# 6e-6, 6e-6, 6e-4, 2.3e-3 ... (t = 0, 1, 2, 3, 4+); up to 2 kNN test samples; final weights <= 3e-2.
LOSS_RTOL_FIRST, LOSS_RTOL_MAX = 1e-5, 1e-2
EVAL_SAMPLES = 4
WEIGHT_RTOL = 0.15
SKETCH_DIM = 8


def platform() -> dict:
    """Where a run was made: what decides which float kernels it used."""
    import os

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        **{k: os.environ.get(k, "") for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")},
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform as host

        return [f"model name: {host.processor()}"]


def loss_rtol(step: int) -> float:
    return min(LOSS_RTOL_FIRST * 10**step, LOSS_RTOL_MAX)


def _losses(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return [e.value for e in events.Scalars("train/loss")]


def _hash(t) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def sketch(t) -> list[float]:
    """A float tensor -> its projection on ``SKETCH_DIM`` fixed Gaussian directions (seeded by its
    size, so the same for every run), in float64: distances between two tensors of the same
    shape are kept within a few tens of percent, enough to tell noise (1e-6) from change (1e-2)."""
    import torch

    x = t.detach().cpu().double().reshape(-1)
    g = torch.Generator().manual_seed(x.numel())
    directions = torch.randn(SKETCH_DIM, x.numel(), generator=g, dtype=torch.float64)
    return (directions @ x).tolist()


def _weights(state_dict) -> dict:
    return {
        "hash": {k: _hash(v) for k, v in sorted(state_dict.items())},
        "sketch": {k: sketch(v) for k, v in sorted(state_dict.items()) if v.is_floating_point()},
        "exact": {k: v.tolist() for k, v in sorted(state_dict.items()) if not v.is_floating_point()},
    }


def run_moco(name: str, tmp: Path, extra: list[str] = ()) -> dict:
    from vissl_neg.config import load_config
    from vissl_neg.engine.trainer import Trainer

    data = tmp / "fmnist"
    if not data.exists():
        write_fmnist_fixture(data, n_train=192, n_test=64)
    overrides = tiny_overrides(data, tmp / name) + [
        "optim.batch_size=32",
        "train.epochs=2",
        "train.log_every=1",
        "eval.knn_every=1",
        "negatives.diag_top=5",
    ]
    trainer = Trainer(load_config(None, overrides + MOCO_RUNS[name] + list(extra)), resume=False)
    result = trainer.fit()
    return {
        "losses": _losses(tmp / name),
        "evals": [m["knn_top1"] for m in result["history"]],
        "eval_step": 100 / 64,
        "weights": _weights(trainer.model.state_dict()),
    }


def run_geo(tmp: Path, extra: list[str] = ()) -> dict:
    from vissl_neg.config import load_config
    from vissl_neg.engine.geo_trainer import GeoTrainer
    from vissl_neg.geo.fixture import write_cvusa_fixture

    root = tmp / "cvusa"
    if not root.exists():
        write_cvusa_fixture(root, n_train=24, n_val=8, sat_size=32, pano_size=(16, 64))
    overrides = geo_overrides(root, tmp / "geo", "train.log_every=1")
    cfg = load_config(str(HERE.parent / "configs" / "cvusa_fixture.yaml"), overrides + list(extra))
    trainer = GeoTrainer(cfg, resume=False)
    result = trainer.fit()
    return {
        "losses": _losses(tmp / "geo"),
        "evals": [m["R@1"] for m in result["history"]],
        "eval_step": 100 / 8,
        "weights": _weights(trainer.model.state_dict()),
    }


def run(name: str, tmp: Path, extra: list[str] = ()) -> dict:
    return run_geo(tmp, extra) if name == "geo" else run_moco(name, tmp, extra)


RUNS = sorted(MOCO_RUNS) + ["geo"]


def run_all(tmp: Path) -> dict:
    return {"platform": platform(), "runs": {name: run(name, tmp) for name in RUNS}}


def deviations(got: dict, want: dict) -> dict:
    """Between two results of one run: the largest per-step loss difference as a multiple of
    that step's tolerance (and its step), the largest evaluation difference in test samples, the
    relative L2 distance of all final float weights, and what differs in kind (else None)."""
    kind = None
    if len(got["losses"]) != len(want["losses"]) or len(got["evals"]) != len(want["evals"]):
        kind = "number of steps or evaluations"
    elif (
        got["weights"]["hash"].keys() != want["weights"]["hash"].keys()
        or got["weights"]["exact"] != want["weights"]["exact"]
    ):
        kind = "weight names or integer buffers"
    ratios = [
        abs(g - w) / max(abs(w), 1e-12) / loss_rtol(t) for t, (g, w) in enumerate(zip(got["losses"], want["losses"]))
    ]
    worst = max(range(len(ratios)), key=ratios.__getitem__, default=0)
    ev = max((abs(g - w) / want["eval_step"] for g, w in zip(got["evals"], want["evals"])), default=0.0)
    gs, ws = got["weights"]["sketch"], want["weights"]["sketch"]
    num = sum((x - y) ** 2 for k in ws if k in gs for x, y in zip(gs[k], ws[k]))
    den = sum(y * y for k in ws for y in ws[k])
    return {
        "loss": ratios[worst] if ratios else 0.0,
        "loss_step": worst,
        "eval": ev,
        "weight": math.sqrt(num / max(den, 1e-300)),
        "kind": kind,
    }


def compare(got: dict, want: dict, same_platform: bool) -> list[str]:
    """What breaks between this machine's result and the record (empty: it holds). On the
    platform the record was made on everything must be bit-identical; elsewhere within the
    tolerances above."""
    if same_platform:
        problems = []
        if got["losses"] != want["losses"]:
            problems.append("per-step losses differ from the record (same CPU kernels: must be bit-identical)")
        if got["evals"] != want["evals"]:
            problems.append(f"evaluations {got['evals']} != recorded {want['evals']}")
        changed = [k for k in want["weights"]["hash"] if got["weights"]["hash"].get(k) != want["weights"]["hash"][k]]
        if changed or got["weights"]["hash"].keys() != want["weights"]["hash"].keys():
            problems.append(f"{len(changed)} weight tensors differ from the record, e.g. {changed[:3]}")
        return problems
    d = deviations(got, want)
    problems = [f"{d['kind']} differ"] if d["kind"] else []
    if d["loss"] > 1:
        t = d["loss_step"]
        problems.append(
            f"the loss of step {t} differs by {d['loss'] * loss_rtol(t):.1e} (relative) > {loss_rtol(t):.0e}"
        )
    if d["eval"] > EVAL_SAMPLES:
        problems.append(f"an evaluation differs by {d['eval']:.1f} test samples > {EVAL_SAMPLES}")
    if d["weight"] > WEIGHT_RTOL:
        problems.append(f"the final weights differ by {d['weight']:.2e} (relative L2) > {WEIGHT_RTOL}")
    return problems


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--write"]:
        out = PINNED
    elif len(args) == 2 and args[0] == "--dump":
        out = Path(args[1])
    else:
        raise SystemExit("usage: python tests/pinned_runs.py --write | --dump FILE")
    with tempfile.TemporaryDirectory() as tmp:
        out.write_text(json.dumps(run_all(Path(tmp)), indent=1) + "\n")
    print(f"wrote {out}")
