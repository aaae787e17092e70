"""ImageNet / ImageNet-100 / ImageFolder trees on their real layout: scanning, errors,
reduced-size decoding, corrupt files skipped (and counted across workers)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vissl_neg.config import load_config
from vissl_neg.data import IMAGENET100_CLASSES, build_dataset, make_loader, read_class_list
from vissl_neg.data.image_folder import decode_image
from vissl_neg.data.loader import ResumableBatchSampler
from vissl_neg.errors import DataError

from helpers import write_image_tree, write_imagenet_fixture


def data_cfg(name, root, *extra):
    return load_config(None, [f"data.name={name}", f"data.root={root}", "data.decode_size=32", *extra]).data


def test_imagenet_tree_scans_sorted_classes_and_both_splits(tmp_path):
    fx = write_imagenet_fixture(tmp_path, classes=["n02", "n01", "n03"], corrupt=False)
    train = build_dataset(data_cfg("imagenet", tmp_path), "train")
    val = build_dataset(data_cfg("imagenet", tmp_path), "test")
    assert train.classes == sorted(fx["classes"]) and len(train) == 18 and len(val) == 6
    assert torch.equal(torch.bincount(train.labels), torch.tensor([6, 6, 6]))
    image, label, index = train[7]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and index == 7
    assert train.files[7].split("/")[-2] == train.classes[int(label)]


def test_imagenet100_keeps_the_cmc_classes_in_list_order(tmp_path):
    wnids = read_class_list(IMAGENET100_CLASSES)
    assert len(wnids) == 100 and wnids[0] == "n02869837" and wnids[-1] == "n02090622"
    rng = np.random.default_rng(0)
    write_image_tree(tmp_path / "train", wnids + ["n99999999"], 1, rng, size=(8, 8))
    data = build_dataset(data_cfg("imagenet100", tmp_path), "train")
    assert data.classes == wnids and len(data) == 100  # the extra class folder is ignored
    assert [f.split("/")[-2] for f in data.files] == wnids


def test_layout_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(data_cfg("imagenet", tmp_path / "nowhere"), "train")
    write_imagenet_fixture(tmp_path, corrupt=False)
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(flat / "train" / f"ILSVRC2012_val_{i:08d}.JPEG")
    with pytest.raises(DataError, match=r"holds 3 images but no class folders; sort it into val/<wnid>/"):
        build_dataset(data_cfg("imagenet", flat), "train")
    (tmp_path / "train" / "n00000000").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*n00000000' holds no images"):
        build_dataset(data_cfg("imagenet", tmp_path), "train")
    with pytest.raises(DataError, match=r"lacks 100 of the 100 listed classes: n02869837"):
        build_dataset(data_cfg("imagenet100", tmp_path), "test")
    (tmp_path / "list.txt").write_text("n01440764\nn05555555\n")
    with pytest.raises(DataError, match="lacks 1 of the 2 listed classes: n05555555"):
        build_dataset(data_cfg("image_folder", tmp_path, f"data.classes={tmp_path / 'list.txt'}"), "test")


def test_reduced_size_decoding_matches_full_decoding(tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:375, 0:500]
    smooth = np.stack([xx * 255 // 500, yy * 255 // 375, (xx + yy) * 255 // 875], axis=-1)
    pixels = np.clip(smooth + rng.integers(-5, 6, smooth.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "big.JPEG"
    Image.fromarray(pixels).save(path, quality=95)
    fast, full = decode_image(str(path), 64, draft=True), decode_image(str(path), 64, draft=False)
    assert fast.shape == full.shape == (3, 64, 64) and fast.dtype == torch.uint8
    assert (fast.float() - full.float()).abs().mean() < 4.0
    with Image.open(path) as img:  # draft really decodes at a reduced scale
        img.draft("RGB", (64, 64))
        assert min(img.size) >= 64 and img.size[0] < 500


def test_corrupt_file_is_skipped_with_a_warning_and_counted(tmp_path):
    fx = write_imagenet_fixture(tmp_path)
    data = build_dataset(data_cfg("imagenet", tmp_path), "train")
    bad = data.files.index(str(fx["corrupt"]))
    with pytest.warns(UserWarning, match=f"skipping unreadable image '{fx['corrupt']}'"):
        image, label, used = data[bad]
    assert used == bad + 1 and image.shape == (3, 32, 32) and data.skipped.value == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images, labels, indices = data.__getitems__([bad, 0])
    assert indices.tolist() == [bad + 1, 0] and images.shape == (2, 3, 32, 32)


def test_loader_workers_decode_and_share_the_skip_counter(tmp_path):
    write_imagenet_fixture(tmp_path)
    data = build_dataset(data_cfg("imagenet", tmp_path), "train")
    sampler = ResumableBatchSampler(len(data), 5, seed=0)
    loader = make_loader(data, sampler, num_workers=2, pin_memory=True, prefetch_factor=2, persistent_workers=True)
    for _ in range(2):  # persistent workers serve a second epoch
        seen = torch.cat([indices for _, _, indices in loader])
        assert len(seen) == 5 * sampler.batches_per_epoch()
    assert data.skipped.value >= 1  # counted inside the worker processes


def test_device_decoding_matches_worker_decoding_and_skips_corrupt_files(tmp_path):
    from vissl_neg.data.device_decode import DeviceJpegDecoder

    fx = write_imagenet_fixture(tmp_path)
    data = build_dataset(data_cfg("imagenet", tmp_path), "train")
    encoded = data.encoded_view()
    good = [0, 3, 10]
    raw, labels, indices = encoded.__getitems__(good)
    assert isinstance(raw, list) and raw[0].dtype == torch.uint8 and raw[0].dim() == 1
    decoder = DeviceJpegDecoder(data, 32, torch.device("cpu"))
    on_device = decoder(raw, indices)
    in_workers = data.__getitems__(good)[0]
    assert on_device.shape == in_workers.shape == (3, 3, 32, 32) and on_device.dtype == torch.uint8
    assert (on_device.float() - in_workers.float()).abs().mean() < 6.0  # PIL vs torchvision resampling
    bad = data.files.index(str(fx["corrupt"]))
    raw = [encoded.__getitems__([bad])[0][0], encoded.__getitems__([0])[0][0]]
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        out = decoder(raw, torch.tensor([bad, 0]))
    assert torch.equal(out[0], out[1]) and data.skipped.value == 1


def test_device_decoding_inside_training(tmp_path):
    from vissl_neg.engine.trainer import Trainer

    write_imagenet_fixture(tmp_path / "data", corrupt=False)
    cfg = load_config(
        None,
        [
            "data.name=imagenet",
            f"data.root={tmp_path / 'data'}",
            "data.decode_size=36",
            "data.decode_on=device",
            "augment.size=32",
            "augment.mean=[0.5, 0.5, 0.5]",
            "augment.std=[0.25, 0.25, 0.25]",
            "model.backbone=resnet10t",
            "model.bn_splits=2",
            "negatives.size=20",
            "optim.batch_size=8",
            "train.max_steps=2",
            "train.progress=false",
            "eval.knn_every=-1",
            f"train.out_dir={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(cfg)
    assert any("nvJPEG needs CUDA" in n for n in trainer.notes)
    assert trainer.fit()["step"] == 2
