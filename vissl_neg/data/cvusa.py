"""CVUSA (cross-view USA) on its real layout, as Sample4Geo reads it:
``ROOT/splits/train-19zl.csv`` and ``val-19zl.csv`` (no header; satellite path, panorama
path, annotation path, relative to ROOT), satellite tiles under ``bingmap/``, panoramas
under ``streetview/``; a sample's id is the number in its satellite file name. Workers
decode both images to uint8 at fixed sizes (satellite 384 x 384, panorama 140 x 768 by
default); the views are made on the device.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from vissl_neg.data.pairs import GpsSource, PairDataset, Retrieval, check_pano_size
from vissl_neg.data.section import GeoDataConfig
from vissl_neg.errors import DataError
from vissl_neg.rules import PositiveInt

WHAT = "CVUSA image"  # how errors name an image of this data set
SPLIT_FILES = {"train": "train-19zl.csv", "test": "val-19zl.csv"}
GPS_FILE = "split_locations/all.csv"


def read_split(root: Path, split: str) -> list[tuple[int, str, str]]:
    """-> [(id, satellite path, panorama path)] of a split file, paths absolute."""
    if not root.is_dir():
        raise DataError(f"CVUSA root '{root}' does not exist (data.root)")
    path = root / "splits" / SPLIT_FILES[split]
    if not path.is_file():
        raise DataError(f"CVUSA split file '{path}' does not exist")
    rows = []
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) < 2:
                raise DataError(f"'{path}' line {line_no}: expected 'satellite,panorama,annotation' paths")
            sat, pano = row[0].strip(), row[1].strip()
            match = re.search(r"(\d+)\D*$", Path(sat).stem)
            if match is None:
                raise DataError(f"'{path}' line {line_no}: no id number in the satellite file name '{sat}'")
            rows.append((int(match.group(1)), str(root / sat), str(root / pano)))
    if not rows:
        raise DataError(f"CVUSA split file '{path}' lists no pairs")
    return rows


class CVUSADataset(PairDataset):
    """(panorama uint8 (3, ph, pw), satellite uint8 (3, s, s), id, index) per pair of a split."""

    def __init__(self, root: str | Path, split: str, sat_size: int = 384, pano_size: tuple[int, int] = (140, 768)):
        pairs = read_split(Path(root), split)
        super().__init__([(idx, pano, sat) for idx, sat, pano in pairs], pano_size, (sat_size, sat_size), WHAT)
        self.ids = self.labels


@dataclass
class CVUSAData(GeoDataConfig):
    """``data.name: cvusa``: the pairs of ``splits/train-19zl.csv`` / ``val-19zl.csv`` at fixed sizes."""

    sat_size: PositiveInt = 384
    pano_size: list[int] = field(default_factory=lambda: [140, 768])  # height, width
    # GPS neighbours: auto (ROOT/split_locations/all.csv when present) | none (random batches) | a path to
    # CVUSA's all.csv, a CSV of id,lat,lon or a {id: [neighbour ids]} pickle
    neighbours: str = "auto"

    title = "CVUSA"

    def check(self) -> None:
        check_pano_size(self.pano_size)

    def build(self, split: str, root: str | Path | None = None) -> CVUSADataset:
        """The pairs of ``split`` at this section's sizes (``root`` overrides data.root)."""
        return CVUSADataset(root or self.root, split, self.sat_size, tuple(self.pano_size))

    @property
    def ground_size(self) -> tuple[int, int]:
        return (self.pano_size[0], self.pano_size[1])

    def retrievals(self, split: str, root: str | Path | None = None) -> list[Retrieval]:
        """One retrieval: each panorama against the split's satellite tiles, its own the match."""
        return [Retrieval("", "recall", pairs=self.build(split, root))]

    def gps(self, train_set: CVUSADataset) -> GpsSource | None:
        """data.neighbours: auto = ROOT/split_locations/all.csv if it exists, none = no file, else the path."""
        if self.neighbours == "none":
            return None
        path = Path(self.root) / GPS_FILE if self.neighbours == "auto" else Path(self.neighbours)
        if self.neighbours == "auto" and not path.is_file():
            return None
        return GpsSource("file", path=path, ids=train_set.ids)

    def protocol(self, split: str) -> str:
        name = {"test": "CVUSA test (val-19zl.csv)", "train": "CVUSA train (train-19zl.csv)"}[split]
        return (
            f"{name}: ground panoramas against the split's satellite tiles, one true match each; R@1% with k = R // 100"
        )
