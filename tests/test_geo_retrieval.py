"""A cross-view evaluation end to end: images on disk -> embed_images / embed_pairs -> the
benchmark's metric (vissl_neg.geo.retrieval), with an oracle encoder whose embedding is the
image's planted class, so every number is known: each query's true references score 1, all
others 0. The image lists are shuffled and embedded in batches smaller than the lists, so a
label that leaves its image, or a batch out of order, changes the numbers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from vissl_neg.data.pairs import ImageListDataset, Retrieval
from vissl_neg.geo.retrieval import evaluate_retrieval

import helpers  # noqa: F401  (pins torch to one CPU thread)

CLASSES = 24


class Oracle(torch.nn.Module):
    """uint8 (B, 3, H, W) whose red value is 10 x class -> the class's one-hot row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x[:, 0].float().mean(dim=(1, 2)) / 10).round().long()
        return torch.nn.functional.one_hot(cls, CLASSES).float()


def _images(folder, classes: list[int], labels: list) -> ImageListDataset:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, c in enumerate(classes):
        path = folder / f"{i:03d}.png"
        Image.fromarray(np.full((8, 8, 3), 10 * c, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageListDataset(paths, labels, (8, 8))


def _evaluate(retrieval: Retrieval) -> dict[str, float]:
    return evaluate_retrieval(Oracle(), retrieval, torch.nn.Identity(), torch.device("cpu"), batch_size=3)


def test_university1652_labels_follow_their_images(tmp_path):
    rng = random.Random(0)
    buildings = list(range(12))
    drones = [b for b in buildings for _ in range(3)]  # three drone images per building
    rng.shuffle(drones)
    satellites = buildings + [20, 21, 22]  # three distractor buildings in the gallery
    rng.shuffle(satellites)
    queries, gallery = _images(tmp_path / "q", drones, drones), _images(tmp_path / "g", satellites, satellites)

    def d2s(labels=drones, distractors="ranked", images=queries):
        retrieval = Retrieval(
            "d2s",
            "university",
            queries=ImageListDataset(images.paths, labels, (8, 8)),
            references=gallery,
            options={"distractors": distractors},
        )
        return _evaluate(retrieval)

    for distractors in ("ranked", "dropped"):
        got = d2s(distractors=distractors)
        assert got["d2s/R@1"] == 100.0 and got["d2s/mAP"] == pytest.approx(100.0)
    # the same images with building 4's label moved to building 3: its three queries now miss
    assert d2s([3 if c == 4 else c for c in drones])["d2s/R@1"] == pytest.approx(100.0 * 33 / 36)
    # one query's image shows distractor building 20: it outranks the true satellite unless the
    # reference's protocol drops the distractors (its true satellite then ties the others and wins)
    looks = _images(tmp_path / "q2", [20] + drones[1:], drones)
    assert d2s(images=looks)["d2s/R@1"] == pytest.approx(100.0 * 35 / 36)
    assert d2s(images=looks, distractors="dropped")["d2s/R@1"] == 100.0


def test_vigor_positive_and_semi_positives_follow_their_images(tmp_path):
    rng = random.Random(1)
    tiles = list(range(20))
    rng.shuffle(tiles)
    positives = [rng.randrange(20) for _ in range(10)]
    labels = [[p, (p + 1) % 20, (p + 2) % 20, (p + 3) % 20] for p in positives]
    vigor = Retrieval(
        "",
        "vigor",
        queries=_images(tmp_path / "q", positives, labels),
        references=_images(tmp_path / "s", tiles, tiles),
        options={"one_percent": "sample4geo"},
    )
    assert _evaluate(vigor) == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "R@1%": 100.0, "hit_rate": 100.0}
    # the first query's image now shows its first semi-positive: a hit, but not R@1
    semi = [labels[0][1]] + positives[1:]
    vigor.queries = _images(tmp_path / "q2", semi, labels)
    got = _evaluate(vigor)
    assert (got["R@1"], got["hit_rate"]) == (90.0, 100.0)


def test_recall_by_label(tmp_path):
    rng = random.Random(2)
    ids = list(range(16))
    shuffled = ids[:]
    rng.shuffle(shuffled)
    by_label = Retrieval(
        "",
        "recall",
        queries=_images(tmp_path / "q", ids, ids),
        references=_images(tmp_path / "r", shuffled, shuffled),
    )
    assert _evaluate(by_label)["R@1"] == 100.0
    swapped = ids[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    by_label.queries = ImageListDataset(by_label.queries.paths, swapped, (8, 8))
    assert _evaluate(by_label)["R@1"] == pytest.approx(100.0 * 14 / 16)
