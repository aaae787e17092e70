"""Fashion-MNIST from its four idx .gz files (Debian's ``dataset-fashion-mnist`` layout)."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vissl_neg.data.datasets import TensorImageDataset
from vissl_neg.data.section import DataConfig
from vissl_neg.errors import DataError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
INSTALL_HINT = "install it with 'apt-get install -y dataset-fashion-mnist' or set data.root to a folder with the four idx .gz files"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) idx file of unsigned bytes into an array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing file '{path}'; {INSTALL_HINT}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"'{path}' is truncated or corrupt ({exc.__class__.__name__}: {exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"'{path}' is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"'{path}' is truncated: header cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"'{path}' is truncated or corrupt: {len(raw)} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> images uint8 (N, 1, 28, 28), labels int64 (N,)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST folder '{root}' does not exist; {INSTALL_HINT}")
    image_file, label_file = FILES[split]
    images = read_idx(root / image_file)
    labels = read_idx(root / label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"'{root}': {image_file} has shape {images.shape} and {label_file} {labels.shape}; expected (N, H, W) and (N,)"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


@dataclass
class FashionMNISTData(DataConfig):
    """``data.name: fashion_mnist``: the four idx .gz files in ``root``, decoded into memory."""

    title = "Fashion-MNIST"
    hub_id = "zalando-datasets/fashion_mnist"

    def build(self, split: str) -> TensorImageDataset:
        images, labels = load_fashion_mnist(self.root, split)
        if split == "train" and self.subset:
            images, labels = images[: self.subset], labels[: self.subset]
        return TensorImageDataset(images, labels)
