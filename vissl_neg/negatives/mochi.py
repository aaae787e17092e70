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
import torch.nn.functional as F

from vissl_neg.losses.info_nce import similarities
from vissl_neg.negatives.filtering import hardest_positions
from vissl_neg.negatives.negative_set import NegativeSet, full_precision, take


@dataclass
class MixCoefficients:
    """Positions within each query's hard set and mixing weights: i, j, w (B, s) for
    negative pairs (weight w on i); jq, wq (B, s') for query mixes (weight wq on q)."""

    i: torch.Tensor
    j: torch.Tensor
    w: torch.Tensor
    jq: torch.Tensor
    wq: torch.Tensor

    def rows(self, hard: torch.Tensor) -> "MixCoefficients":
        """Map positions in the hard set to rows via ``hard`` (B, N)."""
        return MixCoefficients(hard.gather(1, self.i), hard.gather(1, self.j), self.w, hard.gather(1, self.jq), self.wq)


def _beta(alpha: float, shape: tuple[int, ...], device) -> torch.Tensor:
    a = torch.full(shape, float(alpha), device=device)
    return torch.distributions.Beta(a, a).sample()


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
    Beta(α, α) and ``query_max`` · Beta(α, α) (geodesic mixup; Beta draws use the
    global generator)."""

    def positions(n: int) -> torch.Tensor:
        return torch.randint(n_hard, (batch, n), device=device, generator=generator)

    i, j, jq = positions(s), positions(s), positions(s_prime)
    if beta_alpha is None:
        w = torch.rand(batch, s, device=device, generator=generator)
        wq = torch.rand(batch, s_prime, device=device, generator=generator) * query_max
    else:
        w = _beta(beta_alpha, (batch, s), device)
        wq = _beta(beta_alpha, (batch, s_prime), device) * query_max
    return MixCoefficients(i, j, w, jq, wq)


def mochi_mix(q: torch.Tensor, negatives: torch.Tensor, c: MixCoefficients) -> torch.Tensor:
    """q (B, D); negatives (K, D) or (B, K, D); ``c`` with *rows* of ``negatives`` ->
    (B, s + s', D) unit synthetic negatives, detached."""
    with torch.no_grad():
        hi, hj = full_precision(take(negatives, c.i)), full_precision(take(negatives, c.j))
        pairs = F.normalize(torch.lerp(hj, hi, c.w.unsqueeze(-1).to(hi.dtype)), dim=-1)
        hq = full_precision(take(negatives, c.jq))
        queries = F.normalize(torch.lerp(hq, full_precision(q.detach()).unsqueeze(1), c.wq.unsqueeze(-1).to(hq.dtype)), dim=-1)
        return torch.cat([pairs, queries], dim=1)


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
    """(B, min(n_hard, K)) source rows of each query's hardest real negatives."""
    sims = negs.real_similarities()
    return negs.rows(hardest_positions(sims, min(n_hard, sims.shape[1])))


@dataclass
class Mochi:
    """Config ``{name: mochi, n_hard: 1024, s: 1024, s_prime: 512, start_epoch: 0}``."""

    n_hard: int = 1024
    s: int = 1024
    s_prime: int = 512
    start_epoch: int = 0

    def check(self) -> None:
        if self.n_hard <= 0 or self.s < 0 or self.s_prime < 0 or self.s + self.s_prime == 0:
            raise ValueError("needs n_hard > 0, s >= 0, s_prime >= 0 and s + s_prime > 0")

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        hard = hard_rows(negs, self.n_hard)
        c = sample_mix_coefficients(hard.shape[0], hard.shape[1], self.s, self.s_prime, hard.device)
        return negs.add_synthetic(mochi_mix(negs.q, negs.source, c.rows(hard)))
