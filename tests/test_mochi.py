"""MoCHi (Kalantidis et al. 2020) against a loop over queries written from the paper's formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.negatives.mochi import MixCoefficients, mix_hard_negatives, mochi_mix, sample_mix_coefficients

import helpers  # noqa: F401  (pins torch to one CPU thread)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _hardest_by_sorting(q, negs, n):
    """Per query, the indices of its n most similar negatives, via Python's sort."""
    out = []
    for b in range(q.shape[0]):
        rows = negs if negs.dim() == 2 else negs[b]
        scores = [float(q[b] @ r) for r in rows]
        out.append(sorted(range(len(scores)), key=lambda j: -scores[j])[:n])
    return out


def _hand_mix(q, negs, hard, c):
    """normalise(α h_i + (1−α) h_j) and normalise(β q + (1−β) h_j), one synthetic at a time."""
    rows = []
    for b in range(q.shape[0]):
        src = negs if negs.dim() == 2 else negs[b]
        h = [src[j] for j in hard[b]]
        out = []
        for i, j, a in zip(c.i[b].tolist(), c.j[b].tolist(), c.w[b].tolist()):
            v = a * h[i] + (1 - a) * h[j]
            out.append(v / v.norm())
        for j, beta in zip(c.jq[b].tolist(), c.wq[b].tolist()):
            v = beta * q[b] + (1 - beta) * h[j]
            out.append(v / v.norm())
        rows.append(torch.stack(out))
    return torch.stack(rows)


@pytest.mark.parametrize("per_query", [False, True])
def test_mix_hard_negatives_matches_the_formula(per_query):
    q = _unit(3, 8, seed=0)
    negs = _unit(3, 20, 8, seed=1) if per_query else _unit(20, 8, seed=1)
    n_hard, s, s_prime = 5, 7, 4
    out = mix_hard_negatives(q, negs, n_hard, s, s_prime, generator=torch.Generator().manual_seed(3))
    assert out.shape == (3, s + s_prime, 8)
    c = sample_mix_coefficients(3, n_hard, s, s_prime, generator=torch.Generator().manual_seed(3))
    want = _hand_mix(q, negs, _hardest_by_sorting(q, negs, n_hard), c)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, s + s_prime, dtype=out.dtype))


def test_explicit_coefficients_by_hand():
    # two orthogonal negatives mixed half and half -> their normalised bisector
    negs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    q = torch.tensor([[0.0, 0.0, 1.0]])
    c = MixCoefficients(
        i=torch.tensor([[0]]),
        j=torch.tensor([[1]]),
        w=torch.tensor([[0.5]]),
        jq=torch.tensor([[0]]),
        wq=torch.tensor([[0.25]]),
    )
    out = mochi_mix(q, negs, c)
    r = 2**-0.5
    torch.testing.assert_close(out[0, 0], torch.tensor([r, r, 0.0]))
    # 0.25 q + 0.75 n_0 = (0.75, 0, 0.25), normalised
    torch.testing.assert_close(out[0, 1], F.normalize(torch.tensor([0.75, 0.0, 0.25]), dim=0))


def test_sampler_ranges():
    c = sample_mix_coefficients(64, 10, 50, 30, generator=torch.Generator().manual_seed(0))
    for pos in (c.i, c.j, c.jq):
        assert pos.min() >= 0 and pos.max() < 10
    assert c.w.min() >= 0 and c.w.max() < 1
    assert c.wq.min() >= 0 and c.wq.max() < 0.5  # the query never dominates
    assert c.i.shape == (64, 50) and c.jq.shape == (64, 30)
    assert c.wq.max() > 0.4 and c.w.max() > 0.9  # the whole range is used, not a constant


def test_query_mixes_are_harder_than_the_negative_they_mix():
    q, negs = _unit(4, 16, seed=5), _unit(50, 16, seed=6)
    out = mix_hard_negatives(q, negs, n_hard=8, s=0, s_prime=32, generator=torch.Generator().manual_seed(1))
    c = sample_mix_coefficients(4, 8, 0, 32, generator=torch.Generator().manual_seed(1))
    hard = torch.tensor(_hardest_by_sorting(q, negs, 8))
    base = torch.einsum("bd,bsd->bs", q, negs[hard.gather(1, c.jq)])
    mixed = torch.einsum("bd,bsd->bs", q, out.double())
    assert (mixed >= base - 1e-9).all()


def test_no_gradient_into_synthetic_negatives():
    q = _unit(2, 8, seed=7).requires_grad_(True)
    negs = _unit(12, 8, seed=8).requires_grad_(True)
    out = mix_hard_negatives(q, negs, 4, 3, 2)
    assert not out.requires_grad
    (q * out.sum(1)).sum().backward()  # q's own gradient still flows through the dot product
    assert q.grad is not None and negs.grad is None
