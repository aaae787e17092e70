"""A small CVUSA tree in exactly the real layout, with a planted structure: a pair's
panorama and satellite tile are rendered from the same random colour pattern (the panorama
rearranged and in different colours), so a model can learn to match them while an untrained
one cannot. GPS comes as in the real release: ``split_locations/all.csv``, no header, row
``id - 1`` holding satellite lat, lon, ground lat, lon (degrees) and a fifth column."""

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
