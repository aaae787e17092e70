"""Short runs whose per-step losses and final weights are pinned in tests/pinned_runs.json,
so a refactor of the loop, the registries or the negative sources shows any change of
behaviour bit for bit. ``python tests/pinned_runs.py --write`` records them (only when a change
of results is intended, and the commit says why)."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import helpers  # noqa: E402,F401  (one CPU thread)
from helpers import tiny_overrides, write_fmnist_fixture  # noqa: E402

PINNED = HERE / "pinned_runs.json"
MOCO_RUNS = {
    "moco_queue": [],
    "moco_bank_filter_mochi": ["negatives.source=memory_bank", "negatives.size=60",
                               "negatives.strategies=[{name: filter, fraction: 0.5}, {name: mochi, n_hard: 8, s: 6, s_prime: 2}]"],
    "moco_debiased_dual_view": ["loss.name=debiased", "loss.tau_plus=0.1", "loss.beta=1.0", "loss.dual_view=true",
                                "negatives.strategies=[{name: geodesic, n_hard: 16, s: 8, s_prime: 4, alpha: 0.5}]"],
}


def _losses(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return [e.value for e in events.Scalars("train/loss")]


def _weights(state_dict) -> dict[str, str]:
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
            for k, v in sorted(state_dict.items())}


def run_moco(name: str, tmp: Path) -> dict:
    from vissl_neg.config import load_config
    from vissl_neg.engine.trainer import Trainer

    data = tmp / "fmnist"
    if not data.exists():
        write_fmnist_fixture(data, n_train=192, n_test=64)
    overrides = tiny_overrides(data, tmp / name) + ["optim.batch_size=32", "train.epochs=2", "train.log_every=1",
                                                     "eval.knn_every=1", "negatives.diag_top=5"]
    trainer = Trainer(load_config(None, overrides + MOCO_RUNS[name]), resume=False)
    result = trainer.fit()
    return {"losses": _losses(tmp / name), "knn": [m["knn_top1"] for m in result["history"]],
            "weights": _weights(trainer.model.state_dict())}


def run_geo(tmp: Path) -> dict:
    from vissl_neg.config import load_config
    from vissl_neg.engine.geo_trainer import GeoTrainer
    from vissl_neg.geo.fixture import write_cvusa_fixture

    root = tmp / "cvusa"
    write_cvusa_fixture(root, n_train=24, n_val=8, sat_size=32, pano_size=(16, 64))
    overrides = [f"data.root={root}", "data.sat_size=32", "data.pano_size=[16,64]", "model.backbone=resnet10t",
                 "optim.batch_size=8", "optim.lr=0.003", "sampling.neighbour_select=4", "sampling.neighbour_range=8",
                 "sampling.gps_epochs=1", "sampling.mine_every=1", "train.epochs=3", "train.device=cpu",
                 "train.progress=false", "train.log_every=1", "train.ckpt_every=2", "eval.every=1",
                 "eval.batch_size=16", f"train.out_dir={tmp / 'geo'}"]
    trainer = GeoTrainer(load_config(str(HERE.parent / "configs" / "cvusa_fixture.yaml"), overrides), resume=False)
    result = trainer.fit()
    return {"losses": _losses(tmp / "geo"), "recall": [m["R@1"] for m in result["history"]],
            "weights": _weights(trainer.model.state_dict())}


def run_all(tmp: Path) -> dict:
    out = {name: run_moco(name, tmp) for name in MOCO_RUNS}
    out["geo"] = run_geo(tmp)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/pinned_runs.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        PINNED.write_text(json.dumps(run_all(Path(tmp)), indent=1) + "\n")
    print(f"wrote {PINNED}")
