"""VIGOR (Zhu et al., CVPR 2021) on its release layout: four US cities, each satellite tile
covering the panoramas near its centre (its *positive*) and, with half-tile overlap, three
neighbouring tiles covering them off-centre (*semi-positives*).

On disk (the official release, ``VIGOR/data/DATASET.md``)::

    ROOT/<City>/panorama/<prefix>,<lat>,<lon>,.jpg
    ROOT/<City>/satellite/satellite_<lat>_<lon>.png
    ROOT/splits/<City>/satellite_list.txt                 one satellite file name a line
    ROOT/splits/<City>/same_area_balanced_train.txt       label lines (below)
    ROOT/splits/<City>/same_area_balanced_test.txt
    ROOT/splits/<City>/pano_label_balanced.txt            every panorama of the city

Sample4Geo reads a rearranged tree instead, ``ROOT/satellite/<City>/`` and
``ROOT/ground/<City>/`` with the same ``splits/``; either is detected (``layout="auto"``, the
official one wins when both are present) or named.

A label line has 13 whitespace-separated fields: the panorama file name, then four times a
satellite file name and its offset ``dy dx`` in pixels of the original 640 px tile: the
positive first, then the three semi-positives. ``dy`` is positive when the panorama lies
south of the tile's centre, ``dx`` positive when it lies west (the panorama sits at pixel
``(320 + dy, 320 - dx)`` of the tile; VIGOR's ``evaluate_from_npy.py``).

Modes: ``same`` trains on ``same_area_balanced_train.txt`` and tests on
``same_area_balanced_test.txt`` of all four cities; ``cross`` trains on
``pano_label_balanced.txt`` of NewYork and Seattle and tests on that of Chicago and
SanFrancisco. A split's satellites are the concatenated ``satellite_list.txt`` of its cities
in :data:`VIGOR_CITIES` order (Sample4Geo's order), and every satellite index below is a
position in that list, so indices depend on (mode, split).

Public names (P panoramas, S satellites of the split's cities):

- :data:`VIGOR_CITIES`, :data:`MODE_CITIES` (mode -> split -> cities), :func:`label_file_name`.
- :func:`read_vigor` ``(root, mode, split, cities=None, layout="auto") -> VigorSplit``.
- :class:`VigorSplit`: ``sat_names``/``sat_paths`` (S), ``pano_names``/``pano_paths`` (P),
  ``labels`` long (P, 4) = [positive, semi1, semi2, semi3] satellite indices, ``offsets``
  float32 (P, 4, 2) = their ``(dy, dx)``; ``positives`` (P,); ``pairs_by_sat()``
  {satellite: [panorama indices]}; ``positive_sats()`` sorted unique positives (the train
  reference set for mining); ``sat_latlon(indices)`` float64 (n, 2) degrees from the file
  names; ``fingerprint()``.
- :func:`satellite_latlon`, :func:`panorama_latlon`: coordinates in a file name.
- Datasets of uint8 images decoded at fixed sizes (panorama 384 x 768, satellite 384 x 384
  by default), each with ``__getitems__`` (a batch of stacked tensors):
  :class:`VigorPairs` (pano (3, ph, pw), sat (3, s, s), positive satellite index, pair
  index) over the training pairs, one per panorama; :class:`VigorQueries` (pano, labels (4,),
  index); :class:`VigorReferences` (sat, satellite index, index) over all satellites of the
  split's cities or only the positives (``positives_only=True``, the mining references).

Every missing root, folder, split file or image, malformed line, unknown city or mode is
one :class:`~vissl_neg.errors.DataError` line naming it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch

from vissl_neg.data.pairs import GpsSource, ImageListDataset, PairDataset, Retrieval, check_pano_size
from vissl_neg.data.section import GeoDataConfig
from vissl_neg.errors import DataError
from vissl_neg.rules import PositiveInt

VIGOR_CITIES: tuple[str, ...] = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
Mode = Literal["same", "cross"]
MODES: tuple[str, ...] = get_args(Mode)
SPLITS = ("train", "test")
MODE_CITIES: dict[str, dict[str, tuple[str, ...]]] = {
    "same": {"train": VIGOR_CITIES, "test": VIGOR_CITIES},
    "cross": {"train": ("NewYork", "Seattle"), "test": ("Chicago", "SanFrancisco")},
}
Layout = Literal["auto", "official", "reference"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
FOUND_LAYOUTS = LAYOUTS[1:]  # the layouts a tree can have (official first: it wins when both exist)
LABEL_FIELDS = 13
SAT_NAME = re.compile(r"^satellite_([-+]?\d+(?:\.\d*)?)_([-+]?\d+(?:\.\d*)?)\.\w+$")


def label_file_name(mode: str, split: str) -> str:
    """The label file a (mode, split) reads in each of its cities."""
    return f"same_area_balanced_{split}.txt" if mode == "same" else "pano_label_balanced.txt"


def satellite_latlon(name: str) -> tuple[float, float] | None:
    """``satellite_<lat>_<lon>.<ext>`` -> (lat, lon) in degrees; None if the name is not one."""
    match = SAT_NAME.match(name)
    return (float(match.group(1)), float(match.group(2))) if match else None


def panorama_latlon(name: str) -> tuple[float, float] | None:
    """``<prefix>,<lat>,<lon>,.jpg`` -> (lat, lon) in degrees; None if the name is not one."""
    parts = name.split(",")
    try:
        return (float(parts[-3]), float(parts[-2])) if len(parts) >= 4 else None
    except ValueError:
        return None


def city_folders(root: Path, city: str, layout: str) -> tuple[Path, Path]:
    """(panorama folder, satellite folder) of a city in a layout."""
    if layout == "official":
        return root / city / "panorama", root / city / "satellite"
    return root / "ground" / city, root / "satellite" / city


def detect_layout(root: Path, cities: Sequence[str], layout: str = "auto") -> str:
    """'official' or 'reference': the layout whose folders exist for every city."""
    if layout not in LAYOUTS:
        raise DataError(f"VIGOR layout '{layout}' must be one of {', '.join(LAYOUTS)}")
    candidates = FOUND_LAYOUTS if layout == "auto" else (layout,)
    for option in candidates:
        if all(p.is_dir() for city in cities for p in city_folders(root, city, option)):
            return option
    first = candidates[0]
    missing = next(p for city in cities for p in city_folders(root, city, first) if not p.is_dir())
    hint = (
        f" (nor the rearranged {root}/ground/<City>/ and {root}/satellite/<City>/ that Sample4Geo reads)"
        if layout == "auto"
        else ""
    )
    raise DataError(f"VIGOR folder '{missing}' does not exist{hint}")


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DataError(f"VIGOR split file '{path}' does not exist")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                fields = line.split()
                if fields:
                    rows.append((line_no, fields))
    except UnicodeDecodeError:
        raise DataError(f"VIGOR split file '{path}' is not a text file") from None
    if not rows:
        raise DataError(f"VIGOR split file '{path}' is empty")
    return rows


def read_satellite_list(path: Path) -> list[str]:
    """A city's ``satellite_list.txt`` -> its satellite file names, in file order."""
    names = []
    for line_no, fields in _read_lines(path):
        if len(fields) != 1:
            raise DataError(f"'{path}' line {line_no}: expected one satellite file name, got {len(fields)} fields")
        names.append(fields[0])
    return names


def read_label_file(path: Path) -> list[tuple[int, str, list[str], list[tuple[float, float]]]]:
    """A label file -> [(line number, panorama, [positive, semi1, semi2, semi3], [(dy, dx)] * 4)]."""
    rows = []
    for line_no, fields in _read_lines(path):
        if len(fields) != LABEL_FIELDS:
            raise DataError(
                f"'{path}' line {line_no}: expected {LABEL_FIELDS} fields (panorama, then satellite dy dx for the "
                f"positive and three semi-positives), got {len(fields)}"
            )
        sats = fields[1::3]
        try:
            offsets = [(float(fields[i + 1]), float(fields[i + 2])) for i in (1, 4, 7, 10)]
        except ValueError:
            raise DataError(f"'{path}' line {line_no}: a pixel offset is not a number") from None
        rows.append((line_no, fields[0], sats, offsets))
    return rows


def _check_choice(what: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise DataError(f"VIGOR {what} '{value}' must be one of {', '.join(options)}")


@dataclass
class VigorSplit:
    """One (mode, split) of VIGOR read from its split files (no image is opened).

    ``labels`` long (P, 4): [positive, semi1, semi2, semi3] satellite indices;
    ``offsets`` float32 (P, 4, 2): their (dy, dx) pixel offsets as written in the file.
    ``list_files[i]`` is the ``satellite_list.txt`` that names satellite i."""

    root: Path
    layout: str
    mode: str
    split: str
    cities: tuple[str, ...]
    sat_names: list[str]
    sat_paths: list[str]
    pano_names: list[str]
    pano_paths: list[str]
    labels: torch.Tensor
    offsets: torch.Tensor
    list_files: list[str] = field(repr=False)

    @property
    def positives(self) -> torch.Tensor:
        """long (P,): each panorama's positive satellite index."""
        return self.labels[:, 0]

    def pairs_by_sat(self) -> dict[int, list[int]]:
        """{positive satellite index: its panorama (pair) indices in file order}: 1 or 2 each in VIGOR."""
        groups: dict[int, list[int]] = {}
        for pano, sat in enumerate(self.positives.tolist()):
            groups.setdefault(sat, []).append(pano)
        return groups

    def positive_sats(self) -> list[int]:
        """Sorted unique positive satellite indices: the training references that mining ranks
        (Sample4Geo ``VigorDatasetEval(split="train", img_type="reference")``) and the ids of the
        GPS table (``calc_distance_vigor.py`` sorts them too)."""
        return sorted(set(self.positives.tolist()))

    def sat_latlon(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """float64 (n, 2) latitude, longitude in degrees of satellites ``indices`` (default all),
        parsed from their ``satellite_<lat>_<lon>.<ext>`` file names."""
        indices = range(len(self.sat_names)) if indices is None else indices
        coords = []
        for i in indices:
            latlon = satellite_latlon(self.sat_names[i])
            if latlon is None:
                raise DataError(
                    f"'{self.list_files[i]}': satellite name '{self.sat_names[i]}' does not hold its coordinates "
                    "(expected satellite_<lat>_<lon>.<ext>)"
                )
            coords.append(latlon)
        return torch.tensor(coords, dtype=torch.float64).reshape(-1, 2)

    def fingerprint(self) -> str:
        """A short hash of (mode, split, cities, satellite names, positives): equal for the same
        satellite numbering and training set, different across modes."""
        h = hashlib.sha256()
        for part in (self.mode, self.split, *self.cities, *self.sat_names):
            h.update(part.encode() + b"\0")
        h.update(self.positives.numpy().tobytes())
        return h.hexdigest()[:16]


def read_vigor(
    root: str | Path,
    mode: str = "same",
    split: str = "train",
    cities: Sequence[str] | None = None,
    layout: str = "auto",
) -> VigorSplit:
    """-> the :class:`VigorSplit` of ``mode`` ('same' / 'cross') and ``split`` ('train' / 'test');
    ``cities`` overrides the mode's cities (any of :data:`VIGOR_CITIES`, in that order)."""
    root = Path(root)
    _check_choice("mode", mode, MODES)
    _check_choice("split", split, SPLITS)
    if cities is None:
        cities = MODE_CITIES[mode][split]
    else:
        for city in cities:
            if city not in VIGOR_CITIES:
                raise DataError(f"VIGOR city '{city}' does not exist; the cities are {', '.join(VIGOR_CITIES)}")
        if not cities:
            raise DataError("VIGOR needs at least one city")
        cities = tuple(c for c in VIGOR_CITIES if c in cities)
    if not root.is_dir():
        raise DataError(f"VIGOR root '{root}' does not exist (data.root)")
    found = detect_layout(root, cities, layout)
    sat_names: list[str] = []
    sat_paths: list[str] = []
    list_files: list[str] = []
    pano_names: list[str] = []
    pano_paths: list[str] = []
    labels: list[list[int]] = []
    offsets: list[list[tuple[float, float]]] = []
    for city in cities:
        pano_dir, sat_dir = city_folders(root, city, found)
        list_path = root / "splits" / city / "satellite_list.txt"
        names = read_satellite_list(list_path)
        index = {name: len(sat_names) + i for i, name in enumerate(names)}
        sat_names += names
        sat_paths += [str(sat_dir / n) for n in names]
        list_files += [str(list_path)] * len(names)
        label_path = root / "splits" / city / label_file_name(mode, split)
        for line_no, pano, sats, offs in read_label_file(label_path):
            missing = [s for s in sats if s not in index]
            if missing:
                raise DataError(f"'{label_path}' line {line_no}: satellite '{missing[0]}' is not in '{list_path}'")
            pano_names.append(pano)
            pano_paths.append(str(pano_dir / pano))
            labels.append([index[s] for s in sats])
            offsets.append(offs)
    return VigorSplit(
        root=root,
        layout=found,
        mode=mode,
        split=split,
        cities=tuple(cities),
        sat_names=sat_names,
        sat_paths=sat_paths,
        pano_names=pano_names,
        pano_paths=pano_paths,
        labels=torch.tensor(labels, dtype=torch.long).reshape(-1, 4),
        offsets=torch.tensor(offsets, dtype=torch.float32).reshape(-1, 4, 2),
        list_files=list_files,
    )


class VigorPairs(PairDataset):
    """Training pairs, one per panorama: (panorama uint8 (3, ph, pw), positive satellite uint8
    (3, s, s), positive satellite index, pair index). ``pair_sats[i]`` is pair i's satellite."""

    def __init__(self, split: VigorSplit, sat_size: int = 384, pano_size: Sequence[int] = (384, 768)):
        pairs = [(sat, split.pano_paths[i], split.sat_paths[sat]) for i, sat in enumerate(split.positives.tolist())]
        super().__init__(pairs, (int(pano_size[0]), int(pano_size[1])), (sat_size, sat_size), "VIGOR image")
        self.split = split
        self.pair_sats: list[int] = self.labels


class VigorQueries(ImageListDataset):
    """The split's panoramas as retrieval queries: (panorama uint8 (3, ph, pw), labels long (4,)
    = [positive, semi1, semi2, semi3] satellite indices, index)."""

    def __init__(self, split: VigorSplit, pano_size: Sequence[int] = (384, 768)):
        super().__init__(split.pano_paths, list(split.labels), (int(pano_size[0]), int(pano_size[1])), "VIGOR image")
        self.split = split


class VigorReferences(ImageListDataset):
    """Satellite tiles as retrieval references: (satellite uint8 (3, s, s), satellite index,
    index). ``sats``: every satellite of the split's cities in list order (the test gallery),
    or with ``positives_only`` the sorted unique positives (the training references mining ranks)."""

    def __init__(self, split: VigorSplit, sat_size: int = 384, positives_only: bool = False):
        sats = split.positive_sats() if positives_only else list(range(len(split.sat_names)))
        super().__init__([split.sat_paths[s] for s in sats], sats, (sat_size, sat_size), "VIGOR image")
        self.split = split
        self.sats: list[int] = self.labels


@dataclass
class VigorData(GeoDataConfig):
    """``data.name: vigor``: VIGOR's pairs of one mode at fixed sizes (the reference's 384²
    satellite and 384 x 768 panorama). ``data.mode`` is the one switch between same-area and
    cross-area: the cities, the label files, the satellite numbering, the GPS neighbours (computed
    from the mode's own tiles, or a table saved for that mode) and the test set all follow it."""

    name: str = "vigor"
    root: str = "data/VIGOR"
    mode: Mode = "same"
    layout: Layout = (
        "auto"  # official (<City>/panorama, <City>/satellite) | reference (ground/<City>, satellite/<City>)
    )
    cities: list[str] = field(default_factory=list)  # empty: the mode's cities; else a subset of them (tests)
    sat_size: PositiveInt = 384
    pano_size: list[int] = field(default_factory=lambda: [384, 768])  # height, width
    # GPS neighbours: auto (haversine on the mode's positive tiles, from their file names) | none | a neighbour
    # table saved for the same mode (vissl_neg.geo.sampling.save_vigor_neighbours; refused for another mode)
    neighbours: str = "auto"
    # a tile with two panoramas: max (its neighbours ranked by the higher of their two scores) | last (the
    # reference's table, where the second panorama's list overwrites the first's)
    mined_merge: Literal["max", "last"] = "max"
    # R@1%'s k: sample4geo (R // 100, the reference's) | vigor (int(0.01 R) + 1, VIGOR's own code)
    one_percent: Literal["sample4geo", "vigor"] = "sample4geo"

    title = "VIGOR"
    sampler = "vigor_pairs"
    miner = "vigor"
    splits = ("test",)

    def check(self) -> None:
        check_pano_size(self.pano_size)
        unknown = [c for c in self.cities if c not in VIGOR_CITIES]
        if unknown:
            raise ValueError(f"cities must be VIGOR cities ({', '.join(VIGOR_CITIES)}); '{unknown[0]}' does not exist")

    @property
    def ground_size(self) -> tuple[int, int]:
        return (self.pano_size[0], self.pano_size[1])

    def read(self, split: str, root: str | Path | None = None) -> VigorSplit:
        """The mode's ``split``; data.cities narrows it to those of its cities that are listed."""
        mine = MODE_CITIES[self.mode][split]
        cities = tuple(c for c in mine if c in self.cities) if self.cities else None
        if self.cities and not cities:
            raise DataError(f"VIGOR mode '{self.mode}' {split} uses {', '.join(mine)}; data.cities lists none of them")
        return read_vigor(root or self.root, self.mode, split, cities, self.layout)

    def build(self, split: str, root: str | Path | None = None) -> VigorPairs:
        """The training pairs (one per panorama) of ``split``."""
        return VigorPairs(self.read(split, root), self.sat_size, self.ground_size)

    def retrievals(self, split: str, root: str | Path | None = None) -> list[Retrieval]:
        """The split's panoramas against every satellite tile of its cities; a panorama's
        labels are its positive and its three semi-positives."""
        data = self.read(split, root)
        return [
            Retrieval(
                "",
                "vigor",
                queries=VigorQueries(data, self.ground_size),
                references=VigorReferences(data, self.sat_size),
                options={"one_percent": self.one_percent},
            )
        ]

    def gps(self, train_set: VigorPairs) -> GpsSource | None:
        if self.neighbours == "none":
            return None
        return GpsSource(
            "vigor", split=train_set.split, path=None if self.neighbours == "auto" else Path(self.neighbours)
        )

    def protocol(self, split: str) -> str:
        area = "same-area" if self.mode == "same" else "cross-area"
        cities = ", ".join(MODE_CITIES[self.mode][split])
        k = "R // 100" if self.one_percent == "sample4geo" else "int(0.01 R) + 1"
        return (
            f"VIGOR {area} {split} ({cities}): panoramas against every satellite tile of those cities; R@k of the "
            f"positive, semi-positives ranked as other tiles; hit rate: no tile but its semi-positives above the "
            f"positive; R@1% with k = {k}"
        )
