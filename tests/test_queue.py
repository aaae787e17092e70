"""NegativeQueue against a plain Python ring buffer."""

from __future__ import annotations

import pytest
import torch

from vissl_neg.negatives import NegativeQueue

import helpers  # noqa: F401  (pins torch to one CPU thread)


class RingSim:
    """Reference: write each key, one at a time, at ptr, then advance ptr mod K."""

    def __init__(self, keys: torch.Tensor, labels: torch.Tensor):
        self.keys = [row.clone() for row in keys]
        self.labels = [int(v) for v in labels]
        self.ptr = 0

    def enqueue(self, keys, labels=None):
        for i in range(keys.shape[0]):
            self.keys[self.ptr] = keys[i].detach().clone()
            self.labels[self.ptr] = -1 if labels is None else int(labels[i])
            self.ptr = (self.ptr + 1) % len(self.keys)

    def check(self, q: NegativeQueue):
        assert torch.equal(q.keys, torch.stack(self.keys))
        assert q.labels.tolist() == self.labels
        assert int(q.ptr) == self.ptr


def _batches(sizes, dim, seed=0, label_start=0):
    g = torch.Generator().manual_seed(seed)
    out, next_label = [], label_start
    for b in sizes:
        out.append((torch.randn(b, dim, generator=g), torch.arange(next_label, next_label + b)))
        next_label += b
    return out


def test_initial_state():
    q = NegativeQueue(size=10, dim=4)
    assert q.keys.shape == (10, 4)
    assert torch.allclose(q.keys.norm(dim=1), torch.ones(10), atol=1e-5)
    assert q.labels.tolist() == [-1] * 10
    assert int(q.ptr) == 0
    assert q.negatives(None, None, None, None, 0).source is q.keys


def test_wrap_around_matches_ring_buffer():
    torch.manual_seed(0)
    q = NegativeQueue(size=10, dim=4)
    sim = RingSim(q.keys, q.labels)
    for keys, labels in _batches([4, 4, 4], 4):
        q.enqueue(keys, labels)
        sim.enqueue(keys, labels)
        sim.check(q)
    assert int(q.ptr) == 2  # 12 keys into 10 slots: wrapped once, nothing dropped
    # the newest 10 of the 12 labels are all present
    assert sorted(q.labels.tolist()) == list(range(2, 12))


def test_uneven_batches_and_no_labels():
    torch.manual_seed(1)
    q = NegativeQueue(size=7, dim=3)
    sim = RingSim(q.keys, q.labels)
    for i, (keys, labels) in enumerate(_batches([3, 5, 1, 6, 7, 2], 3, seed=4)):
        use = labels if i % 2 == 0 else None
        q.enqueue(keys, use)
        sim.enqueue(keys, use)
        sim.check(q)


@pytest.mark.parametrize("first", [0, 3])
def test_batch_larger_than_queue_keeps_newest(first):
    torch.manual_seed(2)
    q = NegativeQueue(size=10, dim=4)
    sim = RingSim(q.keys, q.labels)
    for keys, labels in _batches([first, 23], 4, seed=5):
        if keys.shape[0]:
            q.enqueue(keys, labels)
            sim.enqueue(keys, labels)
    sim.check(q)
    assert sorted(q.labels.tolist()) == list(range(first + 23 - 10, first + 23))
    assert int(q.ptr) == (first + 23) % 10


def test_batch_larger_than_queue_without_labels():
    q = NegativeQueue(size=5, dim=2)
    sim = RingSim(q.keys, q.labels)
    keys = torch.randn(12, 2)
    q.enqueue(keys)
    sim.enqueue(keys)
    sim.check(q)


def test_ptr_is_a_tensor_buffer():
    q = NegativeQueue(size=10, dim=4)
    buffers = dict(q.named_buffers())
    assert set(buffers) == {"keys", "labels", "ptr"}
    assert torch.is_tensor(q.ptr) and q.ptr.dim() == 0 and q.ptr.dtype == torch.long
    assert set(q.state_dict()) == {"keys", "labels", "ptr"}
    assert list(q.parameters()) == []
    q = q.to(torch.float64)
    assert q.keys.dtype == torch.float64 and q.ptr.dtype == torch.long


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(3)
    a = NegativeQueue(size=10, dim=4)
    for keys, labels in _batches([4, 3], 4, seed=6):
        a.enqueue(keys, labels)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    torch.manual_seed(99)
    b = NegativeQueue(size=10, dim=4)
    assert not torch.equal(a.keys, b.keys)
    b.load_state_dict(state)
    assert torch.equal(a.keys, b.keys) and torch.equal(a.labels, b.labels) and int(a.ptr) == int(b.ptr) == 7
    for keys, labels in _batches([4, 4, 11], 4, seed=7, label_start=100):
        a.enqueue(keys, labels)
        b.enqueue(keys, labels)
        assert torch.equal(a.keys, b.keys) and torch.equal(a.labels, b.labels) and int(a.ptr) == int(b.ptr)


def _copy_is_independent(stored: torch.Tensor, src: torch.Tensor, before: torch.Tensor) -> None:
    """``stored`` holds ``before`` (the values ``src`` had) in storage of its own, with its own
    version counter and no autograd graph: changing ``src`` in place leaves it as it was."""
    assert not stored.requires_grad and stored.grad_fn is None
    assert stored.untyped_storage().data_ptr() != src.untyped_storage().data_ptr()
    version = stored._version
    with torch.no_grad():
        src.add_(1.0)  # an in-place change of what was enqueued
    assert src._version > 0 and stored._version == version  # no shared version counter (not a view or .detach())
    assert torch.equal(stored, before)


@pytest.mark.parametrize("batch", [4, 6, 9])  # within the queue, filling it, wider (the newest 6 kept)
def test_enqueue_keeps_an_independent_detached_copy(batch):
    """A key leaf that requires grad goes in: the queue's keys carry no graph, live in their own
    storage with their own version counter, and a loss on them sends nothing back to the keys,
    while the query's gradient arrives."""
    q = NegativeQueue(size=6, dim=3)
    src = torch.randn(batch, 3, requires_grad=True)
    q.enqueue(src)
    kept = src.detach()[-6:].clone()
    rows = (torch.arange(batch) % 6)[-6:]
    assert torch.equal(q.keys[rows], kept)
    _copy_is_independent(q.keys, src, q.keys.clone())
    assert torch.equal(q.keys[rows], kept)
    query = torch.randn(2, 3, requires_grad=True)
    loss = (query @ q.negatives(query, query, None, None, 6).source.t()).logsumexp(1).sum()
    loss.backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert src.grad is None  # nothing reached the enqueued keys
    assert not (q.keys * 1.0).sum().requires_grad  # a loss on the keys alone has no graph to follow


@pytest.mark.parametrize("size", [0, -1])
def test_non_positive_size(size):
    with pytest.raises(ValueError):
        NegativeQueue(size=size, dim=4)
