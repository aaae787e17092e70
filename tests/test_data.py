"""Fashion-MNIST idx reader, its errors, and the resumable batch sampler."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from vissl_neg.config import load_config
from vissl_neg.data import (
    ResumableBatchSampler,
    TensorImageDataset,
    build_dataset,
    load_fashion_mnist,
    make_loader,
    read_idx,
)
from vissl_neg.errors import DataError

from helpers import FILES, IMAGE_MAGIC, idx_bytes, write_fmnist_fixture

N_TRAIN, N_TEST = 64, 32


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    written = write_fmnist_fixture(root, n_train=N_TRAIN, n_test=N_TEST, seed=3)
    return root, written


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _one_line(msg: str) -> str:
    assert msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------ idx reader
def test_read_idx_raw_arrays(fixture_dir):
    root, written = fixture_dir
    images, labels = written["train"]
    got = read_idx(root / FILES["train"][0])
    assert got.dtype == np.uint8 and got.shape == (N_TRAIN, 28, 28)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx(root / FILES["train"][1]), labels)


def test_read_idx_uncompressed(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(arr, IMAGE_MAGIC))
    np.testing.assert_array_equal(read_idx(path), arr)


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_fashion_mnist(fixture_dir, split):
    root, written = fixture_dir
    images, labels = load_fashion_mnist(root, split)
    ref_images, ref_labels = written[split]
    n = len(ref_labels)
    assert images.dtype == torch.uint8 and images.shape == (n, 1, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (n,)
    assert torch.equal(images[:, 0], torch.from_numpy(ref_images))
    assert labels.tolist() == [int(v) for v in ref_labels]
    assert set(labels.tolist()) == set(range(10))
    images[0, 0, 0, 0] = 255 - images[0, 0, 0, 0]  # writable, not a view of a read-only buffer


def test_build_dataset_and_subset(fixture_dir):
    root, written = fixture_dir
    cfg = load_config(None, [f"data.root={root}", "data.subset=10"])
    train = build_dataset(cfg.data, "train")
    test = build_dataset(cfg.data, "test")
    assert len(train) == 10 and len(test) == N_TEST  # the subset only applies to training
    assert train.in_chans == 1 and train.image_size == (28, 28)
    img, label, idx = train[3]
    assert torch.equal(img[0], torch.from_numpy(written["train"][0][3]))
    assert int(label) == int(written["train"][1][3]) and idx == 3


def test_missing_folder():
    with pytest.raises(DataError) as info:
        load_fashion_mnist("/nonexistent/fmnist", "train")
    msg = _one_line(str(info.value))
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "/nonexistent/fmnist" in msg


def test_missing_file_in_folder(fixture_dir, tmp_path):
    root = _copy(fixture_dir[0], tmp_path)
    (root / FILES["test"][1]).unlink()
    load_fashion_mnist(root, "train")  # the other split is unaffected
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, "test")
    msg = _one_line(str(info.value))
    assert FILES["test"][1] in msg and "apt-get install -y dataset-fashion-mnist" in msg


def test_truncated_gz(fixture_dir, tmp_path):
    root = _copy(fixture_dir[0], tmp_path)
    path = root / FILES["train"][0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, "train")
    assert FILES["train"][0] in _one_line(str(info.value))


def test_truncated_payload_in_valid_gzip(fixture_dir, tmp_path):
    root = _copy(fixture_dir[0], tmp_path)
    path = root / FILES["train"][0]
    raw = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])  # a well-formed gzip stream holding a short idx payload
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, "train")
    assert FILES["train"][0] in _one_line(str(info.value))


def test_not_gzip_at_all(fixture_dir, tmp_path):
    root = _copy(fixture_dir[0], tmp_path)
    (root / FILES["train"][1]).write_bytes(b"this is not gzip data at all" * 10)
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, "train")
    assert FILES["train"][1] in _one_line(str(info.value))


@pytest.mark.parametrize("magic", [0x00000903, 0x12345678, 0x00000703])
def test_wrong_magic(fixture_dir, tmp_path, magic):
    root = _copy(fixture_dir[0], tmp_path)
    path = root / FILES["train"][0]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[0:4] = magic.to_bytes(4, "big")
    with gzip.open(path, "wb") as f:
        f.write(bytes(raw))
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, "train")
    msg = _one_line(str(info.value))
    assert FILES["train"][0] in msg and "magic" in msg


def test_images_labels_count_mismatch(fixture_dir, tmp_path):
    root = _copy(fixture_dir[0], tmp_path)
    labels = np.zeros(N_TRAIN - 1, dtype=np.uint8)
    with gzip.open(root / FILES["train"][1], "wb") as f:
        f.write(idx_bytes(labels, 0x00000801))
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, "train")
    _one_line(str(info.value))


# ------------------------------------------------------------------ sampler
def _epoch(sampler, epoch, start=0):
    sampler.set_epoch(epoch, start_batch=start)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    return batches


def test_sampler_epoch_is_permutation_and_drops_last():
    n, b = 103, 10
    s = ResumableBatchSampler(n, b, seed=7)
    batches = _epoch(s, 0)
    assert len(batches) == n // b == s.batches_per_epoch()
    assert all(len(x) == b for x in batches)
    flat = [i for x in batches for i in x]
    assert len(set(flat)) == len(flat) == (n // b) * b  # no repeats, partial batch dropped
    assert set(flat) <= set(range(n))
    assert flat != sorted(flat)  # shuffled
    # the dropped items plus the batches form the whole dataset
    assert len(set(range(n)) - set(flat)) == n % b


def test_sampler_resume_yields_tail_of_same_epoch():
    s = ResumableBatchSampler(100, 8, seed=1)
    full = _epoch(s, 3)
    for start in (0, 1, 5, len(full) - 1, len(full)):
        fresh = ResumableBatchSampler(100, 8, seed=1)  # a new process after a restart
        assert _epoch(fresh, 3, start) == full[start:]


def test_sampler_epochs_and_seeds_differ():
    s = ResumableBatchSampler(64, 8, seed=0)
    e0, e1 = _epoch(s, 0), _epoch(s, 1)
    assert e0 != e1
    assert _epoch(s, 0) == e0  # deterministic
    assert _epoch(ResumableBatchSampler(64, 8, seed=1), 0) != e0


def test_sampler_ranks_interleave_to_global_batch():
    n, per_rank, ws = 50, 4, 2
    glob = _epoch(ResumableBatchSampler(n, per_rank * ws, seed=5), 2)
    shares = [_epoch(ResumableBatchSampler(n, per_rank, seed=5, rank=r, world_size=ws), 2) for r in range(ws)]
    assert len(shares[0]) == len(shares[1]) == len(glob) == n // (per_rank * ws)
    for b, g in enumerate(glob):
        assert len(shares[0][b]) == len(shares[1][b]) == per_rank
        interleaved = [None] * len(g)
        interleaved[0::2] = shares[0][b]
        interleaved[1::2] = shares[1][b]
        assert interleaved == g
        assert not set(shares[0][b]) & set(shares[1][b])


def test_loader_fetches_the_sampled_batches():
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    ds = TensorImageDataset(images, labels)
    s = ResumableBatchSampler(len(ds), 8, seed=2)
    s.set_epoch(1, start_batch=2)
    expected = _epoch(ResumableBatchSampler(len(ds), 8, seed=2), 1)[2:]
    loader = make_loader(ds, s, num_workers=0, pin_memory=False)
    got = list(loader)
    assert len(got) == 3
    for (x, y, idx), exp in zip(got, expected):
        assert idx.tolist() == exp
        assert torch.equal(x, images[exp]) and torch.equal(y, labels[exp])
