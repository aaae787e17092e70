"""The building blocks for a user's loop (vissl_neg.negatives.functional) against the plain
formulas: InfoNCE written out with cross_entropy, the batch source as SimCLR's diagonal
targets, the filter as a top-k, and each strategy function as its registered class."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vissl_neg
from vissl_neg.losses import debiased_info_nce
from vissl_neg.negatives import Filter, Mochi, NegativeSet
from vissl_neg.negatives.functional import (
    apply_strategies,
    batch_negatives,
    contrastive_loss,
    filter_hardest,
    mochi,
    negative_set,
)

T = 0.2


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


@pytest.fixture
def qkn():
    torch.manual_seed(0)
    return _unit(6, 16).requires_grad_(), _unit(6, 16), _unit(40, 16)


def _info_nce(q, k, negatives, t=T):
    """CE([q·k, q·n_1, ...] / T, 0) written out; negatives (K, D) or (B, K, D)."""
    neg = q @ negatives.t() if negatives.dim() == 2 else torch.einsum("bd,bkd->bk", q, negatives)
    logits = torch.cat([(q * k).sum(1, keepdim=True), neg], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def test_shared_and_per_query_negatives_give_infonce(qkn):
    q, k, queue = qkn
    loss = contrastive_loss(negative_set(q, k, queue), temperature=T)
    assert torch.allclose(loss, _info_nce(q, k, queue), atol=1e-6)
    per_query = _unit(6, 9, 16)
    loss = contrastive_loss(negative_set(q, k, per_query), temperature=T)
    assert torch.allclose(loss, _info_nce(q, k, per_query), atol=1e-6)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_the_debiased_loss_by_name_is_the_debiased_formula(qkn):
    q, k, queue = qkn
    loss = contrastive_loss(negative_set(q, k, queue), name="debiased", temperature=0.5, tau_plus=0.1, beta=1.0)
    assert torch.allclose(loss, debiased_info_nce(q, k, queue, 0.5, 0.1, 1.0), atol=1e-6)
    assert contrastive_loss(negative_set(q, k, queue), temperature=T, scale=3.0).item() == pytest.approx(
        3.0 * _info_nce(q, k, queue).item(), rel=1e-5
    )


def test_batch_negatives_are_the_other_keys(qkn):
    q, k, _ = qkn
    loss = contrastive_loss(batch_negatives(q, k), temperature=T)
    simclr = F.cross_entropy(q @ k.t() / T, torch.arange(len(q)))  # the own key on the diagonal
    assert torch.allclose(loss, simclr, atol=1e-6)


def test_filter_keeps_the_hardest(qkn):
    q, k, queue = qkn
    negs = filter_hardest(q, k, queue, keep=5)
    kept = negs.real_similarities().detach().sort(dim=1, descending=True).values
    top = (q.detach() @ queue.t()).topk(5, dim=1).values
    assert torch.allclose(kept, top)


def test_a_strategy_function_is_its_class_and_chains(qkn):
    q, k, queue = qkn
    torch.manual_seed(1)
    by_function = mochi(filter_hardest(q, k, queue, keep=20), n_hard=8, s=5, s_prime=3)
    torch.manual_seed(1)
    by_class = apply_strategies(negative_set(q, k, queue), [Filter(keep=20), Mochi(n_hard=8, s=5, s_prime=3)])
    assert isinstance(by_function, NegativeSet)
    assert by_function.synthetic_vectors().shape == (6, 8, 16)
    assert torch.equal(by_function.synthetic_vectors(), by_class.synthetic_vectors())
    assert torch.equal(contrastive_loss(by_function), contrastive_loss(by_class))


def test_bad_calls_say_what_is_wrong(qkn):
    q, k, queue = qkn
    with pytest.raises(TypeError, match="needs q, k and negatives"):
        mochi(q, k)
    with pytest.raises(ValueError, match="n_hard > 0"):
        mochi(q, k, queue, n_hard=0)
    with pytest.raises(ValueError, match="unknown loss 'infonce'"):
        contrastive_loss(negative_set(q, k, queue), name="infonce")
    with pytest.raises(ValueError, match=r"\(K, D\) or \(B, K, D\)"):
        negative_set(q, k, _unit(3, 4, 16))


def test_the_trainer_scores_through_the_same_function(monkeypatch, qkn):
    """Trainer.contrast delegates to functional.contrast: a spy there sees the trainer's call."""
    import vissl_neg.engine.trainer as trainer_module

    q, k, queue = qkn
    seen = []
    real = trainer_module.contrast

    def spy(negs, loss):
        seen.append(negs)
        return real(negs, loss)

    monkeypatch.setattr(trainer_module, "contrast", spy)
    fake = type(
        "T",
        (),
        {
            "negative_set": lambda self, *a: negative_set(q, k, queue),
            "loss": vissl_neg.negatives.functional.LOSSES["info_nce"](temperature=T),
        },
    )()
    loss = trainer_module.Trainer.contrast(fake, q, k, torch.arange(6))[0]
    assert len(seen) == 1 and torch.allclose(loss, _info_nce(q, k, queue), atol=1e-6)


@pytest.mark.parametrize(
    "name, params",
    [
        ("geodesic", {"n_hard": 8, "s": 4, "s_prime": 2}),
        ("feature_transform", {}),
        ("ambiguous", {"keep": 10, "temperature": T}),  # SimANS weights are on logits: it needs T
        ("false_negatives", {"top": 3, "mode": "attract"}),
    ],
)
def test_every_strategy_function_trains_on_plain_tensors(name, params, qkn):
    """Each door gives a set the loss takes: a finite loss whose gradient reaches the queries."""
    from vissl_neg.negatives import functional

    q, k, queue = qkn
    negs = getattr(functional, name)(q, k, queue, **params)
    loss = contrastive_loss(negs, temperature=T)
    assert torch.isfinite(loss) and loss.item() != pytest.approx(_info_nce(q, k, queue).item())
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
