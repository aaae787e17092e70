"""CVACT (Liu & Li, CVPR 2019) on its release's layout, as Sample4Geo reads it
(Skyy93/Sample4Geo@498c651 sample4geo/dataset/cvact.py):

    ROOT/ACT_data.mat                                       panoIds, utm, trainSet, valSet
    ROOT/ANU_data_small/streetview/<id>_grdView.jpg         train + val panoramas
    ROOT/ANU_data_small/satview_polish/<id>_satView_polish.jpg
    ROOT/ANU_data_test/streetview/<id>_grdView.jpg          test (CVACT_test)
    ROOT/ANU_data_test/satview_polish/<id>_satView_polish.jpg

``ACT_data.mat`` (read with ``scipy.io.loadmat``): ``panoIds`` the N panorama ids, ``utm`` (N, 2)
UTM coordinates in metres, ``trainSet`` / ``valSet`` 1×1 structs whose ``trainInd`` / ``valInd``
field is a column of **1-based** positions in ``panoIds``. The fields are read by name; when
the name is absent, the struct's second field is used, as the reference does (``[0][0][1]``).
The train and val pairs are the listed ids whose two images both exist, in the .mat's order;
the others are left out (the reference drops them too) and reported in one note. The test
split is not in the .mat: it is the sorted intersection of the ids that have a panorama and
a satellite image under ``ANU_data_test``. A pair's label is its position among the kept
pairs of its split (the reference's ``idnum``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from vissl_neg.data.pairs import GpsSource, PairDataset, Retrieval, check_pano_size, list_files
from vissl_neg.data.section import GeoDataConfig
from vissl_neg.errors import DataError
from vissl_neg.rules import PositiveInt

ACT_FILE = "ACT_data.mat"
SPLITS = ("train", "val", "test")
GROUND_SUFFIX, AERIAL_SUFFIX = "_grdView.jpg", "_satView_polish.jpg"
FOLDERS = {"train": "ANU_data_small", "val": "ANU_data_small", "test": "ANU_data_test"}
GROUND_DIR, AERIAL_DIR = "streetview", "satview_polish"


@dataclass
class ActData:
    """What ``ACT_data.mat`` holds: the panorama ids, their UTM coordinates (N, 2) metres or
    None when the file has no ``utm``, and each split's 0-based positions in ``pano_ids``."""

    path: Path
    pano_ids: list[str]
    utm: np.ndarray | None
    positions: dict[str, np.ndarray] = field(default_factory=dict)


def _as_str(value) -> str:
    """A panorama id as loadmat returns it: a string of a char matrix, or a cell's 1-element array."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one id per entry, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    return str(value).strip()


def _split_positions(mat: dict, split: str, n: int, path: Path) -> np.ndarray:
    """``<split>Set.<split>Ind`` (else the struct's second field) -> 0-based positions."""
    key, name = f"{split}Set", f"{split}Ind"
    if key not in mat:
        raise DataError(f"CVACT metadata file '{path}' has no '{key}' struct")
    struct = np.asarray(mat[key])
    names = struct.dtype.names or ()
    if struct.size != 1 or not names:
        raise DataError(f"CVACT metadata file '{path}': '{key}' is not a 1x1 struct")
    record = struct.reshape(-1)[0]
    if name in names:
        raw = record[name]
    elif len(names) >= 2:
        raw = record[names[1]]  # the reference's positional read, [0][0][1]
    else:
        raise DataError(f"CVACT metadata file '{path}': '{key}' has no field '{name}' (fields: {', '.join(names)})")
    try:
        index = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"CVACT metadata file '{path}': '{key}.{name}' does not hold numbers") from None
    if index.size == 0:
        raise DataError(f"CVACT metadata file '{path}': '{key}.{name}' is empty")
    if not np.all(index == np.round(index)) or index.min() < 1 or index.max() > n:
        raise DataError(
            f"CVACT metadata file '{path}': '{key}.{name}' must hold 1-based positions in panoIds (1..{n}), "
            f"got values in [{index.min():g}, {index.max():g}]"
        )
    return index.astype(np.int64) - 1


def read_act_data(root: str | Path) -> ActData:
    """ROOT/ACT_data.mat -> :class:`ActData`; one-line errors naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CVACT root '{root}' does not exist (data.root)")
    path = root / ACT_FILE
    if not path.is_file():
        raise DataError(f"CVACT metadata file '{path}' does not exist")
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a malformed file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"CVACT metadata file '{path}' cannot be read as a MATLAB file ({reason})") from None
    if "panoIds" not in mat:
        raise DataError(f"CVACT metadata file '{path}' has no 'panoIds'")
    try:
        ids = [_as_str(v) for v in np.asarray(mat["panoIds"]).reshape(-1)]
    except ValueError as exc:
        raise DataError(f"CVACT metadata file '{path}': 'panoIds' {exc}") from None
    utm = None
    if "utm" in mat:
        utm = np.asarray(mat["utm"], dtype=np.float64)
        if utm.ndim != 2 or utm.shape[1] < 2 or utm.shape[0] != len(ids):
            raise DataError(
                f"CVACT metadata file '{path}': 'utm' must be a {len(ids)} x 2 array (one row per panoId), "
                f"got shape {tuple(utm.shape)}"
            )
        utm = utm[:, :2]
    positions = {s: _split_positions(mat, s, len(ids), path) for s in ("train", "val")}
    return ActData(path, ids, utm, positions)


@dataclass
class CVACTSplit:
    """A split's kept pairs: ids, (ground path, aerial path), UTM rows (train and val, when
    the .mat has them), and the ids left out with the reason."""

    split: str
    ids: list[str]
    paths: list[tuple[str, str]]
    utm: np.ndarray | None
    left_out: list[str]
    reason: str

    def note(self) -> str | None:
        """One line on the ids left out, or None."""
        if not self.left_out:
            return None
        shown = ", ".join(self.left_out[:3]) + (", ..." if len(self.left_out) > 3 else "")
        n = len(self.left_out)
        return f"CVACT {self.split}: {n} id{'s' * (n != 1)} left out, {self.reason} ({shown})"


def read_split(root: str | Path, split: str) -> CVACTSplit:
    """The pairs of ``split`` (train | val | test) whose two images exist."""
    if split not in SPLITS:
        raise DataError(f"CVACT has no split '{split}' (splits: {', '.join(SPLITS)})")
    root = Path(root)
    base = root / FOLDERS[split]
    if split == "test":
        if not root.is_dir():
            raise DataError(f"CVACT root '{root}' does not exist (data.root)")
        ground = {n[: -len(GROUND_SUFFIX)] for n in list_files(base / GROUND_DIR, "CVACT") if n.endswith(GROUND_SUFFIX)}
        aerial = {n[: -len(AERIAL_SUFFIX)] for n in list_files(base / AERIAL_DIR, "CVACT") if n.endswith(AERIAL_SUFFIX)}
        ids = sorted(ground & aerial)
        left_out = sorted(ground ^ aerial)
        reason, utm = "with a panorama or a satellite image only", None
    else:
        act = read_act_data(root)
        listed = [act.pano_ids[p] for p in act.positions[split]]
        ground = list_files(base / GROUND_DIR, "CVACT")
        aerial = list_files(base / AERIAL_DIR, "CVACT")
        both = [i + GROUND_SUFFIX in ground and i + AERIAL_SUFFIX in aerial for i in listed]
        keep = [(i, p) for i, p, ok in zip(listed, act.positions[split], both) if ok]
        ids = [i for i, _ in keep]
        left_out = [i for i, ok in zip(listed, both) if not ok]
        reason = f"listed in {ACT_FILE} without their two images"
        utm = act.utm[[p for _, p in keep]] if act.utm is not None else None
    if not ids:
        raise DataError(f"CVACT {split}: no id has both images under '{base}'")
    paths = [
        (str(base / GROUND_DIR / f"{i}{GROUND_SUFFIX}"), str(base / AERIAL_DIR / f"{i}{AERIAL_SUFFIX}")) for i in ids
    ]
    return CVACTSplit(split, ids, paths, utm, left_out, reason)


class CVACTDataset(PairDataset):
    """(panorama uint8 (3, ph, pw), satellite uint8 (3, s, s), label, index) per kept pair of a
    split, the label its position (as the reference's idnum). ``ids``: the panorama ids;
    ``utm``: their (N, 2) UTM coordinates (train and val) or None; ``note``: the ids left out."""

    def __init__(self, root: str | Path, split: str, sat_size: int = 384, pano_size: tuple[int, int] = (140, 768)):
        data = read_split(root, split)
        super().__init__(
            [(i, g, a) for i, (g, a) in enumerate(data.paths)], pano_size, (sat_size, sat_size), "CVACT image"
        )
        self.ids, self.utm, self.note = data.ids, data.utm, data.note()


@dataclass
class CVACTData(GeoDataConfig):
    """``data.name: cvact``: CVACT's pairs at fixed sizes (the reference's 384² satellite and
    140 x 768 panorama); GPS neighbours from the UTM coordinates in ACT_data.mat."""

    name: str = "cvact"
    root: str = "data/CVACT"
    sat_size: PositiveInt = 384
    pano_size: list[int] = field(default_factory=lambda: [140, 768])  # height, width
    # GPS neighbours: auto (Euclidean on ACT_data.mat's UTM coordinates) | none (random batches) | a path
    # to a {position: [neighbour positions]} pickle (the reference's gps_dict.pkl) or a position,lat,lon CSV
    neighbours: str = "auto"
    # the split evaluated during training: val (CVACT_val, the reference's) | test (CVACT_test)
    eval_split: Literal["val", "test"] = "val"  # type: ignore[assignment]

    title = "CVACT"
    splits = ("train", "val", "test")

    def check(self) -> None:
        check_pano_size(self.pano_size)

    @property
    def ground_size(self) -> tuple[int, int]:
        return (self.pano_size[0], self.pano_size[1])

    def build(self, split: str, root: str | Path | None = None) -> CVACTDataset:
        """The kept pairs of ``split`` at this section's sizes (``root`` overrides data.root)."""
        return CVACTDataset(root or self.root, split, self.sat_size, (self.pano_size[0], self.pano_size[1]))

    def retrievals(self, split: str, root: str | Path | None = None) -> list[Retrieval]:
        """One retrieval: each panorama against the split's satellite images, its own the match."""
        return [Retrieval("", "recall", pairs=self.build(split, root))]

    def gps(self, train_set: CVACTDataset) -> GpsSource | None:
        if self.neighbours == "none" or (self.neighbours == "auto" and train_set.utm is None):
            return None
        if self.neighbours == "auto":
            return GpsSource("euclidean", coords=train_set.utm)
        return GpsSource("file", path=Path(self.neighbours), ids=list(range(len(train_set))))

    def protocol(self, split: str) -> str:
        name = {"val": "CVACT_val", "test": "CVACT_test", "train": "CVACT train"}[split]
        return (
            f"{name}: ground panoramas against the split's satellite images, one true match each; "
            "R@1% with k = R // 100"
        )
