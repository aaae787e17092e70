"""In-memory uint8 image datasets that yield (image, label, index) and fetch whole batches."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images already decoded to uint8 (N, C, H, W) with labels (N,).

    ``__getitems__`` lets a DataLoader fetch a batch with one gather instead of N items.
    The index is returned so a memory bank can address the sample; labels are for
    evaluation and diagnostics only, training never reads them.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert images.dtype == torch.uint8 and images.dim() == 4 and len(images) == len(labels)
        self.images = images
        self.labels = labels

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], i

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx], idx
