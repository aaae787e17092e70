"""Cross-view training (Sample4Geo) on a generated CVUSA tree: the step's loss is the public
symmetric InfoNCE, gradients are clipped by value, the logit scale learns, each epoch's
batches come from the right neighbour table, mining runs on schedule, recall is reported,
and a killed run resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import math
import pickle
import random
import re

import numpy as np
import pytest
import torch

from vissl_neg.config import load_config
from vissl_neg.engine.geo_trainer import GeoTrainer
from vissl_neg.errors import ConfigError, DataError, UserError
from vissl_neg.geo import gps_neighbours, neighbour_batches, read_neighbours
from vissl_neg.geo.fixture import write_cvusa_fixture
from vissl_neg.losses import symmetric_info_nce

from helpers import GEO_VIEWS_OFF, geo_overrides, nan_loss_at  # importing helpers also pins torch to one CPU thread

N_TRAIN, N_VAL = 24, 8


@pytest.fixture(scope="module")
def cvusa(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvusa")
    ids = write_cvusa_fixture(root, n_train=N_TRAIN, n_val=N_VAL, sat_size=32, pano_size=(16, 64))
    return root, ids


def make(root, out_dir, *extra, resume=None) -> GeoTrainer:
    return GeoTrainer(load_config("configs/cvusa_fixture.yaml", geo_overrides(root, out_dir, *extra)), resume)


def test_step_loss_is_symmetric_info_nce_with_clipped_gradients(cvusa, tmp_path):
    root, _ = cvusa
    t = make(
        root,
        tmp_path / "run",
        "optim.clip_grad=1e-4",
        "loss.label_smoothing=0.1",
        *GEO_VIEWS_OFF,
    )
    assert t.model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    pano, sat, _, _ = t.train_set.__getitems__(list(range(8)))
    t.model.train()
    with torch.no_grad():
        state = {k: v.clone() for k, v in t.model.state_dict().items()}
        expected = symmetric_info_nce(
            t.model(t.eval_transform(pano)), t.model(t.eval_transform(sat)), t.model.logit_scale, label_smoothing=0.1
        )
    t.model.load_state_dict(state)  # the reference pass moved BN statistics
    scale_before = t.model.logit_scale.item()
    out = t.train_step(pano, sat)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    grads = [p.grad.abs().max() for p in t.model.parameters() if p.grad is not None]
    assert len(grads) > 0 and max(grads).item() <= 1e-4 + 1e-12
    assert t.model.logit_scale.grad is not None and t.model.logit_scale.item() != scale_before


def test_batches_follow_the_neighbour_table_of_the_epoch(cvusa, tmp_path):
    root, ids = cvusa
    t = make(root, tmp_path / "run", "sampling.gps_epochs=2", "sampling.mine_every=3", "train.epochs=9")
    assert [t.refresh_epoch(e) for e in range(9)] == [None, None, 2, 2, 2, 5, 5, 5, 8]
    coords = read_neighbours(root / "split_locations" / "all.csv", ids["train"], 8)
    index = {i: n for n, i in enumerate(ids["train"])}
    assert t.gps == {index[i]: [index[j] for j in near] for i, near in coords.items()}
    expected = neighbour_batches(list(range(N_TRAIN)), 8, t.gps, 4, 8, random.Random(0 * 100_003 + 1))
    assert t.epoch_batches(1) == expected
    t.mined = torch.tensor([[(i + 1 + j) % N_TRAIN for j in range(8)] for i in range(N_TRAIN)], dtype=torch.int32)
    mined = {i: [(i + 1 + j) % N_TRAIN for j in range(8)] for i in range(N_TRAIN)}
    batches = t.epoch_batches(3)
    assert batches == neighbour_batches(list(range(N_TRAIN)), 8, mined, 4, 8, random.Random(3))
    assert len(batches) == N_TRAIN // 8 and sorted(i for b in batches for i in b) == list(range(N_TRAIN))


def test_train_mine_evaluate_and_resume_exactly(cvusa, tmp_path):
    root, _ = cvusa
    full = make(root, tmp_path / "full")
    result = full.fit()
    assert result["step"] == 3 * (N_TRAIN // 8)
    assert [m["epoch"] for m in result["history"]] == [1, 2, 3]
    assert set(result["recall"]) == {"R@1", "R@5", "R@10", "R@1%"}
    assert full.mined_epoch == 2 and full.mined.shape == (N_TRAIN, 8)
    assert not (full.mined == torch.arange(N_TRAIN).unsqueeze(1)).any()  # never its own satellite
    assert (tmp_path / "full" / "metrics.json").is_file() and (tmp_path / "full" / "config.yaml").is_file()

    part = make(root, tmp_path / "part", "train.max_steps=4")  # stops inside epoch 1, after one mining
    assert part.fit()["step"] == 4 and part.mined_epoch == 1
    saved = torch.load(part.ckpt_path, map_location="cpu", weights_only=True)  # tensors and plain values only
    assert torch.equal(saved["mined"], part.mined) and saved["mined_epoch"] == 1
    resumed = make(root, tmp_path / "part", "data.num_workers=2", resume=True)  # workers do not change the result
    assert resumed.step == 4 and resumed.mined_epoch == 1
    assert torch.equal(resumed.mined, part.mined)
    resumed.fit()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.metrics == full.metrics


def test_a_signal_saves_and_the_same_command_resumes(cvusa, tmp_path):
    root, _ = cvusa
    t = make(root, tmp_path / "run", "train.ckpt_every=100")
    step = t.train_step

    def step_then_signal(*a):
        out = step(*a)
        if t.step == 2:
            t._on_signal("SIGTERM")  # what the installed handler does on SIGTERM
        return out

    t.train_step = step_then_signal
    assert t.fit() == {"stopped": "SIGTERM", "step": 2}
    again = make(root, tmp_path / "run")
    assert again.step == 2
    assert again.fit()["step"] == 3 * (N_TRAIN // 8)


def test_bf16_autocast_and_channels_last_on_cpu(cvusa, tmp_path):
    root, _ = cvusa
    t = make(root, tmp_path / "run", "train.amp=bf16", "model.channels_last=true", "train.compile=true")
    assert t.amp_dtype == torch.bfloat16
    assert t.forward is t.model  # not compiled on the CPU
    assert any("CUDA only" in n for n in t.notes) and any("channels_last" in n for n in t.notes)
    pano, sat, _, _ = t.train_set.__getitems__(list(range(8)))
    before = t.model.backbone.conv1[0].weight.detach().clone()
    out = t.train_step(pano, sat)
    assert torch.isfinite(out["loss"]) and out["pos"].dtype == torch.float32
    assert not torch.equal(before, t.model.backbone.conv1[0].weight)


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(cvusa, tmp_path):
    from vissl_neg.errors import TrainingDiverged

    root, _ = cvusa
    t = make(root, tmp_path / "run", "train.ckpt_every=2", "train.log_every=100")
    nan_loss_at(t, 3)
    with pytest.raises(TrainingDiverged, match="NaN/inf at step 3; kept the last good checkpoint .*step 2"):
        t.fit()
    assert torch.load(t.ckpt_path, weights_only=True)["step"] == 2


def test_a_nan_after_a_mining_names_the_checkpoint_that_mining_saved(cvusa, tmp_path):
    from vissl_neg.errors import TrainingDiverged

    root, _ = cvusa
    t = make(root, tmp_path / "run", "train.ckpt_every=100", "train.log_every=100", "eval.every=-1")
    spe = t.steps_per_epoch  # epoch 1 starts with a mining, which saves
    nan_loss_at(t, spe + 1)
    with pytest.raises(
        TrainingDiverged, match=f"NaN/inf at step {spe + 1}; kept the last good checkpoint .*step {spe}"
    ):
        t.fit()
    assert torch.load(t.ckpt_path, weights_only=True)["step"] == spe


def test_changed_recipe_refuses_to_resume(cvusa, tmp_path):
    root, _ = cvusa
    make(root, tmp_path / "run", "train.max_steps=1").fit()
    with pytest.raises(UserError, match="different config .*sampling.neighbour_select: 4 -> 2"):
        make(root, tmp_path / "run", "sampling.neighbour_select=2")


def test_read_neighbours_formats(tmp_path):
    ids = [3, 5, 9, 10]
    coords = {3: (40.0, -75.0), 5: (40.1, -75.0), 9: (41.0, -75.0), 10: (40.05, -75.2)}
    expected = gps_neighbours(ids, torch.tensor([coords[i] for i in ids]), 2)
    cvusa_all = tmp_path / "all.csv"  # CVUSA: row id - 1, the ground position in columns 3 and 4
    cvusa_all.write_text(
        "".join(f"0,0,{coords[i][0]},{coords[i][1]},0\n" if i in coords else "0,0,89,0,0\n" for i in range(1, 11))
    )
    assert read_neighbours(cvusa_all, ids, 2) == expected
    plain = tmp_path / "coords.csv"
    plain.write_text("id,lat,lon\n" + "".join(f"{i},{a},{o}\n" for i, (a, o) in coords.items()))
    assert read_neighbours(plain, ids, 2) == expected
    table = tmp_path / "gps_dict.pkl"
    table.write_bytes(pickle.dumps({3: [3, 77, 5, 9, 10], 5: [3]}))
    assert read_neighbours(table, ids, 2) == {3: [5, 9], 5: [3], 9: [], 10: []}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):  # plain values need no global at any protocol
        table.write_bytes(pickle.dumps({3: [5, 9], 5: (3,), 9: [], 10: [3]}, protocol=protocol))
        assert read_neighbours(table, ids, 2) == {3: [5, 9], 5: [3], 9: [], 10: [3]}
    for refused, name in (
        ({3: [np.int64(5)]}, r"numpy\._?core\.multiarray\.scalar"),
        ({3: [torch.tensor(5)]}, r"torch\._utils\._rebuild_tensor_v2"),
    ):
        table.write_bytes(pickle.dumps(refused))
        with pytest.raises(
            DataError, match=f"{re.escape(str(table))}' refers to the global '{name}'; only dicts, lists"
        ):
            read_neighbours(table, ids, 2)
    with pytest.raises(DataError, match="does not exist"):
        read_neighbours(tmp_path / "none.csv", ids, 2)
    plain.write_text("3,40.0,-75.0\n5,north,-75\n")
    with pytest.raises(DataError, match="line 2: expected"):
        read_neighbours(plain, ids, 2)
    plain.write_text("3,40.0,-75.0\n")
    with pytest.raises(DataError, match="no coordinates for 3 training ids"):
        read_neighbours(plain, ids, 2)


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampling.neighbour_selct=3", "did you mean 'sampling.neighbour_select'"),
        ("sampling.neighbour_select=300", "must not exceed sampling.neighbour_range"),
        ("data.pano_size=[16,66]", "divisible by 4"),
        ("task=gep", "did you mean 'geo'"),
        ("optim.name=sgd", "optim.name' must be one of adamw"),
        ("eval.every=-2", "eval.every' must be >= -1"),
    ],
)
def test_config_errors_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/cvusa_fixture.yaml", [override])


def test_missing_neighbour_file_and_oversized_batch(cvusa, tmp_path):
    root, _ = cvusa
    with pytest.raises(DataError, match="neighbour file '.*nope.csv' does not exist"):
        make(root, tmp_path / "a", f"data.neighbours={tmp_path / 'nope.csv'}")
    with pytest.raises(ConfigError, match="larger than the training set"):
        make(root, tmp_path / "b", "optim.batch_size=64")


class Payload:
    """Unpickling this creates ``marker`` (what a malicious file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_neighbour_pickle_with_code_is_refused_by_tools_train_and_runs_nothing(cvusa, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from helpers import subprocess_env

    root, _ = cvusa
    marker, control = tmp_path / "ran", tmp_path / "control"
    table = tmp_path / "gps_dict.pkl"
    table.write_bytes(pickle.dumps({1: Payload(control)}))
    pickle.loads(table.read_bytes())
    assert control.exists()  # the payload does run when unpickled the unsafe way
    table.write_bytes(pickle.dumps({1: Payload(marker)}))
    proc = subprocess.run(
        [
            sys.executable,
            "tools/train.py",
            "--config",
            "configs/cvusa_fixture.yaml",
            *geo_overrides(root, tmp_path / "run", f"data.neighbours={table}"),
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(),
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (
        f"error: neighbour file '{table}' refers to the global 'io.open'; only dicts, lists, "
        "tuples, ints, floats and strings are read, so it was not loaded"
    )
    assert not marker.exists()


def test_an_output_folder_that_cannot_be_made_is_one_error(cvusa, tmp_path):
    root, _ = cvusa
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match=f"train.out_dir '{tmp_path / 'afile' / 'run'}' cannot be created or written"):
        make(root, tmp_path / "afile" / "run")
    with pytest.raises(UserError, match="train.out_dir '/proc/vissl_neg_run' cannot be created or written"):
        make(root, "/proc/vissl_neg_run")


def test_tools_train_evaluate_export_on_the_fixture(cvusa, tmp_path):
    """The real tools as processes: train.py (task: geo), eval_geo.py, export.py (weights load
    into timm), and knn.py refusing a geo run in one line."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import timm
    import yaml

    from helpers import subprocess_env

    repo = Path(__file__).resolve().parents[1]
    root, _ = cvusa
    run = tmp_path / "run"

    def tool(*argv):
        return subprocess.run(
            [sys.executable, *argv], cwd=repo, capture_output=True, text=True, timeout=600, env=subprocess_env()
        )

    train = tool(
        "tools/train.py",
        "--config",
        "configs/cvusa_fixture.yaml",
        *geo_overrides(root, run, "train.epochs=2", "eval.every=0"),
    )
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout.strip().splitlines()[-1])["step"] == 2 * (N_TRAIN // 8)
    evaluated = tool("tools/eval_geo.py", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    printed = json.loads(evaluated.stdout)
    assert printed == json.loads((run / "eval_geo.json").read_text()) and printed["queries"] == N_VAL
    assert printed["R@1"] == round(json.loads((run / "metrics.json").read_text())["recall"]["R@1"], 2)
    exported = tool("tools/export.py", str(run))
    assert exported.returncode == 0, exported.stderr
    card = json.loads((run / "export" / "model_card.json").read_text())
    assert card["method"] == "sample4geo" and card["recall"]["R@1"] == printed["R@1"]
    assert card["dataset"]["name"] == "CVUSA"
    for f in (run / "export").iterdir():  # no path of this machine in what is published
        assert not any(p.encode() in f.read_bytes() for p in (str(root), str(run), str(tmp_path))), f.name
    model = timm.create_model("resnet10t", num_classes=0)
    model.load_state_dict(torch.load(run / "export" / "backbone.pth", weights_only=True), strict=True)
    # the hub layout: local-dir: rebuilds the shared encoder, same features for both views
    from vissl_neg.models import build_cross_view_model
    from vissl_neg.tasks import load_run

    cfg, state = load_run(run, "geo")
    trained = build_cross_view_model(cfg.model, cfg.data.sat_size, tuple(cfg.data.pano_size))
    trained.load_state_dict(state["model"])
    hub = timm.create_model(f"local-dir:{run / 'export'}", pretrained=True).eval()
    for shape in ((3, 32, 32), (3, 16, 64)):  # geo_overrides' satellite and panorama
        x = torch.randn(2, *shape)
        with torch.no_grad():
            assert torch.equal(hub(x), trained.backbone.eval()(x))
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    readme = (run / "export" / "README.md").read_text()
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["library_name"] == "timm" and "sample4geo" in meta["tags"]
    recalls = {m["name"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert recalls == {k: v for k, v in printed.items() if k.startswith("R@")}
    refused = tool("tools/knn.py", str(run))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: '{run}' is a geo run, not a moco run; evaluate it with tools/eval_geo.py"
    ]


@pytest.mark.slow
def test_planted_structure_is_learned(tmp_path):
    """configs/cvusa_fixture.yaml on the default fixture: the untrained encoder is near chance
    (3.1 % R@1 on 32 pairs), the trained one far above it."""
    from vissl_neg.cli.evaluate import evaluate_geo_run

    write_cvusa_fixture(tmp_path / "data")
    cfg = load_config(
        "configs/cvusa_fixture.yaml",
        [f"data.root={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'run'}", "train.progress=false"],
    )
    trained = GeoTrainer(cfg).fit()["recall"]
    untrained = evaluate_geo_run(tmp_path / "run", random_init=True)
    assert untrained["R@1"] <= 15.0, untrained
    assert trained["R@1"] >= 40.0 and trained["R@5"] >= 75.0, trained
