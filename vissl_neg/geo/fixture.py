"""Small cross-view data sets in exactly their releases' layouts, with a planted structure:
a pair's ground view (panorama or drone photo) and satellite tile are rendered from the same
random colour pattern (the ground view rearranged and in different colours), so a model can
learn to match them while an untrained one cannot.

CVUSA: GPS comes as in the real release: ``split_locations/all.csv``, no header, row
``id - 1`` holding satellite lat, lon, ground lat, lon (degrees) and a fifth column. CVACT:
:func:`write_cvact_fixture`; University-1652: :func:`write_university1652_fixture`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _pattern(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(4, 8, 3)).astype(np.uint8)


def _ground_colours(cells: np.ndarray) -> np.ndarray:
    """The ground view's rendering of the shared pattern: inverted, channels rotated. A model
    has to learn this mapping; an untrained one does not match the two views."""
    return (255 - cells)[..., [1, 2, 0]]


def write_cvusa_fixture(
    root: str | Path,
    n_train: int = 96,
    n_val: int = 32,
    sat_size: int = 64,
    pano_size: tuple[int, int] = (32, 128),
    seed: int = 0,
) -> dict:
    """-> {"train": [ids], "test": [ids]}; JPEG panoramas and satellites, PNG annotations."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    out = {}
    coords = []
    next_id = 1
    for split, n, name in (("train", n_train, "train-19zl.csv"), ("test", n_val, "val-19zl.csv")):
        lines, ids = [], []
        for _ in range(n):
            idx = next_id
            next_id += int(rng.integers(1, 4))  # ids are not contiguous in the real data either
            pattern = _pattern(rng)
            sat = Image.fromarray(pattern).resize((sat_size, sat_size), Image.NEAREST)
            ground = np.concatenate([pattern[:2], pattern[2:]], axis=1)  # (2, 16, 3)
            pano = Image.fromarray(_ground_colours(ground)).resize((pano_size[1], pano_size[0]), Image.NEAREST)
            sat_rel, pano_rel, anno_rel = (
                f"bingmap/19/{idx:07d}.jpg",
                f"streetview/panos/{idx:07d}.jpg",
                f"streetview/annotations/{idx:07d}.png",
            )
            for rel, img in ((sat_rel, sat), (pano_rel, pano)):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                img.save(root / rel, quality=95)
            (root / anno_rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros(pano_size, dtype=np.uint8)).save(root / anno_rel)
            lines.append(f"{sat_rel},{pano_rel},{anno_rel}")
            ids.append(idx)
            coords.append((idx, 40.0 + rng.uniform(0, 1), -75.0 + rng.uniform(0, 1)))
        (root / "splits" / name).write_text("\n".join(lines) + "\n")
        out[split] = ids
    by_id = {i: (a, o) for i, a, o in coords}
    rows = []
    for i in range(1, next_id):  # every id up to the last, as the real file has a row per id
        lat, lon = by_id.get(i, (40.0 + rng.uniform(0, 1), -75.0 + rng.uniform(0, 1)))
        rows.append(f"{lat:.6f},{lon:.6f},{lat:.6f},{lon:.6f},0\n")
    (root / "split_locations").mkdir(exist_ok=True)
    (root / "split_locations" / "all.csv").write_text("".join(rows))
    return out


ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def _pano_id(rng: np.random.Generator) -> str:
    """A 22-character id like CVACT's (Street View panorama ids)."""
    return "".join(ID_ALPHABET[i] for i in rng.integers(0, len(ID_ALPHABET), size=22))


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95)


def _satellite(pattern: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(pattern).resize((size, size), Image.NEAREST)


def _panorama(pattern: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The CVUSA fixture's panorama: the pattern's rows side by side, recoloured."""
    ground = np.concatenate([pattern[:2], pattern[2:]], axis=1)
    return Image.fromarray(_ground_colours(ground)).resize((size[1], size[0]), Image.NEAREST)


def write_cvact_fixture(
    root: str | Path,
    n_train: int = 96,
    n_val: int = 32,
    n_test: int = 32,
    sat_size: int = 64,
    pano_size: tuple[int, int] = (32, 176),
    seed: int = 0,
) -> dict:
    """A CVACT tree in the release's layout (``vissl_neg.data.cvact``) with the planted
    pattern of :func:`write_cvusa_fixture`: ``ACT_data.mat`` written with ``scipy.io.savemat``
    (``panoIds`` a char matrix of 22-character ids, train and val interleaved; ``utm`` (N, 2)
    metres; ``trainSet`` / ``valSet`` structs whose second field ``trainInd`` / ``valInd`` holds
    1-based positions, a count first), panoramas at CVACT's 224:1232 aspect. Irregularities the
    loader must honour: one listed train id has no satellite image (dropped, the later ids
    renumbered); the test folders hold one panorama-only and one satellite-only id.
    -> {"train": kept train ids in order, "val": val ids, "test": sorted test ids, "dropped": [id],
    "utm": {id: (easting, northing)}}."""
    import scipy.io

    root = Path(root)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    ids = []
    while len(ids) < n + n_test + 2:
        new = _pano_id(rng)
        if new not in ids:
            ids.append(new)
    order = rng.permutation(n)  # train and val interleaved in panoIds
    train_pos, val_pos = np.sort(order[:n_train]), np.sort(order[n_train:])
    utm = np.stack([rng.uniform(0, 3000, n) + 330_000.0, rng.uniform(0, 3000, n) + 6_090_000.0], axis=1)
    small = root / "ANU_data_small"
    for i in range(n):
        pattern = _pattern(rng)
        _save(_panorama(pattern, pano_size), small / "streetview" / f"{ids[i]}_grdView.jpg")
        _save(_satellite(pattern, sat_size), small / "satview_polish" / f"{ids[i]}_satView_polish.jpg")
    dropped = ids[train_pos[1]]
    (small / "satview_polish" / f"{dropped}_satView_polish.jpg").unlink()
    scipy.io.savemat(
        root / "ACT_data.mat",
        {
            "panoIds": np.array(ids[:n]),
            "utm": utm,
            "trainSet": {"trainNum": float(n_train), "trainInd": (train_pos + 1).reshape(-1, 1).astype(np.int32)},
            "valSet": {"valNum": float(n_val), "valInd": (val_pos + 1).reshape(-1, 1).astype(np.int32)},
        },
    )
    test = root / "ANU_data_test"
    test_ids = ids[n : n + n_test]
    for i in test_ids:
        pattern = _pattern(rng)
        _save(_panorama(pattern, pano_size), test / "streetview" / f"{i}_grdView.jpg")
        _save(_satellite(pattern, sat_size), test / "satview_polish" / f"{i}_satView_polish.jpg")
    ground_only, sat_only = ids[n + n_test], ids[n + n_test + 1]
    _save(_panorama(_pattern(rng), pano_size), test / "streetview" / f"{ground_only}_grdView.jpg")
    _save(_satellite(_pattern(rng), sat_size), test / "satview_polish" / f"{sat_only}_satView_polish.jpg")
    return {
        "train": [ids[p] for p in train_pos if ids[p] != dropped],
        "val": [ids[p] for p in val_pos],
        "test": sorted(test_ids),
        "dropped": [dropped],
        "utm": {ids[i]: (float(utm[i, 0]), float(utm[i, 1])) for i in range(n)},
    }


def _drone_view(pattern: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """A drone photo of a building: the pattern recoloured (as the ground views), shifted by a
    random cell and lightly noised, so a class's drone images differ from each other."""
    cells = np.roll(_ground_colours(pattern), tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
    img = np.asarray(Image.fromarray(cells).resize((size, size), Image.NEAREST)).astype(np.int16)
    img = img + rng.integers(-12, 13, size=img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def write_university1652_fixture(
    root: str | Path,
    n_train: int = 32,
    drones: int = 4,
    n_test: int = 16,
    n_distractors: int = 4,
    sat_size: int = 64,
    drone_size: int = 64,
    seed: int = 0,
) -> dict:
    """A University-1652 tree in the release's layout (``vissl_neg.data.university1652``):
    4-digit class folders, train and test classes disjoint; ``train/satellite/<c>/<c>.jpg`` (one
    per class) and ``train/drone/<c>/image-NN.jpeg`` (``drones`` per class); the four test
    folders, whose galleries also hold ``n_distractors`` classes no query has. A satellite tile
    is a square colour pattern (8 x 8 cells); its drone photos show the same pattern recoloured,
    shifted and noised. Irregularities: one train class has a satellite folder only, a
    ``Thumbs.db`` sits in one drone folder, ``train/street`` exists (unused).
    -> {"train": [classes], "test": [query classes], "distractors": [classes], "one_sided": [class]}."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"{i:04d}" for i in range(1, n_train + n_test + n_distractors + 2)]
    train, test = names[:n_train], names[n_train : n_train + n_test]
    distractors, one_sided = names[n_train + n_test : -1], names[-1]

    for c in train + test + distractors + [one_sided]:
        pattern = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
        sat = _satellite(pattern, sat_size)
        views = [_drone_view(pattern, rng, drone_size) for _ in range(drones)] if c != one_sided else []
        files = [f"image-{j:02d}.jpeg" for j in range(1, drones + 1)]
        if c in train or c == one_sided:
            _save(sat, root / "train" / "satellite" / c / f"{c}.jpg")
        if c in train:
            for view, name in zip(views, files):
                _save(view, root / "train" / "drone" / c / name)
            if c == train[0]:
                _save(sat, root / "train" / "street" / c / "0.jpg")
                (root / "train" / "drone" / c / "Thumbs.db").write_bytes(b"\x00not an image")
        if c in test or c in distractors:  # the galleries: the query classes and the distractors
            _save(sat, root / "test" / "gallery_satellite" / c / f"{c}.jpg")
            for view, name in zip(views, files):
                _save(view, root / "test" / "gallery_drone" / c / name)
        if c in test:  # the same images as the galleries hold, as in the release
            _save(sat, root / "test" / "query_satellite" / c / f"{c}.jpg")
            for view, name in zip(views, files):
                _save(view, root / "test" / "query_drone" / c / name)
    return {"train": train, "test": test, "distractors": distractors, "one_sided": [one_sided]}
