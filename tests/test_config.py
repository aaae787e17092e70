"""Config: defaults, YAML + dotted overrides, and one-line ConfigErrors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from vissl_neg.config import Config, load_config
from vissl_neg.errors import ConfigError, UserError

import helpers  # noqa: F401  (pins torch to one CPU thread)

REPO = Path(__file__).resolve().parents[1]
YAML_PATH = REPO / "configs" / "fmnist_moco.yaml"


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flat(value, full))
        else:
            out[full] = value
    return out


def _get(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _config_error(overrides, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg, f"not a single clean line: {msg!r}"
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    return msg


def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg == Config()
    # spot-check a few documented defaults of the embedded recipe
    assert cfg.data.name == "fashion_mnist"
    assert cfg.negatives.source == "queue"
    assert cfg.loss.name == "info_nce"
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr > 0
    assert cfg.model.momentum_schedule in ("fixed", "cosine")


def test_yaml_and_dotted_overrides():
    raw = yaml.safe_load(YAML_PATH.read_text())
    cfg = load_config(YAML_PATH, ["optim.lr=0.1", "train.epochs=3", "data.root=/some/where"])
    assert cfg.optim.lr == pytest.approx(0.1)
    assert isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.data.root == "/some/where"
    overridden = {"optim.lr", "train.epochs", "data.root"}
    flat = _flat(raw)
    assert len(flat) > 20
    for key, value in flat.items():
        if key in overridden:
            continue
        got = _get(cfg, key)
        if isinstance(value, float) or isinstance(got, float):
            assert got == pytest.approx(value), key
        else:
            assert got == value, key
    # keys absent from the YAML keep the schema defaults
    assert cfg.train.max_steps == Config().train.max_steps


def test_override_beats_yaml_and_int_is_accepted_for_float():
    cfg = load_config(YAML_PATH, ["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    cfg = load_config(YAML_PATH, ["optim.lr=0.2", "optim.lr=0.3"])  # the last one wins
    assert cfg.optim.lr == pytest.approx(0.3)


def test_list_override():
    cfg = load_config(None, ["augment.crop_scale=[0.5, 1.0]"])
    assert cfg.augment.crop_scale == [0.5, 1.0]


def test_unknown_key_suggests_closest():
    msg = _config_error(["optim.lrr=0.1"])
    assert "optim.lrr" in msg
    assert "'optim.lr'" in msg


def test_unknown_section_suggests_closest():
    msg = _config_error(["optimm.lr=0.1"])
    assert "optimm" in msg and "'optim'" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  batch_sise: 32\n")
    msg = _config_error([], path)
    assert "optim.batch_sise" in msg and "'optim.batch_size'" in msg


def test_wrong_type():
    msg = _config_error(["optim.lr=abc"])
    assert "optim.lr" in msg and "abc" in msg


def test_wrong_type_int_and_bool():
    assert "optim.batch_size" in _config_error(["optim.batch_size=1.5"])
    assert "train.progress" in _config_error(["train.progress=maybe"])
    # a bool is not an int
    assert "train.epochs" in _config_error(["train.epochs=true"])


@pytest.mark.parametrize(
    "override,key",
    [
        ("negatives.size=0", "negatives.size"),
        ("negatives.size=-5", "negatives.size"),
        ("optim.batch_size=0", "optim.batch_size"),
        ("loss.temperature=0", "loss.temperature"),
    ],
)
def test_non_positive(override, key):
    msg = _config_error([override])
    assert key in msg


def test_bad_choice():
    msg = _config_error(["train.amp=fp8"])
    assert "train.amp" in msg and "fp8" in msg
    for choice in ("auto", "bf16", "fp16", "off"):
        assert choice in msg


def test_malformed_override_and_missing_file(tmp_path):
    assert "optim.lr" in _config_error(["optim.lr"])
    msg = _config_error([], tmp_path / "missing.yaml")
    assert "missing.yaml" in msg


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: [0.1\n")
    assert "bad.yaml" in _config_error([], path)


def test_config_is_a_plain_dataclass_tree():
    cfg = load_config(None, ["optim.lr=0.1"])
    d = dataclasses.asdict(cfg)
    assert d["optim"]["lr"] == pytest.approx(0.1)
    assert set(d) == {"data", "augment", "model", "negatives", "loss", "optim", "train", "eval"}


def test_exponent_floats_without_a_dot_are_floats():
    from vissl_neg.config import load_config

    assert load_config(None, ["optim.lr=1e-3", "optim.weight_decay=5e-4"]).optim.lr == 1e-3


@pytest.mark.parametrize(
    "override,needles",
    [
        ("negatives.strategies=[{name: mochy}]", ["negatives.strategies[0].name", "'mochi'"]),
        ("negatives.strategies=[{n_hard: 4}]", ["negatives.strategies[0]", "needs a name"]),
        (
            "negatives.strategies=[{name: mochi, n_hrd: 4}]",
            ["negatives.strategies[0].n_hrd", "'negatives.strategies[0].n_hard'"],
        ),
        ("negatives.strategies=[{name: filter, keep: 10, fraction: 0.5}]", ["negatives.strategies[0]", "exactly one"]),
        ("negatives.strategies=[{name: filter}, {name: mochi, s: -1}]", ["negatives.strategies[0]"]),
        ("negatives.strategies=[{name: mochi, s: -1}]", ["negatives.strategies[0]", "s >= 0"]),
        ("negatives.strategies=[{name: geodesic, alpha: 0}]", ["alpha > 0"]),
        ("negatives.strategies=[{name: mochi, start_epoch: -1}]", ["start_epoch"]),
        ("negatives.strategies=[{name: feature_transform, pos_alpha: two}]", ["pos_alpha", "float"]),
        ("negatives.strategies=[mochi]", ["negatives.strategies[0]", "mapping"]),
        ("negatives.source=bank", ["negatives.source", "memory_bank"]),
        ("negatives.bank_dtype=half", ["negatives.bank_dtype", "float16"]),
        ("loss.tau_plus=0.1", ["loss.name=debiased"]),
        ("negatives.strategies=[{name: mochi}, {name: feature_transform}]", ["negatives.strategies[1]", "before"]),
        ("loss.name=debiassed", ["'debiased'"]),
        ("negatives.strategies=[{name: ambiguous, keep: 0}]", ["negatives.strategies[0]' (ambiguous)", "keep > 0"]),
        ("negatives.strategies=[{name: ambiguous, a: -1}]", ["negatives.strategies[0]' (ambiguous)", "a > 0"]),
        (
            "negatives.strategies=[{name: false_negatives, top: 0}]",
            ["negatives.strategies[0]' (false_negatives)", "top > 0"],
        ),
        (
            "negatives.strategies=[{name: false_negatives, mode: ignore}]",
            ["negatives.strategies[0]", "eliminate, attract", "'ignore'"],
        ),
        (
            "negatives.strategies=[{name: false_negatives}, {name: false_negatives, mode: attract}]",
            ["negatives.strategies[1]", "only one"],
        ),
        (
            "negatives.strategies=[{name: mochi, n_hard: 8192}]",
            ["negatives.strategies[0].n_hard=8192 is larger than the 4096 negatives each query has"],
        ),
        ("negatives.strategies=[{name: filter, keep: 5000}]", ["negatives.strategies[0].keep=5000", "4096"]),
        (
            "negatives.strategies=[{name: filter, fraction: 0.25}, {name: ambiguous, keep: 1025}]",
            [
                "negatives.strategies[1].keep=1025 is larger than the 1024 negatives each query has after "
                "negatives.strategies[0] (filter)"
            ],
        ),
        (
            "negatives.strategies=[{name: ambiguous, keep: 512}, {name: false_negatives, top: 513}]",
            ["negatives.strategies[1].top=513", "512", "negatives.strategies[0] (ambiguous)"],
        ),
    ],
)
def test_strategy_and_loss_errors_name_the_entry(override, needles):
    msg = _config_error([override])
    for needle in needles:
        assert needle in msg, msg


def test_debiased_loss_with_false_negative_cancellation_is_refused():
    msg = _config_error(
        ["loss.name=debiased", "loss.tau_plus=0.1", "negatives.strategies=[{name: false_negatives, top: 4}]"]
    )
    assert "loss.name=debiased" in msg and "false_negatives" in msg and "not supported" in msg


def test_counts_follow_the_memory_bank_size():
    load_config(
        None,
        [
            "negatives.source=memory_bank",
            "negatives.size=300",
            "negatives.strategies=[{name: mochi, n_hard: 300, s: 4}]",
        ],
    )
    msg = _config_error(
        [
            "negatives.source=memory_bank",
            "negatives.size=300",
            "negatives.strategies=[{name: mochi, n_hard: 301, s: 4}]",
        ]
    )
    assert "n_hard=301 is larger than the 300 negatives" in msg


def test_strategies_from_yaml_override_build_in_order():
    cfg = load_config(None, ["negatives.strategies=[{name: filter, keep: 64}, {name: mochi, n_hard: 32, s: 16}]"])
    from vissl_neg.config import build_strategies
    from vissl_neg.negatives import Filter, Mochi

    built = build_strategies(cfg.negatives.strategies)
    assert [type(s) for s in built] == [Filter, Mochi]
    assert built[0].keep == 64 and built[1].n_hard == 32 and built[1].s == 16 and built[1].s_prime == 512


def test_base_file_is_merged_under_the_config(tmp_path):
    (tmp_path / "a.yaml").write_text("optim:\n  lr: 0.5\n  batch_size: 64\nloss:\n  temperature: 0.1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(tmp_path / "b.yaml", ["loss.temperature=0.3"])
    assert cfg.optim.lr == pytest.approx(0.2) and cfg.optim.batch_size == 64
    assert cfg.loss.temperature == pytest.approx(0.3)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    assert "includes itself" in _config_error([], tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: missing.yaml\n")
    assert "missing.yaml" in _config_error([], tmp_path / "d.yaml")


def test_off_and_on_stay_strings(tmp_path):
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    (tmp_path / "c.yaml").write_text("train:\n  amp: off\n  progress: false\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.train.amp == "off" and cfg.train.progress is False
    assert "train.progress" in _config_error(["train.progress=no"])  # only true/false are booleans
