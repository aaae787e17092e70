"""Sample4Geo's other benchmarks end to end on their generated fixtures: CVACT, VIGOR (same-area
and cross-area) and University-1652 each load from their release layout, train a few steps with
their recipe's batch sampler, evaluate with their metric, resume to bit-identical weights and
export a card that names the benchmark and its protocol; bad layouts are one line. One trainer,
one eval-geo: what differs comes from the data section."""

from __future__ import annotations

import random

import pytest
import torch

from vissl_neg.config import load_config
from vissl_neg.data.pairs import GpsSource
from vissl_neg.engine.geo_trainer import GeoTrainer
from vissl_neg.errors import ConfigError, UserError
from vissl_neg.geo.fixture import write_cvact_fixture, write_university1652_fixture, write_vigor_fixture
from vissl_neg.geo.sampling import (
    class_batches,
    euclidean_neighbours,
    gps_table,
    neighbour_batches,
    vigor_gps_neighbours,
    vigor_pair_batches,
)

from helpers import GEO_VIEWS_OFF  # importing helpers also pins torch to one CPU thread

COMMON = [
    "model.backbone=resnet10t",
    "optim.lr=0.003",
    "train.epochs=3",
    "train.device=cpu",
    "train.progress=false",
    "train.report=false",
    "train.log_every=2",
    "train.ckpt_every=2",
    "eval.batch_size=16",
]
BENCHMARKS = {
    # name: (fixture config, overrides, metric keys of one evaluation)
    "cvact": (
        "cvact_fixture",
        [
            "data.sat_size=32",
            "data.pano_size=[16,64]",
            "optim.batch_size=8",
            "sampling.neighbour_select=4",
            "sampling.neighbour_range=8",
            "sampling.gps_epochs=1",
            "sampling.mine_every=1",
            "eval.every=1",
        ],
        {"R@1", "R@5", "R@10", "R@1%"},
    ),
    "vigor_same": (
        "vigor_same_fixture",
        ["optim.batch_size=8", "sampling.gps_epochs=1", "sampling.mine_every=1", "eval.every=1"],
        {"R@1", "R@5", "R@10", "R@1%", "hit_rate"},
    ),
    "vigor_cross": (
        "vigor_cross_fixture",
        ["optim.batch_size=8", "sampling.gps_epochs=1", "sampling.mine_every=1", "eval.every=0"],
        {"R@1", "R@5", "R@10", "R@1%", "hit_rate"},
    ),
    "university1652": (
        "university1652_fixture",
        ["data.sat_size=32", "data.drone_size=32", "optim.batch_size=4", "eval.every=0"],
        {f"{d}/{k}" for d in ("d2s", "s2d") for k in ("R@1", "R@5", "R@10", "R@1%", "mAP")},
    ),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("benchmarks")
    cvact = write_cvact_fixture(base / "cvact", n_train=24, n_val=8, n_test=6, sat_size=32, pano_size=(16, 88))
    u1652 = write_university1652_fixture(
        base / "u1652", n_train=8, drones=3, n_test=4, n_distractors=2, sat_size=32, drone_size=32
    )
    vigor = write_vigor_fixture(base / "vigor")
    return {
        "cvact": (base / "cvact", cvact),
        "university1652": (base / "u1652", u1652),
        "vigor": (base / "vigor", vigor),
    }


def config(name: str, roots, out_dir, *extra):
    cfg_name, overrides, _ = BENCHMARKS[name]
    root = roots[name.split("_")[0] if name.startswith("vigor") else name][0]
    return load_config(
        f"configs/{cfg_name}.yaml", [f"data.root={root}", *COMMON, *overrides, f"train.out_dir={out_dir}", *extra]
    )


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_trains_evaluates_resumes_and_exports(name, roots, tmp_path):
    from vissl_neg.cli.evaluate import evaluate_geo_run
    from vissl_neg.export.release import export_run

    keys = BENCHMARKS[name][2]
    full = GeoTrainer(config(name, roots, tmp_path / "full"), resume=False)
    result = full.fit()
    assert result["step"] == 3 * full.steps_per_epoch and set(result["recall"]) == keys
    if full.cfg.data.miner is not None:
        assert full.mined_epoch == 2 and full.mined is not None
    part = GeoTrainer(config(name, roots, tmp_path / "part", "train.max_steps=3"), resume=False)
    assert part.fit()["step"] == 3
    resumed = GeoTrainer(config(name, roots, tmp_path / "part"), resume=True)
    assert resumed.step == 3
    resumed.fit()
    for (key, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert resumed.metrics == full.metrics

    evaluated = evaluate_geo_run(tmp_path / "full")
    assert {k for k in evaluated if "R@" in k or k.endswith(("mAP", "hit_rate"))} == keys
    assert evaluated["split"] == full.cfg.data.monitor_split
    assert evaluated["protocol"] == full.cfg.data.protocol(evaluated["split"])
    for k in keys:  # eval-geo repeats the training's last evaluation
        assert evaluated[k] == pytest.approx(result["recall"][k], abs=0.006), k
    card = export_run(tmp_path / "full")
    assert card["dataset"]["name"] == full.cfg.data.title == card["benchmark"]["name"]
    assert card["benchmark"]["protocol"] == evaluated["protocol"]
    readme = (tmp_path / "full" / "export" / "README.md").read_text()
    assert f"Protocol: {evaluated['protocol']}." in readme


def test_keep_best_keeps_the_weights_of_the_best_monitored_recall(roots, tmp_path):
    """eval.keep_best: the reference's model selection, offered (off by default)."""
    from vissl_neg.cli.evaluate import evaluate_geo_run
    from vissl_neg.runtime import checkpoint as ckpt

    run = tmp_path / "run"
    t = GeoTrainer(config("cvact", roots, run, "eval.keep_best=true", "train.epochs=4"), resume=False)
    t.fit()
    scores = [m["R@1"] for m in t.metrics]
    best = ckpt.load(run / "best.ckpt")
    top = max(scores)
    assert best["value"] == top and best["step"] == t.metrics[scores.index(top)]["step"]
    evaluated = evaluate_geo_run(run, best=True)
    assert evaluated["weights"] == "best.ckpt" and evaluated["step"] == best["step"]
    assert evaluated["R@1"] == pytest.approx(top, abs=0.006)
    assert (run / "eval_geo_best.json").is_file()
    with pytest.raises(UserError, match="kept no best weights"):
        evaluate_geo_run(_plain_run(roots, tmp_path), best=True)


def _plain_run(roots, tmp_path):
    run = tmp_path / "plain"
    GeoTrainer(config("cvact", roots, run, "train.max_steps=1"), resume=False).fit()
    return run


def test_cvact_batches_use_utm_neighbours_then_mined_ones(roots, tmp_path):
    t = GeoTrainer(config("cvact", roots, tmp_path / "run"), resume=False)
    assert t.gps == dict(enumerate(euclidean_neighbours(torch.from_numpy(t.train_set.utm), 8).tolist()))
    assert t.notes and "1 id left out" in t.notes[0]  # the fixture's listed id without its satellite image
    expected = neighbour_batches(list(range(len(t.train_set))), 8, t.gps, 4, 8, random.Random(0 * 100_003 + 0))
    assert t.epoch_batches(0) == expected
    assert [r.name for r in t.monitor] == [""] and len(t.monitor[0].pairs) == 8  # CVACT_val, monitored


def test_university1652_batches_hold_one_pair_per_building(roots, tmp_path):
    t = GeoTrainer(config("university1652", roots, tmp_path / "run", "train.epochs=1"), resume=False)
    labels = t.train_set.labels
    assert t.gps is None and t.steps_per_epoch == len(labels) // 4
    for epoch in range(3):
        batches = t.epoch_batches(epoch)
        assert len(batches) == t.steps_per_epoch
        assert all(len({labels[i] for i in b}) == 4 for b in batches)
        first = class_batches(list(labels), 4, random.Random(epoch))
        assert batches[: len(first)] == first[: t.steps_per_epoch]  # the sampler's pass, topped up if short
    with pytest.raises(ConfigError, match="exceeds the 8 training classes of University-1652"):
        GeoTrainer(config("university1652", roots, tmp_path / "b", "optim.batch_size=9"), resume=False)
    random_batches = GeoTrainer(config("university1652", roots, tmp_path / "c", "data.batches=random"), resume=False)
    assert random_batches.epoch_batches(0) == neighbour_batches(list(range(len(labels))), 4, None, rng=random.Random(0))


@pytest.mark.parametrize("mode", ["same", "cross"])
def test_vigor_mode_sets_the_cities_and_its_own_gps_table(mode, roots, tmp_path):
    t = GeoTrainer(config(f"vigor_{mode}", roots, tmp_path / "run"), resume=False)
    split = t.train_set.split
    assert (
        split.mode == mode
        and split.cities
        == {"same": ("Chicago", "NewYork", "SanFrancisco", "Seattle"), "cross": ("NewYork", "Seattle")}[mode]
    )
    assert t.gps == vigor_gps_neighbours(split, 8) == gps_table(GpsSource("vigor", split=split), 8)
    batches = t.epoch_batches(0)
    expected = vigor_pair_batches(t.train_set.pair_sats, 8, t.gps, 4, 8, random.Random(0))
    assert batches[: len(expected)] == expected[: t.steps_per_epoch]
    assert all(len({t.train_set.pair_sats[i] for i in b}) == len(b) for b in batches)  # one pair per tile
    test_cities = {"same": split.cities, "cross": ("Chicago", "SanFrancisco")}[mode]
    assert t.monitor[0].references.split.cities == test_cities


def test_vigor_mined_table_is_keyed_by_satellite(roots, tmp_path):
    t = GeoTrainer(config("vigor_same", roots, tmp_path / "run", *GEO_VIEWS_OFF), resume=False)
    t.mine(type("Log", (), {"info": staticmethod(lambda msg: None)})())
    keys = sorted(set(t.train_set.pair_sats))
    assert t.mined_keys == keys and t.mined.shape == (len(keys), 8)
    assert not (t.mined == torch.tensor(keys).unsqueeze(1)).any()  # never its own tile
    assert set(t.mined.flatten().tolist()) <= set(keys)  # neighbours are training tiles


@pytest.mark.parametrize(
    "name, extra, message",
    [
        ("cvact", ["data.root={tmp}"], "error: CVACT metadata file '{tmp}/ACT_data.mat' does not exist"),
        (
            "cvact",
            ["data.eval_split=valid"],
            "error: config key 'data.eval_split' must be one of val, test; got 'valid'",
        ),
        ("vigor_same", ["data.cities=[Chicago,Paris]"], "error: config key 'data.cities' must be VIGOR cities"),
        (
            "vigor_same",
            ["data.mode=crossed"],
            "error: config key 'data.mode' must be one of same, cross; got 'crossed'",
        ),
        ("vigor_same", ["data.root={tmp}"], "error: VIGOR folder '{tmp}/Chicago/panorama' does not exist"),
        ("university1652", ["data.root={tmp}"], "error: University-1652 folder '{tmp}/train/satellite' does not exist"),
        (
            "university1652",
            ["data.directions=d2a"],
            "error: config key 'data.directions' must be one of both, d2s, s2d",
        ),
    ],
)
def test_bad_layouts_and_keys_are_one_line(name, extra, message, roots, tmp_path, capsys):
    from vissl_neg.cli.train import main

    (tmp_path / "empty").mkdir()
    tmp = str(tmp_path / "empty")
    cfg_name, overrides, _ = BENCHMARKS[name]
    root = roots[name.split("_")[0] if name.startswith("vigor") else name][0]
    argv = ["--config", f"configs/{cfg_name}.yaml", f"data.root={root}", *COMMON, *overrides]
    argv += [f"train.out_dir={tmp_path / 'run'}", *(e.replace("{tmp}", tmp) for e in extra)]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(message.replace("{tmp}", tmp)), err


def test_vigor_metric_finds_each_label_among_the_references():
    """The retrieval's "vigor" metric maps satellite labels to reference rows: references in any
    order give vigor_recall on the rows of the positive and the semi-positives."""
    from vissl_neg.geo.metrics import vigor_recall
    from vissl_neg.geo.retrieval import METRICS

    g = torch.Generator().manual_seed(5)
    query = torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1)
    reference = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    sats = torch.randperm(40, generator=g) + 100  # the references' satellite indices, shuffled
    rows = torch.randint(0, 40, (20, 4), generator=g)
    got = METRICS["vigor"](query, reference, sats[rows], sats, {"one_percent": "sample4geo"}, 7)
    assert got == vigor_recall(query, reference, rows[:, 0], rows[:, 1:])
    assert got != METRICS["vigor"](query, reference, sats[rows.roll(1, dims=1)], sats, {"one_percent": "sample4geo"}, 7)


def test_a_quarter_turn_needs_a_ground_width_divisible_by_four():
    from vissl_neg.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"augment.rotate_p=0.5 rolls the drone images by quarter turns: their width \(30\)"
    ):
        load_config("configs/university1652_fixture.yaml", ["data.drone_size=30", "augment.rotate_p=0.5"])
    assert load_config("configs/university1652_fixture.yaml", ["data.drone_size=30"]).data.drone_size == 30
