"""Weighted kNN against a brute-force loop; linear probe on separable features."""

from __future__ import annotations

import math

import pytest
import torch

from vissl_neg.augment import EvalTransform
from vissl_neg.config import load_config
from vissl_neg.data import TensorImageDataset
from vissl_neg.eval import extract_features, knn_predict, knn_top1, linear_probe, standardise

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _brute_force_knn(query, bank, labels, num_classes, k, t):
    """score(c) = Σ_{top-k by cosine} exp(s_j / T)·[y_j = c]; argmax."""
    preds = []
    for qv in query.tolist():
        qn = math.sqrt(sum(v * v for v in qv))
        sims = []
        for j, bv in enumerate(bank.tolist()):
            bn = math.sqrt(sum(v * v for v in bv))
            sims.append((sum(a * b for a, b in zip(qv, bv)) / (qn * bn), j))
        sims.sort(key=lambda s: -s[0])
        scores = [0.0] * num_classes
        for s, j in sims[: min(k, len(sims))]:
            scores[int(labels[j])] += math.exp(s / t)
        preds.append(max(range(num_classes), key=lambda c: scores[c]))
    return preds


def test_knn_two_clusters():
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([5.0, 0.0, 0.0]) + 0.3 * torch.randn(20, 3, generator=g)
    b = torch.tensor([0.0, 5.0, 1.0]) + 0.3 * torch.randn(20, 3, generator=g)
    bank = torch.cat([a, b])
    labels = torch.tensor([0] * 20 + [1] * 20)
    queries = torch.tensor([[4.0, 0.5, 0.0], [0.2, 3.0, 0.5], [10.0, -0.5, 0.3], [0.0, 1.0, 0.2]])
    pred = knn_predict(queries, bank, labels, num_classes=2, k=5, temperature=0.1)
    assert pred.tolist() == [0, 1, 0, 1]
    assert pred.dtype == torch.long


def test_knn_weighting_beats_majority():
    """Two very close neighbours of class 1 outweigh three far ones of class 0 at a low T."""
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([1, 1, 0, 0, 0])
    query = torch.tensor([[1.0, 0.6]])
    assert knn_predict(query, bank, labels, 2, k=5, temperature=0.05).tolist() == [1]
    # with a huge temperature every weight is ~1: plain majority vote
    assert knn_predict(query, bank, labels, 2, k=5, temperature=1e4).tolist() == [0]


@pytest.mark.parametrize("k,t,chunk", [(5, 0.1, 1024), (7, 0.5, 3), (50, 0.2, 4), (1, 0.1, 2)])
def test_knn_matches_brute_force(k, t, chunk):
    g = torch.Generator().manual_seed(k)
    bank = torch.randn(30, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,), generator=g)
    query = torch.randn(11, 6, generator=g, dtype=torch.float64)
    got = knn_predict(query, bank, labels, 4, k=k, temperature=t, chunk_size=chunk)
    assert got.tolist() == _brute_force_knn(query, bank, labels, 4, k, t)


def test_knn_top1_percent():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank_y = torch.tensor([0, 1])
    test = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.2], [0.9, 0.1]])
    test_y = torch.tensor([0, 1, 0, 1])  # the last one is labelled against its neighbour
    assert knn_top1(bank, bank_y, test, test_y, k=1) == pytest.approx(75.0)


def test_linear_probe_separable_gives_100():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=g) * 6
    y_train = torch.arange(80) % 4
    y_test = torch.arange(40) % 4
    x_train = centers[y_train] + torch.randn(80, 8, generator=g)
    x_test = centers[y_test] + torch.randn(40, 8, generator=g)
    # the classes are separable (nearest centre is right for every point)
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert torch.equal(torch.cdist(x, centers).argmin(1), y)
    assert linear_probe(x_train, y_train, x_test, y_test, max_iter=50) == pytest.approx(100.0)


def test_linear_probe_uninformative_features_are_near_chance():
    g = torch.Generator().manual_seed(1)
    x_train, x_test = torch.randn(200, 4, generator=g), torch.randn(400, 4, generator=g)
    y_train, y_test = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (400,), generator=g)
    assert linear_probe(x_train, y_train, x_test, y_test, max_iter=50) < 50.0


def test_standardise_uses_training_statistics():
    train = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    test = torch.tensor([[3.0, 11.0]])
    a, b = standardise(train, test)
    assert torch.allclose(a[:, 0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(b[0, 0], torch.tensor(0.0))
    assert torch.isfinite(a).all() and torch.isfinite(b).all()  # constant feature: no division by 0


def test_extract_features_in_dataset_order():
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10) % 3
    ds = TensorImageDataset(images, labels)
    transform = EvalTransform(load_config(None, ["augment.size=4"]).augment, 1)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(16))
    backbone.train()
    feats, y = extract_features(backbone, ds, transform, torch.device("cpu"), batch_size=3)
    assert backbone.training  # mode restored
    with torch.no_grad():
        expected = backbone.eval()(transform(images))
    assert feats.shape == (10, 16) and torch.allclose(feats, expected, atol=1e-6)
    assert torch.equal(y, labels)
