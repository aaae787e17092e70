"""Ambiguous negatives, SimANS (Zhou et al., EMNLP 2022).

Per query, each of its negatives n_i is drawn with probability ∝ exp(ℓ_i), where::

    ℓ_i = −a · ((q·n_i − q·k) / T − b)²

on the loss's logits (cosine / T, T = ``loss.temperature``), the units of the reference
code, whose retrieval scores enter its softmax at temperature 1.

so the negatives scored around the positive (shifted by b) are favoured, the easiest ones
(little signal) and the ones far above the positive (often false negatives) are rarely
drawn. ``keep`` of them are drawn without replacement by Gumbel-top-k: the ``keep``
largest of ℓ_i + g_i with g_i ~ Gumbel(0, 1) follow the Plackett–Luce probabilities.

Defaults: the reference code's (microsoft/SimXNS@0163380
SimANS/wiki/co_training_wiki_train.py:582-583), a = 0.5 and b = 0 on logits; at MoCo's
T = 0.2 the weight drops by e at 0.28 in cosine from the peak. Note the sign: the reference
code writes (s_i − s⁺ + b)² (SimANS/utils/util_wiki.py:624), the paper (and this module)
s_i − s⁺ − b, so b > 0 here favours negatives scoring above the positive, and the
reference's NQ script's ``--b 1.0`` is b = −1 here.

Pool: the reference draws 15 negatives from the retriever's top-100 candidates of each
query; this strategy draws from whatever negatives the query has at its place in the chain,
so ``filter`` (keep the hardest) before ``ambiguous`` is the analogue of that pool
(``configs/fmnist_simans.yaml``), ``ambiguous`` alone draws from the whole queue (*ours*).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.strategy import Strategy


def simans_logits(sims: torch.Tensor, pos: torch.Tensor, a: float, b: float, temperature: float = 1.0) -> torch.Tensor:
    """sims (B, K) q·n, pos (B,) q·k -> (B, K) log-weights −a·((sims − pos)/T − b)²."""
    return -a * ((sims - pos.unsqueeze(1)) / temperature - b) ** 2


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
    """Config ``{name: ambiguous, keep: 1024, a: 0.5, b: 0.0, start_epoch: 0}``: each query
    keeps ``keep`` of its real negatives, drawn with the SimANS probabilities; a and b in
    logit units. ``temperature`` 0 (the default) takes ``loss.temperature`` when the config
    is built."""

    keep: int = 1024
    a: float = 0.5
    b: float = 0.0
    temperature: float = 0.0
    start_epoch: float = 0.0  # switch on after this many epochs (fractions allowed)
    uses_loss_temperature = True

    def check(self) -> None:
        if self.keep <= 0:
            raise ValueError(f"needs keep > 0, got {self.keep}")
        if self.a <= 0:
            raise ValueError(f"needs a > 0, got {self.a}")
        if self.temperature < 0:
            raise ValueError(f"needs temperature >= 0 (0: the loss's), got {self.temperature}")

    def limits(self) -> dict[str, int]:
        return {"keep": self.keep}

    def kept(self, available: int) -> int:
        return self.keep

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        if self.temperature <= 0:
            raise ValueError("ambiguous needs the loss temperature: build it with build_strategies or set temperature")
        sims = negs.real_similarities().detach()  # outside no_grad: the loss reuses the cached product
        pos = (negs.q.detach() * negs.k.detach()).sum(dim=1).to(sims.dtype)
        positions = sample_without_replacement(simans_logits(sims, pos, self.a, self.b, self.temperature), self.keep)
        return negs.restrict(positions)
