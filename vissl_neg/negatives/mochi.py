"""MoCHi, hard negative mixing (Kalantidis et al., NeurIPS 2020).

Per query, over its N hardest negatives h (by q·n)::

    s  synthetic negatives  normalise(α h_i + (1−α) h_j),   α ~ U(0, 1), i, j ∈ [0, N)
    s' synthetic negatives  normalise(β q + (1−β) h_j),      β ~ U(0, 0.5)

Synthetic negatives are detached and belong to their query only (never enqueued).
The pure mixing (:func:`mochi_mix`) takes explicit rows and weights; the sampler
(:func:`sample_mix_coefficients`) draws them; :func:`mix_hard_negatives` chains both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.losses.info_nce import similarities
from vissl_neg.negatives.beta import sample_beta
from vissl_neg.negatives.filtering import hardest_positions
from vissl_neg.negatives.negative_set import Mixes, NegativeSet, flat_source, full_precision, row_combination
from vissl_neg.negatives.strategy import Strategy


@dataclass
class MixCoefficients:
    """Positions within each query's hard set and mixing weights: i, j, w (B, s) for
    negative pairs (weight w on i); jq, wq (B, s') for query mixes (weight wq on q)."""

    i: torch.Tensor
    j: torch.Tensor
    w: torch.Tensor
    jq: torch.Tensor
    wq: torch.Tensor

    def rows(self, hard: torch.Tensor) -> MixCoefficients:
        """Map positions in the hard set to rows via ``hard`` (B, N)."""
        return MixCoefficients(hard.gather(1, self.i), hard.gather(1, self.j), self.w, hard.gather(1, self.jq), self.wq)


def sample_mix_coefficients(
    batch: int,
    n_hard: int,
    s: int,
    s_prime: int,
    device=None,
    generator: torch.Generator | None = None,
    beta_alpha: float | None = None,
    query_max: float = 0.5,
) -> MixCoefficients:
    """Draw uniform positions in [0, n_hard) and weights: U(0, 1) for pairs and
    U(0, ``query_max``) for the query weight (MoCHi), or, with ``beta_alpha``,
    Beta(α, α) and ``query_max`` · Beta(α, α) (geodesic mixup; see :func:`sample_beta`)."""

    def positions(n: int) -> torch.Tensor:
        return torch.randint(n_hard, (batch, n), device=device, generator=generator)

    i, j, jq = positions(s), positions(s), positions(s_prime)
    if beta_alpha is None:
        w = torch.rand(batch, s, device=device, generator=generator)
        wq = torch.rand(batch, s_prime, device=device, generator=generator) * query_max
    else:
        w = sample_beta(beta_alpha, (batch, s), device, generator)
        wq = sample_beta(beta_alpha, (batch, s_prime), device, generator) * query_max
    return MixCoefficients(i, j, w, jq, wq)


def flat_coefficients(negatives: torch.Tensor, c: MixCoefficients) -> tuple[torch.Tensor, MixCoefficients]:
    """Per-query (B, K, D) negatives -> one (B·K, D) source with ``c``'s rows offset into it."""
    source, rows = flat_source(negatives, torch.cat([c.i, c.j, c.jq], dim=1))
    s = c.i.shape[1]
    return source, MixCoefficients(rows[:, :s], rows[:, s : 2 * s], c.w, rows[:, 2 * s :], c.wq)


def _pair_norm(source, i, j, w):
    """‖w · source[i] + (1 − w) · source[j]‖, (B, S)."""
    return row_combination(source, i, j, w, 1.0 - w, norm=True)


def _query_norm(anchor, source, rows, w, dots):
    """‖w · anchor + (1 − w) · source[rows]‖ from anchor·source[rows] = ``dots`` (B, S)."""
    sq_rows = full_precision(source).pow(2).sum(1)[rows]
    sq_anchor = anchor.pow(2).sum(1, keepdim=True)
    return (w * w * sq_anchor + (1 - w) ** 2 * sq_rows + 2 * w * (1 - w) * dots).clamp_min(0).sqrt()


def mochi_mixes(
    q: torch.Tensor, source: torch.Tensor, c: MixCoefficients, query_dots: torch.Tensor | None = None
) -> Mixes:
    """The MoCHi synthetic negatives of ``c`` (rows of ``source`` (M, D)) as :class:`Mixes`:
    pairs w·h_i + (1−w)·h_j and query mixes wq·q + (1−wq)·h_jq, each divided by its norm.
    ``query_dots`` (B, s') = q·source[c.jq] when already known."""
    with torch.no_grad():
        anchor = full_precision(q.detach())
        w = c.w.to(anchor.dtype)
        n = _pair_norm(source, c.i, c.j, w).clamp_min(1e-12)
        wq = c.wq.to(anchor.dtype)
        if query_dots is None:
            query_dots = torch.einsum("bd,bsd->bs", anchor, full_precision(source[c.jq]))
        nq = _query_norm(anchor, source, c.jq, wq, query_dots.detach().to(anchor.dtype)).clamp_min(1e-12)
        return Mixes(
            a_rows=torch.cat([c.i, torch.full_like(c.jq, -1)], dim=1),
            b_rows=torch.cat([c.j, c.jq], dim=1),
            a_coef=torch.cat([w / n, wq / nq], dim=1),
            b_coef=torch.cat([(1 - w) / n, (1 - wq) / nq], dim=1),
            anchor=anchor,
        )


def mochi_mix(q: torch.Tensor, negatives: torch.Tensor, c: MixCoefficients) -> torch.Tensor:
    """q (B, D); negatives (K, D) or (B, K, D); ``c`` with *rows* of ``negatives`` ->
    (B, s + s', D) synthetic negatives normalise(w h_i + (1−w) h_j), normalise(wq q + (1−wq) h_jq), detached."""
    source, flat = flat_coefficients(negatives, c)
    return mochi_mixes(q, source, flat).vectors(source)


def mix_hard_negatives(
    q: torch.Tensor,
    negatives: torch.Tensor,
    n_hard: int,
    s: int,
    s_prime: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MoCHi(N, s, s'): q (B, D), negatives (K, D) or (B, K, D) -> (B, s + s', D)."""
    _, sims = similarities(q.detach(), q.detach(), negatives)
    hard = hardest_positions(sims, n_hard)
    c = sample_mix_coefficients(q.shape[0], n_hard, s, s_prime, q.device, generator)
    return mochi_mix(q, negatives, c.rows(hard))


def hard_rows(negs: NegativeSet, n_hard: int) -> torch.Tensor:
    """(B, n_hard) source rows of each query's hardest real negatives (n_hard <= K)."""
    return negs.rows(hardest_positions(negs.real_similarities(), n_hard))


@dataclass
class Mochi(Strategy):
    """Config ``{name: mochi, n_hard: 1024, s: 1024, s_prime: 512, start_epoch: 0}``."""

    n_hard: int = 1024
    s: int = 1024
    s_prime: int = 512
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    mixes = True

    def check(self) -> None:
        if self.n_hard <= 0 or self.s < 0 or self.s_prime < 0 or self.s + self.s_prime == 0:
            raise ValueError("needs n_hard > 0, s >= 0, s_prime >= 0 and s + s_prime > 0")

    def limits(self) -> dict[str, int]:
        return {"n_hard": self.n_hard}

    @property
    def beta_alpha(self) -> float | None:
        """None: mixing weights U(0, 1) for pairs, U(0, 0.5) for query mixes."""
        return None

    make_mixes = staticmethod(mochi_mixes)

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        hard = hard_rows(negs, self.n_hard)
        c = sample_mix_coefficients(
            hard.shape[0], hard.shape[1], self.s, self.s_prime, hard.device, beta_alpha=self.beta_alpha
        )
        rows = c.rows(hard)
        return negs.add_synthetic(self.make_mixes(negs.q, negs.source, rows, negs.row_similarities(rows.jq)))
