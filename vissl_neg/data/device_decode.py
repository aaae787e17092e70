"""JPEG decoding on the training device (``data.decode_on: device``): loader workers only
read the encoded bytes; ``torchvision.io.decode_jpeg`` decodes the batch there (nvJPEG on
CUDA, libjpeg-turbo on the CPU), then each image's shorter side is resized to
``data.decode_size`` and the centre square kept, as the worker path does; or, with
``data.crops: image``, the boxes the loader workers drew over each whole image are cut out
and resized to the view size there. Images differ in size until that resize, so this step
walks the batch image by image (outside the training step). An unreadable file is replaced by a readable image of the same batch, with a warning
naming it, and counted in the dataset's ``skipped``.
"""

from __future__ import annotations

import warnings

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from vissl_neg.data.image_folder import crop_views, square
from vissl_neg.errors import DataError


class DeviceJpegDecoder:
    def __init__(self, dataset, size: int, device: torch.device):
        self.dataset = dataset
        self.size = size
        self.device = device

    def _decode_each(self, encoded: list[torch.Tensor], indices: torch.Tensor) -> list[torch.Tensor | None]:
        out = []
        for data, index in zip(encoded, indices.tolist()):
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError as exc:
                warnings.warn(f"skipping unreadable image '{self.dataset.files[index]}' ({exc})", stacklevel=3)
                with self.dataset.skipped.get_lock():
                    self.dataset.skipped.value += 1
                out.append(None)
        return out

    def __call__(
        self, encoded: list[torch.Tensor], indices: torch.Tensor, boxes: torch.Tensor | None = None, out: int = 0
    ) -> torch.Tensor:
        """Encoded bytes (list of B uint8 1-D tensors) -> uint8 (B, 3, size, size) on the device;
        with ``boxes`` (B, V, 4) in full-image pixels, (B, V, 3, out, out): each box resized to ``out``."""
        try:
            images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one bad file fails the batched call: decode one by one
            images = self._decode_each(encoded, indices)
        if boxes is None:
            squares = [None if im is None else square(im, self.size) for im in images]
        else:
            squares = [
                None if im is None else crop_views(im, b, (im.shape[-1], im.shape[-2]), out)
                for im, b in zip(images, boxes.cpu())
            ]
        good = next((sq for sq in squares if sq is not None), None)
        if good is None:
            raise DataError(f"no readable image in a batch of {len(squares)}")
        return torch.stack([good if sq is None else sq for sq in squares])
