"""Ambiguous negatives, SimANS (Zhou et al., EMNLP 2022).

Per query, each of its negatives n_i is drawn with probability ∝ exp(ℓ_i), where::

    ℓ_i = −a · (q·n_i − q·k − b)²

so the negatives scored around the positive (shifted by b) are favoured, the easiest ones
(little signal) and the ones far above the positive (often false negatives) are rarely
drawn. ``keep`` of them are drawn without replacement by Gumbel-top-k: the ``keep``
largest of ℓ_i + g_i with g_i ~ Gumbel(0, 1) follow the Plackett–Luce probabilities.

Defaults (*ours*). The reference code (microsoft/SimXNS) defaults to a = 0.5 and b = 0 on
retrieval scores that enter its softmax at temperature 1, i.e. on logits. Our scores are
cosines whose logits are cos / T, so its a = 0.5 becomes a = 0.5 / T² = 12.5 at MoCo's
T = 0.2: the weight drops by e at 0.28 in cosine from the peak. b = 0 as there. Note the
sign: the reference code writes (s_i − s⁺ + b)², the paper (and this module) s_i − s⁺ − b,
so b > 0 here favours negatives scoring slightly above the positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.strategy import Strategy


def simans_logits(sims: torch.Tensor, pos: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """sims (B, K) q·n, pos (B,) q·k -> (B, K) log-weights −a·(sims − pos − b)²."""
    return -a * (sims - pos.unsqueeze(1) - b) ** 2


def gumbel_top_k(logits: torch.Tensor, k: int, gumbel: torch.Tensor) -> torch.Tensor:
    """logits (B, K), explicit Gumbel(0, 1) noise (B, K) -> (B, k) positions of the k largest
    logits + noise: a draw of k without replacement, P ∝ exp(logits) (Plackett–Luce)."""
    if not 0 < k <= logits.shape[1]:
        raise ValueError(f"cannot draw {k} of {logits.shape[1]} negatives")
    return (logits.detach() + gumbel).topk(k, dim=1, sorted=False).indices


def sample_gumbel(shape: tuple[int, ...], device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel(0, 1) noise −log E, E ~ Exp(1), drawn on ``device``."""
    e = torch.empty(shape, device=device).exponential_(generator=generator)
    return -torch.log(e.clamp_min(torch.finfo(e.dtype).tiny))


def sample_without_replacement(logits: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, K) log-weights -> (B, k) positions drawn without replacement, on the logits' device."""
    return gumbel_top_k(logits, k, sample_gumbel(tuple(logits.shape), logits.device, generator).to(logits.dtype))


@dataclass
class Ambiguous(Strategy):
    """Config ``{name: ambiguous, keep: 1024, a: 12.5, b: 0.0, start_epoch: 0}``: each query
    keeps ``keep`` of its real negatives, drawn with the SimANS probabilities."""

    keep: int = 1024
    a: float = 12.5
    b: float = 0.0
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)

    def check(self) -> None:
        if self.keep <= 0:
            raise ValueError(f"needs keep > 0, got {self.keep}")
        if self.a <= 0:
            raise ValueError(f"needs a > 0, got {self.a}")

    def limits(self) -> dict[str, int]:
        return {"keep": self.keep}

    def kept(self, available: int) -> int:
        return self.keep

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        sims = negs.real_similarities().detach()  # outside no_grad: the loss reuses the cached product
        pos = (negs.q.detach() * negs.k.detach()).sum(dim=1).to(sims.dtype)
        positions = sample_without_replacement(simans_logits(sims, pos, self.a, self.b), self.keep)
        return negs.restrict(positions)
