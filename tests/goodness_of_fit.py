"""Goodness-of-fit checks for the samplers' tests, with a false-alarm rate that holds for any
seed and any sample size.

A check compares n draws with the distribution they should follow through the
Kolmogorov–Smirnov distance D = sup_x |F_n(x) − F(x)| (F_n the draws' empirical CDF). The
Dvoretzky–Kiefer–Wolfowitz inequality with Massart's constant, P(D > ε) ≤ 2 exp(−2 n ε²),
holds for every n and every F, continuous or discrete; a check fails when D exceeds
ε = sqrt(ln(2 / ALPHA) / (2 n)), so a correct sampler fails one check with probability at most
ALPHA = 1e-9. A test makes at most a few dozen checks: its false-alarm rate is below 1e-7.
The seeds are fixed, so a run is reproducible; the bound is what a new seed risks.

The Beta CDF is the regularized incomplete beta of ``benchmarks/stats.py`` (itself checked
against closed forms and R's values in ``tests/test_bench_stats.py``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from stats import betainc  # noqa: E402

ALPHA = 1e-9


def bound(n: int, alpha: float = ALPHA) -> float:
    """The DKW–Massart threshold: P(D > bound) <= alpha for n draws of the right distribution."""
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def ks_distance(draws: torch.Tensor, cdf: Callable[[float], float]) -> float:
    """sup_x |F_n(x) − F(x)| for draws of a continuous distribution with CDF ``cdf``."""
    x = draws.detach().double().flatten().sort().values.tolist()
    n = len(x)
    return max(max((i + 1) / n - cdf(v), cdf(v) - i / n) for i, v in enumerate(x))


def assert_fits(draws: torch.Tensor, cdf: Callable[[float], float], what: str) -> None:
    """Fails when the draws' KS distance to ``cdf`` exceeds the DKW bound (false alarm <= ALPHA)."""
    d, eps = ks_distance(draws, cdf), bound(draws.numel())
    assert d <= eps, f"{what}: KS distance {d:.4f} > {eps:.4f} ({draws.numel()} draws)"


def assert_discrete(draws: torch.Tensor, support: Sequence[int], probs: Sequence[float], what: str) -> None:
    """Integer draws against P(draw = support[i]) = probs[i]: every draw in the support, and the
    largest CDF gap over the support points (where both CDFs jump) within the DKW bound."""
    values = draws.detach().long().flatten()
    n = values.numel()
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-12)
    counts = torch.stack([(values == s).sum() for s in support]).tolist()
    assert sum(counts) == n, f"{what}: {n - sum(counts)} draws outside {list(support)}"
    emp = true = d = 0.0
    for c, p in zip(counts, probs):
        emp, true = emp + c / n, true + p
        d = max(d, abs(emp - true))
    eps = bound(n)
    assert d <= eps, f"{what}: CDF gap {d:.4f} > {eps:.4f} ({n} draws; counts {counts})"


def assert_uniform_integers(draws: torch.Tensor, low: int, high: int, what: str) -> None:
    """Draws uniform on {low, ..., high} (both ends included)."""
    support = range(low, high + 1)
    assert_discrete(draws, support, [1.0 / len(support)] * len(support), what)


def uniform_cdf(low: float, high: float) -> Callable[[float], float]:
    return lambda x: min(max((x - low) / (high - low), 0.0), 1.0)


def beta_cdf(a: float, b: float, scale: float = 1.0) -> Callable[[float], float]:
    """The CDF of scale · Beta(a, b)."""
    return lambda x: betainc(min(max(x / scale, 0.0), 1.0), a, b)


def gumbel_cdf(x: float) -> float:
    return math.exp(-math.exp(-x))
