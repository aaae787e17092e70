"""The memory bank: update formula, per-query draws that never hit the query, storage, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.negatives import MemoryBank

import helpers  # noqa: F401  (pins torch to one CPU thread)


def test_update_mixes_with_momentum_and_renormalises():
    torch.manual_seed(0)
    bank = MemoryBank(6, 4, momentum=0.25)
    old = bank.bank.clone()
    feats = F.normalize(torch.randn(2, 4), dim=1)
    idx = torch.tensor([4, 1])
    bank.update(idx, feats, torch.tensor([7, 3]))
    for row, i in enumerate(idx.tolist()):
        v = 0.25 * old[i] + 0.75 * feats[row]
        torch.testing.assert_close(bank.bank[i], v / v.norm())
    for i in (0, 2, 3, 5):
        torch.testing.assert_close(bank.bank[i], old[i])
    assert bank.labels.tolist() == [-1, 3, -1, -1, 7, -1]
    torch.testing.assert_close(bank.gather(torch.tensor([[4, 1]])), bank.bank[[4, 1]].unsqueeze(0))
    assert not feats.requires_grad


def test_momentum_zero_stores_the_features():
    bank = MemoryBank(3, 2, momentum=0.0)
    feats = torch.tensor([[0.6, 0.8]])
    bank.update(torch.tensor([2]), feats)
    torch.testing.assert_close(bank.bank[2], feats[0])


def test_draws_never_hit_the_own_index_and_cover_the_rest_uniformly():
    bank = MemoryBank(5, 2)
    own = torch.tensor([0, 2, 4])
    rows = bank.sample(own, 20_000, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (3, 20_000)
    for b, i in enumerate(own.tolist()):
        counts = torch.bincount(rows[b], minlength=5)
        assert counts[i] == 0
        others = counts[torch.arange(5) != i].double() / 20_000
        assert (others - 0.25).abs().max() < 0.02  # 4 items at 1/4 each (±8 sd of a binomial)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_update_keeps_an_independent_detached_copy(momentum):
    """Feature leaves that require grad go in: the bank's rows carry no graph, live in their own
    storage with their own version counter, and a loss on drawn rows sends gradient to the
    query only."""
    torch.manual_seed(0)
    bank = MemoryBank(8, 4, momentum=momentum)
    old = bank.bank.clone()
    feats = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    idx = torch.tensor([6, 0, 3])
    bank.update(idx, feats)
    want = F.normalize(momentum * old[idx] + (1 - momentum) * feats.detach(), dim=1)
    torch.testing.assert_close(bank.bank[idx], want)
    assert not bank.bank.requires_grad and bank.bank.grad_fn is None
    assert bank.bank.untyped_storage().data_ptr() != feats.untyped_storage().data_ptr()
    version, before = bank.bank._version, bank.bank.clone()
    with torch.no_grad():
        feats.mul_(-1.0)  # an in-place change of the features after the update
    assert feats._version > 0 and bank.bank._version == version and torch.equal(bank.bank, before)
    query = torch.randn(3, 4, requires_grad=True)
    negs = bank.negatives(query, query, None, idx, 5)
    rows = negs.source[negs.index]  # (3, 5, 4) the drawn rows
    torch.einsum("bd,bkd->bk", query, rows).logsumexp(1).sum().backward()
    assert query.grad is not None and query.grad.abs().sum() > 0 and feats.grad is None


def test_half_precision_storage_and_size():
    bank = MemoryBank(1000, 128, dtype="bfloat16")
    assert bank.bank.dtype == torch.bfloat16 and bank.gather(torch.tensor([0])).dtype == torch.float32
    bytes_per_row = bank.bank.element_size() * 128
    assert 1_281_167 * bytes_per_row / 2**20 < 330  # ImageNet-1k at 128-d: ~313 MiB (328 MB)
    bank.update(torch.tensor([5]), F.normalize(torch.randn(1, 128), dim=1))
    assert abs(float(bank.gather(torch.tensor([5])).norm()) - 1) < 1e-2


def test_state_dict_round_trip():
    a, b = MemoryBank(10, 3), MemoryBank(10, 3)
    a.update(torch.tensor([1, 2]), F.normalize(torch.randn(2, 3), dim=1), torch.tensor([5, 6]))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.bank, b.bank) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("args", [(1, 4), (5, 4, 1.0)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        MemoryBank(*args)
