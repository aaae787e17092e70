"""Every config under configs/ loads and validates, and the recipes say what the papers say."""

from __future__ import annotations

from pathlib import Path

import pytest

from vissl_neg.config import build_strategies, load_config
from vissl_neg.data import DATASETS

import helpers  # noqa: F401  (pins torch to one CPU thread)

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _load(path: Path):
    from vissl_neg.config import read_yaml

    values = read_yaml(path)
    name = values.get("data", {}).get("name", "fashion_mnist")
    assert name in DATASETS or values.get("task") == "geo", name
    return load_config(path), name


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path):
    cfg, _ = _load(path)
    if getattr(cfg, "task", "moco") == "moco":
        build_strategies(cfg.negatives.strategies)
    assert cfg.train.out_dir == f"runs/{path.stem}"


def test_sample4geo_reference_recipe():
    """docs/methods.md, Sample4Geo: ConvNeXt-B, batch 128, 40 epochs, AdamW lr 1e-3, 1 warm-up epoch,
    clip by value 100, label smoothing 0.1, T0 0.07, select 64 of range 128, GPS 4 epochs then mined every 4."""
    cfg, name = _load(CONFIGS[[p.stem for p in CONFIGS].index("cvusa_sample4geo")])
    assert name == "cvusa" and cfg.model.backbone.split(".")[0] == "convnext_base" and cfg.model.pretrained
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.warmup_epochs, cfg.optim.clip_grad) == (
        "adamw",
        1e-3,
        128,
        1.0,
        100.0,
    )
    assert (cfg.train.epochs, cfg.loss.label_smoothing, cfg.model.init_temperature) == (40, 0.1, 0.07)
    s = cfg.sampling
    assert (s.neighbour_select, s.neighbour_range, s.gps_epochs, s.mine_every) == (64, 128, 4, 4)
    assert (cfg.data.sat_size, cfg.data.pano_size, cfg.data.neighbours) == (384, [140, 768], "auto")
    # Skyy93/Sample4Geo train_cvusa.py:32, 293-294: fp16 autocast with a GradScaler; transforms.py:38-57: the views
    a = cfg.augment
    assert cfg.train.amp == "fp16"
    assert (a.jpeg_p, a.jpeg_quality, a.jitter, a.hue, a.jitter_p) == (0.5, [90, 100], 0.15, 0.15, 0.5)
    assert (a.blur_p, a.sharpen_p, a.grid_dropout_p, a.coarse_dropout_p, a.flip_p, a.rotate_p) == (
        0.15,
        0.15,
        0.15,
        0.15,
        0.5,
        0.75,
    )


def test_there_is_a_fashion_mnist_config_per_strategy_and_source():
    names = {p.stem for p in CONFIGS}
    assert {
        "fmnist_moco",
        "fmnist_mochi",
        "fmnist_geodesic",
        "fmnist_filter_dual",
        "fmnist_feature_transform",
        "fmnist_debiased",
        "fmnist_memory_bank",
        "fmnist_ambiguous",
        "fmnist_false_negatives",
    } <= names


def _built(cfg):
    return build_strategies(cfg.negatives.strategies, cfg.negatives.size, cfg.loss.temperature)


def test_ambiguous_and_false_negative_recipes():
    """SimANS: the reference code's a = 0.5, b = 0 on logits (microsoft/SimXNS
    co_training_wiki_train.py:582-583), and fmnist_simans draws 15 of the 100 hardest as its
    scripts (15 of the retriever's top-100); false-negative cancellation with the reference
    flags (google-research/fnc run.py:261-267: top 10, threshold 0.7; attraction, the only loss
    of objective.py; no warm-up)."""
    by_name = {p.stem: p for p in CONFIGS}
    for name in ("fmnist_ambiguous", "imagenet100_ambiguous", "fmnist_simans"):
        cfg, _ = _load(by_name[name])
        amb = _built(cfg)[-1]
        assert type(amb).__name__ == "Ambiguous"
        assert (amb.a, amb.b, amb.temperature) == (0.5, 0.0, cfg.loss.temperature)
        assert amb.keep < cfg.negatives.size
    simans = _built(_load(by_name["fmnist_simans"])[0])
    assert [(type(s).__name__, s.keep) for s in simans] == [("Filter", 100), ("Ambiguous", 15)]
    assert simans[-1].start_epoch == 0
    for name in ("fmnist_false_negatives", "imagenet100_false_negatives"):
        cfg, _ = _load(by_name[name])
        (fnc,) = _built(cfg)
        assert (fnc.top, fnc.threshold, fnc.mode, fnc.start_epoch) == (10, 0.7, "attract", 0.0)


def test_imagenet_paper_recipes():
    by_name = {p.stem: p for p in CONFIGS}
    moco, data = _load(by_name["imagenet_mocov2"])
    assert data == "imagenet" and moco.model.backbone == "resnet50"
    assert (moco.train.epochs, moco.optim.lr, moco.optim.batch_size, moco.negatives.size) == (200, 0.03, 256, 65536)
    assert (moco.loss.temperature, moco.model.momentum, moco.optim.weight_decay) == (0.2, 0.999, 1e-4)
    mochi100, data = _load(by_name["imagenet100_mochi"])
    assert data == "imagenet100"
    assert mochi100.negatives.strategies[0] | {"start_epoch": 0} == {
        "name": "mochi",
        "n_hard": 1024,
        "s": 1024,
        "s_prime": 512,
        "start_epoch": 0,
    }
    mochi, _ = _load(by_name["imagenet_mochi"])
    assert (
        mochi.negatives.strategies[0]["n_hard"],
        mochi.negatives.strategies[0]["s"],
        mochi.negatives.strategies[0]["s_prime"],
    ) == (256, 512, 0)
    for name in ("imagenet_feature_transform", "imagenet100_feature_transform"):
        ft, _ = _load(by_name[name])
        (built,) = _built(ft)
        # DTennant/CL-Visualizing-Feature-Transformation README command: --pos_alpha 2.0 --neg_alpha 1.6,
        # no --dim_mask (train_options.py:35 default 'none': one λ each per step)
        assert (built.pos_alpha, built.neg_alpha, built.draw) == (2.0, 1.6, "step")


def test_recipe_precision_and_feature_transformations_imagenet100_base():
    """Each recipe trains in its reference's precision: MoCo v2 (facebookresearch/moco @ 7397dfe
    main_moco.py, no autocast) and everything on it in fp32; MoCo v3 fp16 autocast with a
    GradScaler (moco-v3 @ c349e6e main_moco.py:232, 352-363); Sample4Geo fp16 (tested above).
    Feature transformation's ImageNet-100 command (CL-Visualizing-Feature-Transformation @ c53d1be
    README: --alpha 0.99, default nce_k 65536 in options/base_options.py:85, 91; cosine to
    lr x 0.1^3 in learning/base_trainer.py:70-73, ImageNet-1k and -100; linear evaluation 60 epochs at lr 30 with decay
    epochs 60, 80 never reached, options/test_options.py:23-25)."""
    by_name = {p.stem: p for p in CONFIGS}
    for name in by_name:
        if name.startswith("imagenet") and name != "imagenet_mocov3_vits":
            assert _load(by_name[name])[0].train.amp == "off", name
    assert _load(by_name["imagenet_mocov3_vits"])[0].train.amp == "fp16"
    for name in ("imagenet_feature_transform", "imagenet100_feature_transform"):
        ft, _ = _load(by_name[name])
        assert ft.optim.lr == 0.03 and ft.optim.min_lr == pytest.approx(ft.optim.lr * 0.1**3, rel=1e-12)
    assert (ft.model.momentum, ft.negatives.size) == (0.99, 65536)
    assert ft.eval.linear_epochs == 60 and min(ft.eval.linear_milestones) >= 60 and ft.eval.linear_lr == 30.0
    assert ft.eval.linear_schedule == "steps" and ft.eval.linear_weight_decay == 0.0


def _shared_sample4geo(cfg) -> None:
    """What every Sample4Geo recipe shares (train_cvact.py / train_vigor.py / train_university.py Configuration):
    ConvNeXt-B fine-tuned from its weights, batch 128, AdamW lr 1e-3, clip by value 100, label smoothing 0.1,
    fp16 with a GradScaler, CVUSA's per-image views."""
    assert cfg.model.backbone == "convnext_base.fb_in22k_ft_in1k_384" and cfg.model.pretrained
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.clip_grad) == ("adamw", 1e-3, 128, 100.0)
    assert (cfg.loss.label_smoothing, cfg.model.init_temperature, cfg.train.amp) == (0.1, 0.07, "fp16")
    a = cfg.augment
    assert (a.jpeg_p, a.jpeg_quality, a.jitter, a.hue, a.jitter_p, a.flip_p) == (0.5, [90, 100], 0.15, 0.15, 0.5, 0.5)
    assert (a.blur_p, a.sharpen_p, a.grid_dropout_p, a.coarse_dropout_p) == (0.15, 0.15, 0.15, 0.15)


@pytest.mark.parametrize("stem", ["cvact_sample4geo", "vigor_same_sample4geo", "vigor_cross_sample4geo"])
def test_sample4geo_cvact_and_vigor_recipes(stem):
    """train_cvact.py:29-72 / train_vigor.py:29-74: 40 epochs, 1 warm-up epoch, GPS then mined every 4 epochs,
    select 64 of 128, flip 0.5 and rotate 0.75 shared by the pair; satellite 384², panorama 140 x 768 (CVACT,
    train_cvact.py:137-141) or 384 x 768 (VIGOR, train_vigor.py:140-144)."""
    cfg, name = _load(CONFIGS[[p.stem for p in CONFIGS].index(stem)])
    _shared_sample4geo(cfg)
    assert (cfg.train.epochs, cfg.optim.warmup_epochs, cfg.augment.rotate_p, cfg.augment.sat_rotate90_p) == (
        40,
        1.0,
        0.75,
        0.0,
    )
    s = cfg.sampling
    assert (s.neighbour_select, s.neighbour_range, s.gps_epochs, s.mine_every) == (64, 128, 4, 4)
    assert cfg.data.sat_size == 384 and cfg.data.neighbours == "auto" and cfg.augment.pano_grid_ratio == 0.5
    if name == "cvact":
        assert cfg.data.pano_size == [140, 768] and (cfg.data.eval_split, cfg.eval.every) == ("val", 4)
    else:
        assert name == "vigor" and cfg.data.mode == stem.split("_")[1] and cfg.data.pano_size == [384, 768]
        assert cfg.eval.every == 0 and not cfg.eval.keep_best  # no val split: the test split once, at the end
        assert (cfg.data.mined_merge, cfg.data.one_percent) == ("max", "sample4geo")


def test_sample4geo_university1652_recipe():
    """train_university.py:24-63 and dataset/university.py:251-307: 1 epoch, 0.1 warm-up epoch, no GPS or mining,
    one pair per building a batch, joint flip 0.5, no joint rotation, the satellite's RandomRotate90(p=1),
    GridDropout 0.4 on the drone view; 384² both; evaluated once at the end, distractors ranked (official)."""
    cfg, name = _load(CONFIGS[[p.stem for p in CONFIGS].index("university1652_sample4geo")])
    _shared_sample4geo(cfg)
    assert name == "university1652" and (cfg.train.epochs, cfg.optim.warmup_epochs) == (1, 0.1)
    a, d = cfg.augment, cfg.data
    assert (a.rotate_p, a.sat_rotate90_p, a.pano_grid_ratio) == (0.0, 1.0, 0.4)
    assert (cfg.sampling.gps_epochs, cfg.sampling.mine_every, cfg.eval.every, cfg.eval.keep_best) == (0, 0, 0, False)
    assert (d.sat_size, d.drone_size, d.batches, d.directions, d.distractors) == (
        384,
        384,
        "one_per_class",
        "both",
        "ranked",
    )
