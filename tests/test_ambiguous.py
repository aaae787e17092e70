"""SimANS ambiguous negatives (Zhou et al. 2022): the log-weights against the formula, the
Gumbel-top-k sampler against the exact Plackett–Luce inclusion probabilities, and the
strategy restricting each query's negatives (and carrying false-negative marks along)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.negatives import Ambiguous, NegativeSet
from vissl_neg.negatives.ambiguous import gumbel_top_k, sample_gumbel, sample_without_replacement, simans_logits

import helpers  # noqa: F401  (pins torch to one CPU thread)
from goodness_of_fit import bound


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_simans_logits_match_the_formula():
    g = torch.Generator().manual_seed(0)
    sims, pos = torch.rand(3, 5, generator=g) * 2 - 1, torch.rand(3, generator=g)
    a, b = 12.5, 0.1
    out = simans_logits(sims, pos, a, b)
    for i in range(3):
        for j in range(5):
            want = -a * (float(sims[i, j]) - float(pos[i]) - b) ** 2
            assert math.isclose(float(out[i, j]), want, rel_tol=1e-5, abs_tol=1e-6)
    # the most probable negative scores b above the positive
    assert int(simans_logits(torch.tensor([[0.1, 0.5, 0.6, 0.9]]), torch.tensor([0.4]), 10.0, 0.2).argmax()) == 2


def test_gumbel_top_k_takes_the_largest_noisy_logits():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    noise = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
    picked = gumbel_top_k(logits, 2, noise)
    assert [sorted(r) for r in picked.tolist()] == [[0, 3], [0, 3]]
    assert sorted(gumbel_top_k(logits, 2, torch.zeros_like(logits))[0].tolist()) == [2, 3]
    with pytest.raises(ValueError):
        gumbel_top_k(logits, 5, noise)


def _plackett_luce_inclusion(p: list[float], keep: int) -> list[float]:
    """P(item i among the first ``keep`` draws without replacement), by enumerating orderings."""
    inclusion = [0.0] * len(p)
    for order in itertools.permutations(range(len(p)), keep):
        prob, left = 1.0, 1.0
        for i in order:
            prob *= p[i] / left
            left -= p[i]
        for i in order:
            inclusion[i] += prob
    return inclusion


def test_sampler_inclusion_frequencies_are_plackett_luce():
    p = [0.5, 0.3, 0.15, 0.05]
    keep, n = 2, 20_000
    want = _plackett_luce_inclusion(p, keep)
    assert math.isclose(sum(want), keep)
    logits = torch.tensor(p).log().expand(n, -1)
    picked = sample_without_replacement(logits, keep, generator=torch.Generator().manual_seed(0))
    assert all(len(set(r)) == keep for r in picked[:100].tolist())  # without replacement
    counts = torch.zeros(len(p)).scatter_add_(0, picked.flatten(), torch.ones(picked.numel()))
    # Hoeffding: P(|frequency − p_i| > ε) <= 2 exp(−2 n ε²); ε for a false alarm below 1e-9 per item
    eps = bound(n)
    for i, pi in enumerate(want):
        assert abs(float(counts[i]) / n - pi) < eps, (i, float(counts[i]) / n, pi)
    # ... and far from keep·p, what drawing with replacement would give the first item (1.0)
    assert want[0] < 0.9


def test_gumbel_noise_statistics():
    g = sample_gumbel((200_000,), generator=torch.Generator().manual_seed(1)).double()
    assert abs(float(g.mean()) - 0.5772156649) < 0.01  # Euler–Mascheroni
    assert abs(float(g.var()) - math.pi**2 / 6) < 0.03


def test_ambiguous_keeps_drawn_rows_of_each_querys_negatives():
    q, k, queue = _unit(3, 8, seed=2), _unit(3, 8, seed=3), _unit(40, 8, seed=4)
    strategy = Ambiguous(keep=10, a=0.5, b=0.0, temperature=0.2)
    torch.manual_seed(5)
    out = strategy(NegativeSet(q, k, queue))
    assert out.index.shape == (3, 10)
    sims, pos = q @ queue.t(), (q * k).sum(1)
    torch.manual_seed(5)
    want = sample_without_replacement(simans_logits(sims, pos, 0.5, 0.0, 0.2), 10)
    assert torch.equal(out.index.sort(1).values, want.sort(1).values)
    assert all(len(set(r)) == 10 for r in out.index.tolist())
    torch.testing.assert_close(out.real_similarities(), sims.gather(1, out.index))


def test_ambiguous_after_a_filter_draws_from_the_kept_rows_and_keeps_marks():
    from vissl_neg.negatives import Filter

    q, k, queue = _unit(4, 8, seed=6), _unit(4, 8, seed=7), _unit(50, 8, seed=8)
    marks = torch.zeros(4, 50, dtype=torch.bool)
    marks[:, :7] = True
    base = NegativeSet(q, k, queue, suspected=marks)
    kept = Filter(keep=20)(base)
    drawn = Ambiguous(keep=6, temperature=0.2)(kept)
    for b in range(4):
        assert set(drawn.index[b].tolist()) <= set(kept.index[b].tolist())
        assert drawn.suspected[b].tolist() == [r < 7 for r in drawn.index[b].tolist()]
    with pytest.raises(ValueError, match="restrict"):
        base.with_(index=kept.index)


def test_sharp_weights_draw_the_negatives_nearest_the_shifted_positive():
    q = _unit(2, 8, seed=9)
    queue = _unit(30, 8, seed=10)
    k = _unit(2, 8, seed=11)
    sims, pos = q @ queue.t(), (q * k).sum(1)
    out = Ambiguous(keep=3, a=1e6, b=0.25, temperature=0.2)(NegativeSet(q, k, queue))
    nearest = (sims - pos[:, None] - 0.05).abs().topk(3, dim=1, largest=False).indices
    assert torch.equal(out.index.sort(1).values, nearest.sort(1).values)


def _reference_simans_weights(neg_scores, pos_score, a, b):
    """microsoft/SimXNS@0163380 SimANS/utils/util_wiki.py:621-626: the weight of each candidate
    from the retriever's scores (logits at temperature 1), ``exp(-(s - s_pos + b)**2 * a)``."""
    return [math.exp(-((float(s) - float(pos_score) + b) ** 2) * a) for s in neg_scores]


@pytest.mark.parametrize("temperature", [0.2, 0.1])
def test_weights_match_the_reference_on_logits(temperature):
    """Cosine scores divided by T are the reference's logits; its b enters with the opposite
    sign (the paper's), so our b = -b_ref; a is the reference's a whatever T."""
    g = torch.Generator().manual_seed(12)
    sims, pos = (
        torch.rand(3, 7, generator=g, dtype=torch.float64) * 2 - 1,
        torch.rand(3, generator=g, dtype=torch.float64),
    )
    a, b_ref = 0.5, 1.0  # the reference's default a (co_training_wiki_train.py:582) and NQ's --b (train_NQ_AR2.sh:32)
    ours = torch.softmax(simans_logits(sims, pos, a, -b_ref, temperature), dim=1)
    for i in range(3):
        w = _reference_simans_weights(sims[i] / temperature, pos[i] / temperature, a, b_ref)
        want = torch.tensor(w, dtype=torch.float64) / sum(w)
        torch.testing.assert_close(ours[i], want)


def test_a_follows_the_loss_temperature():
    from vissl_neg.config import build_strategies, load_config

    for t in (0.2, 0.1):
        cfg = load_config(overrides=[f"loss.temperature={t}", "negatives.strategies=[{name: ambiguous, keep: 8}]"])
        (strategy,) = build_strategies(cfg.negatives.strategies, 4096, cfg.loss.temperature)
        assert (strategy.a, strategy.b, strategy.temperature) == (0.5, 0.0, t)
    (explicit,) = build_strategies([{"name": "ambiguous", "keep": 8, "temperature": 0.5}], 4096, 0.2)
    assert explicit.temperature == 0.5
    q, k, queue = _unit(2, 8, seed=13), _unit(2, 8, seed=14), _unit(20, 8, seed=15)
    with pytest.raises(ValueError, match="temperature"):
        Ambiguous(keep=4)(NegativeSet(q, k, queue))
