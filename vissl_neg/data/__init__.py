"""Datasets on their real on-disk layouts, decoded to uint8; resumable loaders.

Each data set is a module holding its config section (``vissl_neg.data.section``) and one line in
a registry here: ``DATASETS`` for the MoCo task, ``GEO_DATASETS`` for the cross-view task.
"""

from __future__ import annotations

from vissl_neg.data.cvact import CVACTData
from vissl_neg.data.cvusa import CVUSAData
from vissl_neg.data.datasets import TensorImageDataset
from vissl_neg.data.fashion_mnist import FashionMNISTData, load_fashion_mnist, read_idx
from vissl_neg.data.image_folder import (
    IMAGENET100_CLASSES,
    SPLIT_DIRS,
    ImageFolderData,
    ImageFolderDataset,
    ImageNet100Data,
    ImageNetData,
    read_class_list,
    scan_class_folders,
)
from vissl_neg.data.loader import ResumableBatchSampler, make_loader, to_device
from vissl_neg.data.section import DataConfig, DataSection, GeoDataConfig
from vissl_neg.data.university1652 import University1652Data
from vissl_neg.data.vigor import VigorData

# data.name -> its section class, for the MoCo task
DATASETS: dict[str, type[DataConfig]] = {
    "fashion_mnist": FashionMNISTData,
    "imagenet": ImageNetData,
    "imagenet100": ImageNet100Data,
    "image_folder": ImageFolderData,
}
# data.name -> its section class, for the cross-view task (task: geo)
GEO_DATASETS: dict[str, type[GeoDataConfig]] = {
    "cvusa": CVUSAData,
    "cvact": CVACTData,
    "vigor": VigorData,
    "university1652": University1652Data,
}


def build_dataset(cfg: DataSection, split: str):
    """``cfg`` is the ``data`` section; ``split`` is 'train' or 'test'."""
    return cfg.build(split)


__all__ = [
    "DATASETS",
    "GEO_DATASETS",
    "IMAGENET100_CLASSES",
    "SPLIT_DIRS",
    "CVACTData",
    "CVUSAData",
    "DataConfig",
    "DataSection",
    "FashionMNISTData",
    "GeoDataConfig",
    "ImageFolderData",
    "ImageFolderDataset",
    "ImageNet100Data",
    "ImageNetData",
    "ResumableBatchSampler",
    "TensorImageDataset",
    "University1652Data",
    "VigorData",
    "build_dataset",
    "load_fashion_mnist",
    "make_loader",
    "read_class_list",
    "read_idx",
    "scan_class_folders",
    "to_device",
]
