"""ImageNet-style class-folder trees (ILSVRC-2012 ``train/<wnid>/*.JPEG`` and sorted
``val/<wnid>/*.JPEG``; ImageNet-100 as a class list over the same tree; any ImageFolder
tree), decoded in the loader workers to fixed-size uint8.

Decoding: libjpeg-turbo via torchvision.io, or PIL's ``draft`` (the JPEG decoder produces the
image at 1/2, 1/4 or 1/8 scale directly) for JPEGs at least twice the target; then the
shorter side is resized to ``size`` and the centre ``size`` x ``size`` kept (evaluation
views, and training views with ``data.crops: square``, which are cut from that on the device).
With ``data.crops: image`` (:meth:`ImageFolderDataset.cropped_view`) the worker instead draws
each training view's RandomResizedCrop box over the whole image, as torchvision's
``RandomResizedCrop.get_params`` does, decodes the JPEG at the smallest scale that keeps every
box at least ``out`` pixels on its shorter side, and resizes each box to ``out`` x ``out``;
flip, colour and blur follow on the device.
An unreadable image is skipped with a warning naming it: the next readable image of the
dataset takes its place, so batches keep their size, and ``skipped`` counts them across
worker processes.
"""

from __future__ import annotations

import copy
import io
import math
import multiprocessing
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as decode_any
from torchvision.transforms.v2 import functional as TF

from vissl_neg.augment import ops
from vissl_neg.data.section import DataConfig
from vissl_neg.errors import DataError
from vissl_neg.rules import PositiveInt

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
IMAGENET100_CLASSES = Path(__file__).with_name("imagenet100.txt")
SPLIT_DIRS = {"train": "train", "test": "val"}
VAL_HINT = (
    "sort it into val/<wnid>/ class folders first (e.g. with the widely used valprep.sh, or from LOC_val_solution.csv)"
)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_class_list(path: str | Path) -> list[str]:
    """One class folder name per line; blank lines and '#' comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class list '{path}' does not exist")
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"class list '{path}' names no classes")
    if len(set(names)) != len(names):
        raise DataError(f"class list '{path}' names a class twice")
    return names


def scan_class_folders(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """-> (image paths, labels (N,) int64, class names) of ``split_dir/<class>/<image>``,
    classes sorted by name (or in the order of ``classes``)."""
    if not split_dir.is_dir():
        raise DataError(f"'{split_dir}' does not exist (expected {split_dir}/<class>/<image> folders)")
    entries = list(os.scandir(split_dir))
    folders = sorted(e.name for e in entries if e.is_dir())
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    if not folders:
        if loose:
            raise DataError(f"'{split_dir}' holds {len(loose)} images but no class folders; {VAL_HINT}")
        raise DataError(f"'{split_dir}' holds no class folders")
    if classes is None:
        classes = folders
    else:
        missing = [c for c in classes if c not in set(folders)]
        if missing:
            more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            raise DataError(
                f"'{split_dir}' lacks {len(missing)} of the {len(classes)} listed classes: "
                f"{', '.join(missing[:3])}{more}"
            )
    files, labels = [], []
    for label, name in enumerate(classes):
        images = sorted(e.path for e in os.scandir(split_dir / name) if e.is_file() and _is_image(e.name))
        if not images:
            raise DataError(f"class folder '{split_dir / name}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.extend(images)
        labels.extend([label] * len(images))
    return files, np.asarray(labels, dtype=np.int64), list(classes)


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, size, size): shorter side resized to ``size``, centre crop."""
    image = TF.resize(image, size, antialias=True)
    return TF.center_crop(image, [size, size]).contiguous()


def decode_image(path: str, size: int, draft: bool = True) -> torch.Tensor:
    """An image file -> uint8 (3, size, size): shorter side resized to ``size``, centre crop.

    libjpeg-turbo through ``torchvision.io`` (2x PIL's speed for ImageNet-sized JPEGs, measured
    in benchmarks/input_pipeline.py); with ``draft``, a JPEG at least twice the target on its
    shorter side is decoded by PIL at a reduced scale instead (1/2, 1/4 or 1/8 of the pixels).
    Other formats fall back to PIL. Raises OSError for an unreadable file."""
    raw = Path(path).read_bytes()  # OSError (e.g. a vanished file) is handled like a corrupt one
    if draft:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format == "JPEG" and min(img.size) >= 2 * size:
                img.draft("RGB", (size, size))  # the decoder scales by 1/2^k while both sides stay >= size
                return square(_pil_rgb(img), size)
    try:
        image = decode_any(_as_tensor(raw), mode=ImageReadMode.RGB)
    except RuntimeError:
        with Image.open(io.BytesIO(raw)) as img:
            image = _pil_rgb(img)
    return square(image, size)


def draw_boxes(width: int, height: int, crops: list[tuple], generator: torch.Generator) -> torch.Tensor:
    """One RandomResizedCrop box per ``(scale, ratio)`` of ``crops`` over a ``width`` x ``height``
    image -> (V, 4) float (x0, y0, w, h) in whole pixels: torchvision's ``get_params``
    (:func:`vissl_neg.augment.ops.sample_boxes`), drawn with ``generator``."""
    return torch.cat(
        [ops.sample_boxes(1, height, width, tuple(scale), tuple(ratio), "cpu", generator)[0] for scale, ratio in crops]
    )


def _reduced_scale(boxes: torch.Tensor, out: int) -> float:
    """The fraction of full resolution at which every box still has ``out`` pixels on its shorter side."""
    return min(1.0, out / float(boxes[:, 2:].min()))


def crop_views(image: torch.Tensor, boxes: torch.Tensor, full: tuple[int, int], out: int) -> torch.Tensor:
    """uint8 (3, h, w) decoded at some scale of a ``full`` = (W, H) image; boxes (V, 4) in full-size
    pixels -> uint8 (V, 3, out, out), each box resized with antialiasing."""
    sx, sy = image.shape[-1] / full[0], image.shape[-2] / full[1]
    views = []
    for x0, y0, w, h in boxes.tolist():
        left, top = round(x0 * sx), round(y0 * sy)
        width = max(1, min(round(w * sx), image.shape[-1] - left))
        height = max(1, min(round(h * sy), image.shape[-2] - top))
        views.append(TF.resized_crop(image, top, left, height, width, [out, out], antialias=True))
    return torch.stack(views)


def decode_views(
    path: str, crops: list[tuple], out: int, generator: torch.Generator, draft: bool = True
) -> torch.Tensor:
    """An image file -> uint8 (V, 3, out, out): a RandomResizedCrop box per entry of ``crops``
    drawn over the whole image (:func:`draw_boxes`), each resized to ``out``. With ``draft`` a
    JPEG is decoded at the smallest 1/2^k scale that keeps every box ``out`` pixels wide (PIL's
    reduced-size decoding) when that scale is 1/2 or less, else at full size by libjpeg-turbo
    through torchvision.io. Raises OSError for an unreadable file."""
    raw = Path(path).read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        full = img.size
        boxes = draw_boxes(full[0], full[1], crops, generator)
        f = _reduced_scale(boxes, out)
        if draft and img.format == "JPEG" and f <= 0.5:  # else libjpeg-turbo through torchvision, faster
            img.draft("RGB", (math.ceil(full[0] * f), math.ceil(full[1] * f)))
            return crop_views(_pil_rgb(img), boxes, full, out)
    try:
        image = decode_any(_as_tensor(raw), mode=ImageReadMode.RGB)
    except RuntimeError:
        with Image.open(io.BytesIO(raw)) as img:
            image = _pil_rgb(img)
    return crop_views(image, boxes, full, out)


def image_size_of(raw: bytes) -> tuple[int, int]:
    """(W, H) from an encoded image's header (no decoding)."""
    with Image.open(io.BytesIO(raw)) as img:
        return img.size


def _as_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _file_bytes(path: str) -> torch.Tensor:
    """The encoded file as a uint8 1-D tensor (for decoding on the device)."""
    return _as_tensor(Path(path).read_bytes())


def _pil_rgb(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


class ImageFolderDataset(Dataset):
    """(image uint8 (3, size, size), label, index) from a class-folder tree."""

    in_chans = 3

    def __init__(self, files: list[str], labels: np.ndarray, classes: list[str], size: int, draft: bool = True):
        self.files = files
        self.labels = torch.from_numpy(labels)
        self.classes = classes
        self.size = size
        self.draft = draft
        self.skipped = multiprocessing.Value("l", 0)
        self.encoded = False  # True: items are the files' encoded bytes, decoded later on the device
        self.crops: list[tuple] | None = None  # cropped_view: (scale, ratio) of each view
        self.out = size

    def encoded_view(self) -> ImageFolderDataset:
        """The same dataset yielding encoded bytes (uint8 1-D tensors) for ``DeviceJpegDecoder``."""
        view = copy.copy(self)
        view.encoded = True
        return view

    def cropped_view(self, crops: list[tuple], out: int) -> ImageFolderDataset:
        """The same dataset yielding training views: for each ``(scale, ratio)`` of ``crops`` a
        RandomResizedCrop box drawn over the whole image and resized to ``out`` -> images uint8
        (B, V, 3, out, out). It takes the keyed items of a ``ResumableBatchSampler(keyed=True)``:
        each item's boxes come from a generator seeded by (seed, epoch, index), so they do not
        depend on the worker that loads it, and a resumed run draws the same boxes. Combined with
        ``encoded_view`` it yields the bytes and the boxes (B, V, 4) for the device decoder."""
        view = copy.copy(self)
        view.crops, view.out = [(tuple(s), tuple(r)) for s, r in crops], out
        return view

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int, key: int | None = None):
        """Decode item i, or the next readable one; -> (image, the index that was used), or
        (bytes, index, boxes) for an encoded cropped view."""
        gen = None if key is None else torch.Generator().manual_seed(key)
        for step in range(len(self.files)):
            j = (i + step) % len(self.files)
            try:
                if self.crops is not None and self.encoded:
                    raw = Path(self.files[j]).read_bytes()
                    width, height = image_size_of(raw)
                    return _as_tensor(raw), j, draw_boxes(width, height, self.crops, gen)
                if self.encoded:
                    return _file_bytes(self.files[j]), j
                if self.crops is not None:
                    return decode_views(self.files[j], self.crops, self.out, gen, self.draft), j
                return decode_image(self.files[j], self.size, self.draft), j
            except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
                warnings.warn(
                    f"skipping unreadable image '{self.files[j]}' ({exc.__class__.__name__}: {exc})", stacklevel=2
                )
                with self.skipped.get_lock():
                    self.skipped.value += 1
        raise DataError(f"no readable image in the {len(self.files)} files of the dataset")

    def __getitem__(self, i: int):
        image, j = self._load(i)
        return image, self.labels[j], j

    def __getitems__(self, indices: list):
        """A batch of indices (or, for a cropped view, of keyed ``(index, key)`` items) ->
        (images, labels, used indices) [+ boxes (B, V, 4) for an encoded cropped view]."""
        if self.crops is not None:
            if not indices or not isinstance(indices[0], (tuple, list)):
                raise DataError(
                    "a cropped image-folder view takes (index, key) items: use ResumableBatchSampler(keyed=True)"
                )
            loaded = [self._load(int(i), int(k)) for i, k in indices]
        else:  # keyed items of a ResumableBatchSampler(keyed=True): the key is for cropped views only
            loaded = [self._load(i[0] if isinstance(i, (tuple, list)) else i) for i in indices]
        used = torch.tensor([item[1] for item in loaded], dtype=torch.long)
        images = [item[0] for item in loaded]
        batch = (images if self.encoded else torch.stack(images)), self.labels[used], used
        if self.crops is not None and self.encoded:
            return (*batch, torch.stack([item[2] for item in loaded]))
        return batch


@dataclass
class ImageFolderData(DataConfig):
    """``data.name: image_folder``: any ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>`` tree."""

    name: str = "image_folder"
    root: str = "data/images"
    classes: str = ""  # a class-list file: only these class folders, in this order ("" = every folder)
    decode_size: PositiveInt = 256  # workers decode to this shorter side, centre crop
    draft: bool = True  # reduced-size JPEG decoding (PIL draft)
    decode_on: Literal["workers", "device"] = "workers"  # device: torchvision decode_jpeg (nvJPEG on CUDA)
    # training views (pretraining and the sgd probe): square = cut on the device from the decode_size centre
    # square | image = each view's RandomResizedCrop box drawn over the whole image in the loader worker (the
    # reference's), decoded and resized there; evaluation views stay resize + centre crop
    crops: Literal["square", "image"] = "square"

    title = "an image folder"
    eval_split = "val"
    default_classes: ClassVar[Path | None] = None  # the class list used when ``classes`` is empty

    @property
    def whole_image_crops(self) -> bool:
        return self.crops == "image"

    @property
    def decodes_on_device(self) -> bool:
        return self.decode_on == "device"

    def build(self, split: str) -> ImageFolderDataset:
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(
                f"dataset root '{root}' does not exist (data.root); expected {root}/train/<class>/<image> "
                f"and {root}/val/<class>/<image>"
            )
        class_file = self.classes or self.default_classes
        classes = read_class_list(class_file) if class_file else None
        files, labels, names = scan_class_folders(root / SPLIT_DIRS[split], classes)
        if split == "train" and self.subset:
            files, labels = files[: self.subset], labels[: self.subset]
        return ImageFolderDataset(files, labels, names, self.decode_size, self.draft)


@dataclass
class ImageNetData(ImageFolderData):
    """``data.name: imagenet``: ILSVRC-2012, ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG``."""

    name: str = "imagenet"
    root: str = "data/imagenet"

    title = "ImageNet-1k"
    hub_id = "ILSVRC/imagenet-1k"
    eval_split = "validation"


@dataclass
class ImageNet100Data(ImageNetData):
    """``data.name: imagenet100``: CMC's 100 classes over the ImageNet tree (``data/imagenet100.txt``)."""

    name: str = "imagenet100"

    title = "ImageNet-100 (CMC's 100 ImageNet-1k classes)"
    default_classes = IMAGENET100_CLASSES
