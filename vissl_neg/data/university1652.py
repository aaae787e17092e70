"""University-1652 (Zheng et al., ACM MM 2020) on its release's layout, as Sample4Geo reads
it (Skyy93/Sample4Geo@498c651 sample4geo/dataset/university.py, train_university.py:93-102):

    ROOT/train/satellite/<class>/<image>     one image per building
    ROOT/train/drone/<class>/<image>         about 54 per building
    ROOT/test/query_drone/<class>/...        drone -> satellite (D2S): against gallery_satellite
    ROOT/test/gallery_satellite/<class>/...
    ROOT/test/query_satellite/<class>/...    satellite -> drone (S2D): against gallery_drone
    ROOT/test/gallery_drone/<class>/...

A class is a building, its folder name its id. Training pairs: for every class with both a
satellite and a drone folder, the class's (first) satellite image with each of its drone
images, as the reference pairs them. Testing: the query folder's images against the gallery
folder's; a gallery image matches the queries of its class. The galleries also hold
**distractor** classes that no query has (the official protocol ranks them; the reference
drops them, see ``vissl_neg.geo`` for both). Only image files are read (``IMAGE_SUFFIXES``);
other files and empty class folders are skipped. Files are taken in sorted order (the
reference lists them in ``os.walk`` order; with one satellite image per class it is the same).
``train/street``, ``train/google`` and the street-view test folders are not used, as in the
reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vissl_neg.data.pairs import IMAGE_SUFFIXES, ImageListDataset, PairDataset, Retrieval
from vissl_neg.data.section import GeoDataConfig
from vissl_neg.errors import DataError
from vissl_neg.rules import PositiveInt

TRAIN_DIRS = {"satellite": "train/satellite", "drone": "train/drone"}
# direction -> (query folder, gallery folder), relative to ROOT
DIRECTIONS = {
    "d2s": ("test/query_drone", "test/gallery_satellite"),
    "s2d": ("test/query_satellite", "test/gallery_drone"),
}
DIRECTION_NAMES = {"d2s": "drone -> satellite", "s2d": "satellite -> drone"}


def scan_classes(folder: Path) -> dict[str, list[str]]:
    """folder/<class>/<image> -> {class: sorted image paths}, classes sorted; empty classes skipped."""
    if not folder.is_dir():
        raise DataError(f"University-1652 folder '{folder}' does not exist")
    out = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        files = sorted(
            e.name for e in os.scandir(entry.path) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if files:
            out[entry.name] = [os.path.join(entry.path, f) for f in files]
    if not out:
        raise DataError(f"University-1652 folder '{folder}' holds no class folder with images")
    return out


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"University-1652 root '{root}' does not exist (data.root)")
    return root


@dataclass
class UniversityTrain:
    """Training pairs (class index, satellite path, drone path), the class names (index ->
    name), and the classes found on one side only."""

    pairs: list[tuple[int, str, str]]
    classes: list[str]
    one_sided: list[str]

    def note(self) -> str | None:
        if not self.one_sided:
            return None
        shown = ", ".join(self.one_sided[:3]) + (", ..." if len(self.one_sided) > 3 else "")
        n = len(self.one_sided)
        return (
            f"University-1652 train: {n} class{'es' * (n != 1)} with a satellite or a drone folder only "
            f"left out ({shown})"
        )


def read_train(root: str | Path) -> UniversityTrain:
    """Pairs of each class's first satellite image with each of its drone images."""
    root = _root(root)
    sat, drone = scan_classes(root / TRAIN_DIRS["satellite"]), scan_classes(root / TRAIN_DIRS["drone"])
    classes = sorted(set(sat) & set(drone))
    if not classes:
        raise DataError(f"University-1652: no class of '{root / TRAIN_DIRS['satellite']}' has drone images")
    pairs = [(c, sat[name][0], d) for c, name in enumerate(classes) for d in drone[name]]
    return UniversityTrain(pairs, classes, sorted(set(sat) ^ set(drone)))


@dataclass
class UniversityTest:
    """One direction's retrieval: query and gallery image paths with class labels (indices
    into ``classes``, shared by both sides), and which gallery classes no query has."""

    direction: str
    query: list[tuple[str, int]]
    gallery: list[tuple[str, int]]
    classes: list[str]
    distractors: list[str]


def read_test(root: str | Path, direction: str) -> UniversityTest:
    """``direction``: d2s (query_drone against gallery_satellite) or s2d (query_satellite
    against gallery_drone)."""
    if direction not in DIRECTIONS:
        raise DataError(f"University-1652 has no direction '{direction}' (directions: {', '.join(DIRECTIONS)})")
    root = _root(root)
    query_dir, gallery_dir = DIRECTIONS[direction]
    query, gallery = scan_classes(root / query_dir), scan_classes(root / gallery_dir)
    classes = sorted(set(query) | set(gallery))
    label = {name: i for i, name in enumerate(classes)}
    missing = sorted(set(query) - set(gallery))
    if missing:
        raise DataError(
            f"University-1652: {len(missing)} query classes of '{root / query_dir}' have no images in "
            f"'{root / gallery_dir}' (e.g. {missing[0]})"
        )
    return UniversityTest(
        direction,
        [(p, label[c]) for c, files in query.items() for p in files],
        [(p, label[c]) for c, files in gallery.items() for p in files],
        classes,
        sorted(set(gallery) - set(query)),
    )


class UniversityPairs(PairDataset):
    """(drone uint8 (3, d, d), satellite uint8 (3, s, s), class, index) per training pair; the
    drone photo takes the ground view's place."""

    def __init__(self, root: str | Path, sat_size: int = 384, drone_size: int = 384):
        data = read_train(root)
        super().__init__(
            [(c, d, s) for c, s, d in data.pairs],
            (drone_size, drone_size),
            (sat_size, sat_size),
            "University-1652 image",
        )
        self.classes, self.note = data.classes, data.note()


def university_eval_sets(root: str | Path, direction: str, sat_size: int = 384, drone_size: int = 384):
    """-> (queries, gallery, UniversityTest): image lists at the sizes of their views."""
    test = read_test(root, direction)
    size = {"d2s": (drone_size, sat_size), "s2d": (sat_size, drone_size)}[direction]
    what = "University-1652 image"
    query = ImageListDataset([p for p, _ in test.query], [c for _, c in test.query], (size[0], size[0]), what)
    gallery = ImageListDataset([p for p, _ in test.gallery], [c for _, c in test.gallery], (size[1], size[1]), what)
    return query, gallery, test


@dataclass
class University1652Data(GeoDataConfig):
    """``data.name: university1652``: drone and satellite images at fixed sizes (the
    reference's 384²); batches of one pair per class; evaluated in both directions."""

    name: str = "university1652"
    root: str = "data/U1652"
    sat_size: PositiveInt = 384
    drone_size: PositiveInt = 384
    directions: Literal["both", "d2s", "s2d"] = "both"  # d2s: drone -> satellite; s2d: satellite -> drone
    # ranked: every gallery image ranks, the distractor classes included (the benchmark's official protocol);
    # dropped: gallery classes no query has are left out of the ranking (Sample4Geo's evaluation)
    distractors: Literal["ranked", "dropped"] = "ranked"
    # one_per_class: no two pairs of a building in a batch (the reference's); random: plain random batches
    batches: Literal["one_per_class", "random"] = "one_per_class"

    title = "University-1652"
    splits = ("test",)
    miner = None
    ground_view = "drone image"
    retrieval_task = "cross-view retrieval (drone <-> satellite)"

    @property
    def sampler(self) -> str:  # type: ignore[override]
        return "classes" if self.batches == "one_per_class" else "neighbours"

    @property
    def ground_size(self) -> tuple[int, int]:
        return (self.drone_size, self.drone_size)

    def build(self, split: str, root: str | Path | None = None) -> UniversityPairs:
        """The training pairs (``split`` must be train)."""
        if split != "train":
            raise DataError(f"University-1652 trains on its train split, not '{split}'")
        return UniversityPairs(root or self.root, self.sat_size, self.drone_size)

    def retrievals(self, split: str, root: str | Path | None = None) -> list[Retrieval]:
        """The test directions of data.directions, each its queries against its gallery."""
        if split != "test":
            raise DataError(f"University-1652 evaluates on its test split, not '{split}'")
        out = []
        for direction in ("d2s", "s2d") if self.directions == "both" else (self.directions,):
            query, gallery, _ = university_eval_sets(root or self.root, direction, self.sat_size, self.drone_size)
            options = {"distractors": self.distractors}
            out.append(Retrieval(direction, "university", queries=query, references=gallery, options=options))
        return out

    def protocol(self, split: str) -> str:
        directions = {"both": "drone -> satellite (d2s) and satellite -> drone (s2d)"}.get(
            self.directions, DIRECTION_NAMES.get(self.directions, self.directions)
        )
        gallery = (
            "every gallery image ranked, the distractor classes included (official protocol)"
            if self.distractors == "ranked"
            else "gallery classes absent from the queries left out of the ranking (Sample4Geo's protocol)"
        )
        return f"University-1652 test, {directions}: {gallery}; R@k from the CMC, AP by the trapezoid rule"
