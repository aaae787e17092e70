"""Cross-view image sets decoded to uint8 at fixed sizes: pairs of a ground-level image
(panorama or drone photo) and an aerial image for training, and single-view image lists
(queries or references) for retrieval. The views are made on the device."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from vissl_neg.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def check_pano_size(pano_size: Sequence[int]) -> None:
    """A section's ``pano_size`` rule: [height, width] > 0, the width divisible by 4 (a quarter
    turn of the satellite rolls the panorama by W/4); ValueError naming the key."""
    if len(pano_size) != 2 or min(pano_size) <= 0:
        raise ValueError(f"pano_size must be [height, width] > 0, got {list(pano_size)}")
    if pano_size[1] % 4:
        raise ValueError(
            f"pano_size width {pano_size[1]} must be divisible by 4 (rotations roll the panorama by quarter turns)"
        )


def load_image(path: str, size: Sequence[int], what: str = "image") -> torch.Tensor:
    """An image file -> uint8 (3, H, W) resized to ``size`` (H, W); a one-line error naming
    the file (``what`` says which data set's image it is)."""
    if not Path(path).is_file():
        raise DataError(f"{what} '{path}' does not exist")
    try:
        image = decode_image(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].split(", ")[-1]  # torchvision prefixes its source location
        raise DataError(f"{what} '{path}' cannot be decoded ({reason})") from None
    if tuple(image.shape[-2:]) == tuple(size):  # the resize would be the identity
        return image.contiguous()
    return TF.resize(image, list(size), antialias=True).contiguous()


def list_files(folder: Path, what: str) -> set[str]:
    """The file names in ``folder`` (one directory listing, not one stat per file); a
    one-line error when the folder is missing."""
    if not folder.is_dir():
        raise DataError(f"{what} folder '{folder}' does not exist")
    return {e.name for e in os.scandir(folder) if e.is_file()}


def stack_items(items: list[tuple]) -> tuple:
    """A batch from dataset items: tensor columns stacked, other columns (ints, label lists)
    made one tensor each."""
    return tuple(torch.stack(col) if isinstance(col[0], torch.Tensor) else torch.tensor(col) for col in zip(*items))


class PairDataset(Dataset):
    """(ground uint8 (3, gh, gw), aerial uint8 (3, ah, aw), label, index) per pair; ``pairs``
    holds (label, ground path, aerial path). ``label`` is what the batch sampler keys on: the
    pair's position (CVACT), or its class (University-1652)."""

    def __init__(
        self,
        pairs: Sequence[tuple[int, str, str]],
        ground_size: Sequence[int],
        aerial_size: Sequence[int],
        what: str = "image",
    ):
        self.pairs = list(pairs)
        self.labels = [p[0] for p in self.pairs]
        self.ground_size, self.aerial_size = tuple(ground_size), tuple(aerial_size)
        self.what = what

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        label, ground, aerial = self.pairs[i]
        return (
            load_image(ground, self.ground_size, self.what),
            load_image(aerial, self.aerial_size, self.what),
            label,
            i,
        )

    def __getitems__(self, indices: list[int]):
        return stack_items([self[i] for i in indices])


class ImageListDataset(Dataset):
    """(image uint8 (3, h, w), label, index) per file: one side of a retrieval (the queries
    or the references), ``labels`` saying which references match which queries."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: Sequence[int], what: str = "image"):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels = list(paths), list(labels)
        self.size, self.what = tuple(size), what

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return load_image(self.paths[i], self.size, self.what), self.labels[i], i

    def __getitems__(self, indices: list[int]):
        return stack_items([self[i] for i in indices])


@dataclass
class Retrieval:
    """One evaluation of a cross-view split: queries ranked against references.

    Either ``pairs`` (a :class:`PairDataset`-like set whose row i gives query i, its ground
    view, and reference i, its aerial view: the true match of query i is reference i), or
    ``queries`` and ``references`` (:class:`ImageListDataset`), whose labels say which
    references match which queries. ``metric`` names the scoring function
    (``vissl_neg.geo.retrieval.METRICS``); ``options`` are its settings (e.g. the classes a
    protocol sets aside). ``name``: the prefix of its numbers when a split has several
    retrievals (University-1652's two directions), else empty."""

    name: str
    metric: str
    pairs: Dataset | None = None
    queries: ImageListDataset | None = None
    references: ImageListDataset | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.pairs is None) == (self.queries is None or self.references is None):
            raise ValueError("a Retrieval has either pairs, or queries and references")

    @property
    def num_queries(self) -> int:
        return len(self.pairs if self.pairs is not None else self.queries)  # type: ignore[arg-type]

    @property
    def num_references(self) -> int:
        return len(self.pairs if self.pairs is not None else self.references)  # type: ignore[arg-type]


@dataclass
class GpsSource:
    """Where a training set's GPS neighbours come from (``vissl_neg.geo.sampling.gps_table``
    turns it into {pair index: neighbour indices}):

    - ``"file"``: ``path``, a neighbour file (``vissl_neg.geo.sampling.read_neighbours``'s
      formats) whose ids are ``ids`` (pair i has id ``ids[i]``);
    - ``"euclidean"``: ``coords`` (N, 2) planar coordinates, e.g. UTM metres;
    - ``"haversine"``: ``coords`` (N, 2) latitude, longitude in degrees;
    - ``"vigor"``: ``split`` (a ``VigorSplit``): its positive satellites' coordinates, or ``path``,
      a table saved for the same mode (``vissl_neg.geo.sampling.load_vigor_neighbours``)."""

    kind: str
    path: Path | None = None
    ids: list | None = None
    coords: object = None
    split: object = None
