"""Datasets on their real on-disk layouts, decoded to uint8; resumable loaders."""

from __future__ import annotations

from vissl_neg.data.datasets import TensorImageDataset
from vissl_neg.data.fashion_mnist import load_fashion_mnist, read_idx
from vissl_neg.data.loader import ResumableBatchSampler, make_loader, to_device


def _fashion_mnist(cfg, split: str):
    images, labels = load_fashion_mnist(cfg.root, split)
    if split == "train" and cfg.subset:
        images, labels = images[: cfg.subset], labels[: cfg.subset]
    return TensorImageDataset(images, labels)


DATASETS = {"fashion_mnist": _fashion_mnist}


def build_dataset(cfg, split: str):
    """``cfg`` is the ``data`` section; ``split`` is 'train' or 'test'."""
    return DATASETS[cfg.name](cfg, split)


__all__ = [
    "DATASETS",
    "ResumableBatchSampler",
    "TensorImageDataset",
    "build_dataset",
    "load_fashion_mnist",
    "make_loader",
    "read_idx",
    "to_device",
]
