"""benchmarks/fmnist_strategies.py keeps one result per (method, seed) under a hash of the
run's config: the hash ignores paths and logging, follows everything else, and a stored
result is only reused for the same hash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import helpers  # noqa: F401  (pins torch to one CPU thread)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fmnist_strategies as bench  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402


def _cfg(*overrides):
    return load_config(bench.ROOT / "configs" / "fmnist_moco.yaml", list(overrides))


def test_hash_follows_the_result_not_the_paths():
    base = bench.config_hash(_cfg("train.seed=0"), "moco")
    assert (
        bench.config_hash(
            _cfg(
                "train.seed=0",
                "train.out_dir=/elsewhere",
                "train.progress=false",
                "train.log_every=7",
                "data.num_workers=0",
            ),
            "moco",
        )
        == base
    )
    assert bench.config_hash(_cfg("train.seed=1"), "moco") != base
    assert bench.config_hash(_cfg("train.seed=0", "optim.lr=0.05"), "moco") != base
    assert bench.config_hash(_cfg("train.seed=0", "train.max_steps=2"), "moco") != base
    assert bench.config_hash(_cfg("train.seed=0"), "mochi") != base


def test_a_stored_result_is_reused_for_its_hash_only(tmp_path):
    cfg = _cfg("train.seed=3")
    path = tmp_path / "moco__seed3.json"
    assert bench.load_result(path, "abc", "moco") is None
    bench.save_result(path, "moco", 3, "abc", cfg, {"knn": 80.0, "linear_probe": 85.0})
    assert bench.load_result(path, "abc", "moco") == {"knn": 80.0, "linear_probe": 85.0}
    assert bench.load_result(path, "abd", "moco") is None
    path.write_text("{truncated")
    assert bench.load_result(path, "abc", "moco") is None


def test_every_method_config_loads_and_the_rows_are_the_asked_ones():
    class Args:
        epochs, max_steps, subset, overrides = 1, 0, 0, []

    assert list(bench.METHODS) == [
        "moco",
        "mochi",
        "geodesic",
        "filter_dual",
        "feature_transform",
        "debiased",
        "hard_weighted",
        "ambiguous",
        "fn_eliminate",
        "fn_attract",
        "in_batch",
        "mocov3",
    ]
    for method in bench.METHODS:
        cfg = bench.method_config(method, 0, Args)
        assert cfg.negatives.size == 4096 and cfg.loss.temperature == 0.2
    assert bench.method_config("hard_weighted", 0, Args).loss.beta > 0
    assert bench.method_config("debiased", 0, Args).loss.beta == 0
    attract = bench.method_config("fn_attract", 0, Args).negatives.strategies[0]
    assert attract["name"] == "false_negatives" and attract["mode"] == "attract"
    eliminate = bench.method_config("fn_eliminate", 0, Args).negatives.strategies[0]
    assert eliminate | {"mode": "attract"} == attract | {"threshold": 0.7, "top": 10}  # only the mode differs


def test_a_result_written_under_an_older_schema_is_still_found(tmp_path):
    """A stored config that lacks keys added since (at their defaults), or carries the old flat
    loss section's unused zeros, is the same config: its result is reused, not re-run."""
    args = type("Args", (), {"epochs": 2, "max_steps": 0, "subset": 0, "overrides": []})
    cfg = bench.method_config("moco", 0, args)
    digest = bench.config_hash(cfg, "moco")
    old = bench.to_dict(cfg)
    del old["loss"]["scale"], old["model"]["predictor_hidden"]
    old["loss"].update({"tau_plus": 0.0, "beta": 0.0})
    path = tmp_path / "moco__seed0.json"
    path.write_text(json.dumps({"config_hash": "from-older-code", "config": old, "result": {"knn": 1.0}}))
    assert bench.load_result(path, digest, "moco") == {"knn": 1.0}
    old["optim"]["lr"] = 0.5  # a real difference still re-runs
    path.write_text(json.dumps({"config_hash": "from-older-code", "config": old, "result": {"knn": 1.0}}))
    assert bench.load_result(path, digest, "moco") is None


def test_each_method_off_the_default_architecture_has_a_random_init_baseline_of_its_own():
    class Args:
        epochs, max_steps, subset, overrides = 1, 0, 0, []

    default = _cfg().model.backbone
    covered = {m for _, _, of in bench.BASELINES.values() if of for m in of}
    for method in bench.METHODS:
        backbone = bench.method_config(method, 0, Args).model.backbone
        assert (backbone == default) != (method in covered), method
    for _, config, of in bench.BASELINES.values():
        arch = load_config(bench.ROOT / "configs" / f"{config}.yaml", []).model
        for method in of or ():
            assert bench.method_config(method, 0, Args).model.backbone == arch.backbone
