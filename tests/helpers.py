"""Shared test helpers (plain functions, no pytest fixtures): a tiny synthetic
Fashion-MNIST on disk in the real idx .gz layout, and overrides for a fast CPU run."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from vissl_neg.config.geo_schema import AUGMENT_PROBABILITIES

# The test machine is small and shared with other jobs: OpenMP threads contending for
# busy cores make a tiny CPU forward/backward ~50x slower (seconds instead of tens of
# milliseconds). Importing this module pins the test process to one thread, and
# ``subprocess_env()`` does the same for the tools run as subprocesses.
THREADS = int(os.environ.get("VISSL_NEG_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)})
    return env


IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Raw (uncompressed) idx bytes: big-endian magic, big-endian dims, then uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx_gz(path: str | Path, array: np.ndarray, magic: int) -> None:
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(array, magic))


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 28, 28) uint8 images whose content depends on the label: class c is a bright
    block at one of 10 positions (a 5 x 2 grid) plus a stripe whose orientation depends on
    c % 2, on a noisy background, with a little jitter of the position."""
    n = len(labels)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.int32)
    for i, c in enumerate(labels):
        c = int(c)
        row = 2 + 12 * (c // 5) + int(rng.integers(-1, 2))
        col = 1 + 5 * (c % 5) + int(rng.integers(-1, 2))
        row, col = max(row, 0), max(col, 0)
        images[i, row : row + 10, col : col + 5] += 180
        if c % 2 == 0:
            images[i, 13:15, :] += 60
        else:
            images[i, :, 13:15] += 60
    return np.clip(images, 0, 255).astype(np.uint8)


def make_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return class_images(labels, rng), labels


def write_fmnist_fixture(root: str | Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> dict:
    """Write the four Fashion-MNIST idx .gz files into ``root`` (created if needed).

    Returns ``{"train": (images, labels), "test": (images, labels)}`` as the numpy arrays
    that were written (images uint8 (N, 28, 28), labels uint8 (N,))."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = make_split(n, rng)
        image_file, label_file = FILES[split]
        write_idx_gz(root / image_file, images, IMAGE_MAGIC)
        write_idx_gz(root / label_file, labels, LABEL_MAGIC)
        written[split] = (images, labels)
    return written


def nan_loss_at(trainer, step: int) -> None:
    """Makes ``trainer.train_step`` report a NaN loss for the (1-based) ``step``; the weights stay as trained."""
    train_step = trainer.train_step

    def patched(*args, **kwargs):
        out = train_step(*args, **kwargs)
        if trainer.step == step:
            out["loss"] = torch.full_like(out["loss"], float("nan"))
        return out

    trainer.train_step = patched


def tiny_overrides(root: str | Path, out_dir: str | Path) -> list[str]:
    """Dotted overrides for a fast CPU run on the fixture written by :func:`write_fmnist_fixture`."""
    return [
        f"data.root={root}",
        "model.backbone=resnet10t",
        "optim.batch_size=64",
        "negatives.size=100",  # deliberately not divisible by the batch size
        "train.epochs=2",
        "train.ckpt_every=3",
        "train.log_every=2",
        "train.progress=false",
        "train.report=false",  # report.png costs seconds per run; tests/test_report.py draws it
        "eval.knn_every=1",
        "eval.knn_k=20",
        f"train.out_dir={out_dir}",
    ]


# MoCo v3 on a 3-block test ViT (negatives from the batch, BN projector and predictor, symmetric
# loss), small enough for a CPU step: the gradient-caching tests' model
MOCOV3_TINY = [
    "negatives.source=batch",
    "model.backbone=test_vit3",
    "model.patch_size=7",
    "model.head_layers=3",
    "model.head_bn=true",
    "model.predictor_hidden=32",
    "model.predictor_last_bn=true",
    "model.dim=16",
    "loss.symmetric=true",
    "train.epochs=1",
    "eval.knn_every=-1",
]


def write_image_tree(
    split_dir: Path, classes: list[str], per_class: int, rng: np.random.Generator, size: tuple[int, int] = (40, 30)
) -> None:
    """``split_dir/<class>/<class>_<i>.JPEG``: class c is a solid colour that depends on its
    position in ``classes`` plus noise, so a linear probe can tell the classes apart."""
    from PIL import Image

    for c, name in enumerate(classes):
        folder = split_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(37 * c) % 256, (91 * c + 60) % 256, (53 * c + 120) % 256])
        for i in range(per_class):
            noise = rng.integers(-30, 31, size=(size[1], size[0], 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i}.JPEG", quality=90)


def write_imagenet_fixture(
    root: str | Path,
    classes: list[str] | None = None,
    train_per_class: int = 6,
    val_per_class: int = 2,
    corrupt: bool = True,
    seed: int = 0,
) -> dict:
    """An ILSVRC-2012 tree: ``root/train/<wnid>/*.JPEG`` and sorted ``root/val/<wnid>/*.JPEG``
    of tiny JPEGs; with ``corrupt`` one training file holds bytes that are not an image.
    Returns {"classes": [...], "corrupt": path or None}."""
    root = Path(root)
    classes = classes or ["n01440764", "n01443537", "n01484850", "n01491361"]
    rng = np.random.default_rng(seed)
    write_image_tree(root / "train", classes, train_per_class, rng)
    write_image_tree(root / "val", classes, val_per_class, rng)
    bad = None
    if corrupt:
        bad = root / "train" / classes[0] / f"{classes[0]}_corrupt.JPEG"
        bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG body" + bytes(range(64)))
    return {"classes": classes, "corrupt": bad}


def geo_overrides(root, out_dir, *extra) -> list[str]:
    """Dotted overrides for a fast CPU cross-view run on a ``write_cvusa_fixture`` tree
    (32² satellites, 16×64 panoramas); ``extra`` overrides any of them."""
    return [
        f"data.root={root}",
        "data.sat_size=32",
        "data.pano_size=[16,64]",
        "model.backbone=resnet10t",
        "optim.batch_size=8",
        "optim.lr=0.003",
        "sampling.neighbour_select=4",
        "sampling.neighbour_range=8",
        "sampling.gps_epochs=1",
        "sampling.mine_every=1",
        "train.epochs=3",
        "train.device=cpu",
        "train.progress=false",
        "train.report=false",
        "train.log_every=2",
        "train.ckpt_every=2",
        "eval.every=1",
        "eval.batch_size=16",
        f"train.out_dir={out_dir}",
        *extra,
    ]


# every cross-view view step off (the pair is only resized and normalised)
GEO_VIEWS_OFF = tuple(f"augment.{k}=0.0" for k in AUGMENT_PROBABILITIES)
