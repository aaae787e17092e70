"""Datasets on their real on-disk layouts, decoded to uint8; resumable loaders."""

from __future__ import annotations

from vissl_neg.data.datasets import TensorImageDataset
from vissl_neg.data.fashion_mnist import load_fashion_mnist, read_idx
from vissl_neg.data.image_folder import (
    IMAGENET100_CLASSES,
    SPLIT_DIRS,
    ImageFolderDataset,
    read_class_list,
    scan_class_folders,
)
from vissl_neg.data.loader import ResumableBatchSampler, make_loader, to_device


def _fashion_mnist(cfg, split: str):
    images, labels = load_fashion_mnist(cfg.root, split)
    if split == "train" and cfg.subset:
        images, labels = images[: cfg.subset], labels[: cfg.subset]
    return TensorImageDataset(images, labels)


def _folder_dataset(cfg, split: str, default_classes=None):
    from pathlib import Path

    from vissl_neg.errors import DataError

    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"dataset root '{root}' does not exist (data.root); expected {root}/train/<class>/<image> "
                        f"and {root}/val/<class>/<image>")
    class_file = cfg.classes or default_classes
    classes = read_class_list(class_file) if class_file else None
    files, labels, names = scan_class_folders(root / SPLIT_DIRS[split], classes)
    if split == "train" and cfg.subset:
        files, labels = files[: cfg.subset], labels[: cfg.subset]
    return ImageFolderDataset(files, labels, names, cfg.decode_size, cfg.draft)


def _imagenet100(cfg, split: str):
    return _folder_dataset(cfg, split, IMAGENET100_CLASSES)


DATASETS = {
    "fashion_mnist": _fashion_mnist,
    "imagenet": _folder_dataset,  # ILSVRC-2012: ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG
    "imagenet100": _imagenet100,  # CMC's 100 classes over the same tree (data/imagenet100.txt)
    "image_folder": _folder_dataset,  # any ROOT/{train,val}/<class>/<image> tree
}


def build_dataset(cfg, split: str):
    """``cfg`` is the ``data`` section; ``split`` is 'train' or 'test'."""
    return DATASETS[cfg.name](cfg, split)


__all__ = [
    "DATASETS",
    "ImageFolderDataset",
    "ResumableBatchSampler",
    "TensorImageDataset",
    "build_dataset",
    "load_fashion_mnist",
    "make_loader",
    "read_idx",
    "to_device",
]
