"""Small cross-view data sets in exactly their releases' layouts, with a planted structure:
a pair's ground view (panorama or drone photo) and satellite tile are rendered from the same
random colour pattern (the ground view rearranged and in different colours), so a model can
learn to match them while an untrained one cannot.

CVUSA: GPS comes as in the real release: ``split_locations/all.csv``, no header, row
``id - 1`` holding satellite lat, lon, ground lat, lon (degrees) and a fifth column. CVACT:
:func:`write_cvact_fixture`; University-1652: :func:`write_university1652_fixture`.

VIGOR: ``write_vigor_fixture(root, layout, rows, cols, ...)`` writes the four cities in the
release layout (or Sample4Geo's) with half-overlapping tiles and 13-field label files;
``fixture_pano_cells(pano uint8 (B, 3, H, W))`` and ``fixture_sat_cells(sat uint8 (B, 3, H, W))``
-> (B, 192) unit rows: a hand-made embedding under which each panorama matches its positive."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vissl_neg.data.vigor import FOUND_LAYOUTS, city_folders


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
            sat, pano = _satellite(pattern, sat_size), _panorama(pattern, pano_size)
            sat_rel, pano_rel, anno_rel = (
                f"bingmap/19/{idx:07d}.jpg",
                f"streetview/panos/{idx:07d}.jpg",
                f"streetview/annotations/{idx:07d}.png",
            )
            _save(sat, root / sat_rel)
            _save(pano, root / pano_rel)
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
    return Image.fromarray(_pano_strip(pattern)).resize((size[1], size[0]), Image.NEAREST)


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


# ------------------------------------------------------------------------------ VIGOR
VIGOR_FIXTURE_ORIGINS = {  # north-west corner of each city's fixture map (degrees)
    "Chicago": (41.88, -87.68),
    "NewYork": (40.76, -73.99),
    "SanFrancisco": (37.78, -122.42),
    "Seattle": (47.61, -122.34),
}
CELLS = 8  # a tile is CELLS x CELLS colour cells; tile centres are CELLS // 2 apart (half-tile overlap)
TILE_PX = 640  # the pixel unit of the offsets in the label files (VIGOR's original tiles)
HALF_TILE_DEG = 0.000328  # latitude of half a tile (320 px at VIGOR's ~0.114 m/px)


def _pano_strip(window: np.ndarray) -> np.ndarray:
    """(8, 8, 3) cells around a place -> (4, 16, 3) panorama cells: the top half and the bottom
    half side by side, in the ground view's colours."""
    half = window.shape[0] // 2
    return _ground_colours(np.concatenate([window[:half], window[half:]], axis=1))


def fixture_sat_cells(sat: torch.Tensor) -> torch.Tensor:
    """A simple embedding that matches the VIGOR fixture's two views without learning: uint8
    satellites (B, 3, H, W) -> (B, 192) unit rows of their 8 x 8 cell colours (centred)."""
    cells = torch.nn.functional.adaptive_avg_pool2d(sat.float(), CELLS)  # (B, 3, 8, 8)
    return torch.nn.functional.normalize((cells - 127.5).flatten(1), dim=1)


def fixture_pano_cells(pano: torch.Tensor) -> torch.Tensor:
    """uint8 panoramas (B, 3, H, W) -> (B, 192) unit rows in :func:`fixture_sat_cells`' space:
    the 4 x 16 panorama cells, colours mapped back and the two halves stacked into 8 x 8."""
    cells = torch.nn.functional.adaptive_avg_pool2d(pano.float(), (CELLS // 2, 2 * CELLS))  # (B, 3, 4, 16)
    cells = (255 - cells)[:, [2, 0, 1]]  # undo _ground_colours
    window = torch.cat([cells[..., :CELLS], cells[..., CELLS:]], dim=2)  # (B, 3, 8, 8)
    return torch.nn.functional.normalize((window - 127.5).flatten(1), dim=1)


def _unit(cells: np.ndarray) -> np.ndarray:
    """(8, 8, 3) cells -> the unit vector :func:`fixture_sat_cells` gives their tile."""
    v = (cells.astype(np.float64) - 127.5).transpose(2, 0, 1).reshape(-1)
    return v / np.linalg.norm(v)


def _centre(a: int, b: int) -> tuple[int, int]:
    """Map cell of tile (row a, column b)'s centre; the map keeps a margin of half a tile."""
    return CELLS // 2 * a + CELLS, CELLS // 2 * b + CELLS


def _window(world: np.ndarray, r: int, c: int) -> np.ndarray:
    half = CELLS // 2
    return world[r - half : r + half, c - half : c + half]


def write_vigor_fixture(
    root: str | Path,
    layout: str = "official",
    rows: int = 4,
    cols: int = 5,
    positive_share: float = 0.6,
    two_pano_share: float = 0.34,
    sat_size: int = 32,
    pano_size: tuple[int, int] = (32, 64),
    seed: int = 0,
) -> dict:
    """A small VIGOR tree in the release layout (``layout="official"``: ROOT/<City>/panorama,
    ROOT/<City>/satellite) or Sample4Geo's (``"reference"``: ROOT/ground/<City>,
    ROOT/satellite/<City>), with ``splits/<City>/`` label files of 13 fields.

    Each city is a ``rows`` x ``cols`` grid of PNG tiles whose centres are half a tile apart,
    cut from one random colour map (8 x 8 cells a tile), so neighbouring tiles share half
    their content. A share ``positive_share`` of the tiles are positives, of which
    ``two_pano_share`` have two panoramas; the other tiles are only semi-positives or in no
    label at all. A panorama lies within a quarter tile of its positive's centre; its three
    semi-positives are the other tiles covering it (in random order), with their offsets. Its
    JPEG shows its positive's 8 x 8 cells rearranged into a strip, recoloured and with a little
    noise: a model can learn to match the views, and :func:`fixture_pano_cells` / :func:`fixture_sat_cells` undo
    it by hand. Same-area train and test split each city's positive tiles in two;
    ``pano_label_balanced.txt`` holds both. One Chicago test panorama (``"semi_first"``) shows
    its first semi-positive's cells blended with its positive's, so that the hand embedding ranks
    that semi-positive first and the positive second.

    -> {"satellites": {city: [names in list order]}, "panoramas": {name: {"city", "split",
    "positive", "semis", "offsets": [(dy, dx)] * 4}}, "two_pano_sats", "semi_only_sats",
    "semi_first": [panorama]}."""
    if layout not in FOUND_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(FOUND_LAYOUTS)}, got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    half = CELLS // 2
    out: dict = {"satellites": {}, "panoramas": {}, "two_pano_sats": [], "semi_only_sats": [], "semi_first": []}
    tiles = [(a, b) for a in range(rows) for b in range(cols)]
    cells: dict[str, np.ndarray] = {}  # satellite name -> its (8, 8, 3) cells
    worlds, tile_names, views = {}, {}, {}  # per city; views: panorama -> the cells it shows
    for city, (lat0, lon0) in VIGOR_FIXTURE_ORIGINS.items():
        pano_dir, sat_dir = city_folders(root, city, layout)
        split_dir = root / "splits" / city
        for d in (pano_dir, sat_dir, split_dir):
            d.mkdir(parents=True, exist_ok=True)
        world = rng.integers(0, 256, size=(half * rows + 12, half * cols + 12, 3)).astype(np.uint8)
        dlat = HALF_TILE_DEG / half
        dlon = dlat / math.cos(math.radians(lat0))
        names = {}
        for a, b in tiles:
            tr, tc = _centre(a, b)
            names[a, b] = f"satellite_{lat0 - tr * dlat!r}_{lon0 + tc * dlon!r}.png"  # rows run south, columns east
            cells[names[a, b]] = _window(world, tr, tc)
            tile = Image.fromarray(cells[names[a, b]]).resize((sat_size, sat_size), Image.Resampling.NEAREST)
            tile.save(sat_dir / names[a, b])
        # the real list runs west to east along rows of latitude, south first
        order = [names[a, b] for a in reversed(range(rows)) for b in range(cols)]
        (split_dir / "satellite_list.txt").write_text("\n".join(order) + "\n")
        out["satellites"][city] = order
        worlds[city], tile_names[city] = world, names

        n_pos = max(4, round(positive_share * len(tiles)))
        picked = [tiles[i] for i in sorted(rng.choice(len(tiles), size=n_pos, replace=False))]
        two = {picked[i] for i in rng.choice(n_pos, size=max(2, round(two_pano_share * n_pos)), replace=False)}
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for k, (a, b) in enumerate(picked):
            split = ("train", "test")[k % 2]
            for _ in range(2 if (a, b) in two else 1):
                sy = 1 if a == 0 else -1 if a == rows - 1 else int(rng.choice((-1, 1)))
                sx = 1 if b == 0 else -1 if b == cols - 1 else int(rng.choice((-1, 1)))
                r0, c0 = _centre(a, b)
                r, c = r0 + sy * rng.uniform(0.1, 1.9), c0 + sx * rng.uniform(0.1, 1.9)  # in map cells
                semis = [(a, b + sx), (a + sy, b), (a + sy, b + sx)]
                rng.shuffle(semis)
                cover = [(a, b), *semis]
                offsets = []
                for t in cover:
                    tr, tc = _centre(*t)
                    dy, dx = (r - tr) * TILE_PX / CELLS, (tc - c) * TILE_PX / CELLS  # + south, + west
                    offsets.append((round(dy, 1), round(dx, 1)))
                prefix = _pano_id(rng)
                pano = f"{prefix},{lat0 - r * dlat:.6f},{lon0 + c * dlon:.6f},.jpg"
                fields = [pano]
                for t, (dy, dx) in zip(cover, offsets):
                    fields += [names[t], f"{dy:.1f}", f"{dx:.1f}"]
                lines[split].append(" ".join(fields))
                views[pano] = cells[names[a, b]]
                out["panoramas"][pano] = {
                    "city": city,
                    "split": split,
                    "positive": names[a, b],
                    "semis": [names[t] for t in semis],
                    "offsets": offsets,
                }
        for split, name in (("train", "same_area_balanced_train.txt"), ("test", "same_area_balanced_test.txt")):
            (split_dir / name).write_text("\n".join(lines[split]) + "\n")
        (split_dir / "pano_label_balanced.txt").write_text("\n".join(lines["train"] + lines["test"]) + "\n")
        out["two_pano_sats"] += [names[t] for t in picked if t in two]
        positives = {names[t] for t in picked}
        semis_named = {s for p in out["panoramas"].values() if p["city"] == city for s in p["semis"]}
        out["semi_only_sats"] += sorted(semis_named - positives)

    # the semi-first query: its view blends its first semi-positive's cells (0.65) with its positive's (0.35)
    gallery_names = list(cells)
    gallery = np.stack([_unit(cells[n]) for n in gallery_names])
    for pano, info in out["panoramas"].items():
        if info["city"] != "Chicago" or info["split"] != "test":
            continue
        view = 0.65 * cells[info["semis"][0]].astype(np.float64) + 0.35 * cells[info["positive"]]
        sims = gallery @ _unit(view)
        top = np.sort(sims)[::-1]
        ranked = [gallery_names[i] for i in np.argsort(-sims)[:2]]
        if ranked == [info["semis"][0], info["positive"]] and min(top[0] - top[1], top[1] - top[2]) > 0.1:
            views[pano] = view
            out["semi_first"].append(pano)
            break
    if not out["semi_first"]:
        raise RuntimeError(f"no Chicago test panorama can be the semi-first query with seed {seed}; try another")

    for pano, info in out["panoramas"].items():
        strip = _pano_strip(views[pano]).astype(np.float64) + rng.normal(0, 4, size=(half, 2 * CELLS, 3))
        image = Image.fromarray(np.clip(strip, 0, 255).astype(np.uint8))
        image.resize((pano_size[1], pano_size[0]), Image.Resampling.NEAREST).save(
            city_folders(root, info["city"], layout)[0] / pano, quality=95
        )
    return out
