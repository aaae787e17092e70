"""Building blocks for your own training loop, on plain tensors.

Each function below is a thin door onto the code the trainer runs: a strategy function builds
the registered :class:`~vissl_neg.negatives.strategy.Strategy` and applies it to a
:class:`NegativeSet`; :func:`contrastive_loss` scores a set and applies a registered loss
exactly as ``Trainer.contrast`` does (it calls :func:`score`). Strategies chain::

    negs = mochi(q, k, queue.keys, n_hard=64, s=64, s_prime=32)   # or mochi(negs, ...)
    loss = contrastive_loss(negs, temperature=0.2)

``q`` (B, D) normalised queries (with gradient), ``k`` (B, D) their positive keys, and the
negatives either shared by every query, (K, D) (a queue), or per query, (B, K, D).
"""

from __future__ import annotations

from typing import Any

import torch

from vissl_neg.losses import LOSSES, ContrastiveLoss
from vissl_neg.negatives.ambiguous import Ambiguous
from vissl_neg.negatives.false_negatives import FalseNegatives
from vissl_neg.negatives.feature_transform import FeatureTransform
from vissl_neg.negatives.filtering import Filter
from vissl_neg.negatives.geodesic import Geodesic
from vissl_neg.negatives.mochi import Mochi
from vissl_neg.negatives.negative_set import NegativeSet, flat_source
from vissl_neg.negatives.source import BatchKeys
from vissl_neg.negatives.strategy import Strategy


def negative_set(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, labels: torch.Tensor | None = None
) -> NegativeSet:
    """q, k (B, D) and negatives (K, D) shared or (B, K, D) per query -> the :class:`NegativeSet`
    strategies and losses take; ``labels`` (K,) or (B, K) serve diagnostics only."""
    if negatives.dim() == 2:
        return NegativeSet(q, k.detach(), negatives.detach(), labels)
    if negatives.dim() != 3 or negatives.shape[0] != q.shape[0]:
        raise ValueError(f"negatives must be (K, D) or (B, K, D) with B = {q.shape[0]}, got {tuple(negatives.shape)}")
    b, n = negatives.shape[:2]
    source, rows = flat_source(negatives.detach(), torch.arange(n, device=q.device).expand(b, n))
    return NegativeSet(q, k.detach(), source, None if labels is None else labels.reshape(-1), rows)


def batch_negatives(q: torch.Tensor, k: torch.Tensor) -> NegativeSet:
    """The other keys of the batch as each query's negatives (SimCLR / MoCo v3; gathered
    across ranks under torch.distributed): the ``batch`` source's own code."""
    own = torch.full((q.shape[0],), -1, dtype=torch.long, device=q.device)
    return BatchKeys().negatives(q, k, own, own, q.shape[0] - 1)


def apply_strategies(negs: NegativeSet, strategies: list[Strategy]) -> NegativeSet:
    """Apply strategies in order, each checked first (``ValueError`` for bad parameters)."""
    for strategy in strategies:
        strategy.check()
        negs = strategy(negs)
    return negs


def _strategy(cls: type[Strategy], name: str):
    def apply(
        negs_or_q: NegativeSet | torch.Tensor,
        k: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
        **params: Any,
    ) -> NegativeSet:
        if isinstance(negs_or_q, NegativeSet):
            if k is not None or negatives is not None:
                raise TypeError(f"{name}(negs, **params) or {name}(q, k, negatives, **params), not both")
            negs = negs_or_q
        elif k is None or negatives is None:
            raise TypeError(f"{name}(q, k, negatives, **params) needs q, k and negatives")
        else:
            negs = negative_set(negs_or_q, k, negatives)
        return apply_strategies(negs, [cls(**params)])

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = (
        f"``{name}(q, k, negatives, **params)`` or ``{name}(negs, **params)`` -> the NegativeSet "
        f"after :class:`{cls.__name__}` (its fields are the params; see its config entry)."
    )
    return apply


filter_hardest = _strategy(Filter, "filter_hardest")
mochi = _strategy(Mochi, "mochi")
geodesic = _strategy(Geodesic, "geodesic")
feature_transform = _strategy(FeatureTransform, "feature_transform")
ambiguous = _strategy(Ambiguous, "ambiguous")
false_negatives = _strategy(FalseNegatives, "false_negatives")


def score(negs: NegativeSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """-> pos (B,) q·k, real (B, K) q·n, synthetic (B, S) or None, and the suspected false
    negatives' marks over [real, synthetic] (or None): what a loss takes."""
    pos = (negs.q * negs.k).sum(dim=1)
    real = negs.real_similarities()
    syn = negs.synthetic_similarities()
    marks = negs.suspected
    if marks is not None and syn is not None:  # synthetic negatives are never suspected
        marks = torch.cat([marks, torch.zeros_like(syn, dtype=torch.bool)], dim=1)
    return pos, real, syn, marks


def contrast(
    negs: NegativeSet, loss: ContrastiveLoss
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One direction's loss of a set -> (loss, pos (B,), real (B, K), synthetic (B, S) or None)."""
    pos, real, syn, marks = score(negs)
    sims = real if syn is None else torch.cat([real, syn], dim=1)
    return loss(pos, sims, marks, negs.cancel), pos, real, syn


def contrastive_loss(negs: NegativeSet, name: str = "info_nce", **params: Any) -> torch.Tensor:
    """The loss of one direction: ``name`` a registered loss (``info_nce``, ``debiased``),
    ``params`` its keys (temperature, tau_plus, beta, scale)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}', one of {', '.join(LOSSES)}")
    loss = LOSSES[name](name=name, **params)
    loss.check()
    value = contrast(negs, loss)[0]
    return value * loss.scale if loss.scale != 1.0 else value


__all__ = [
    "ambiguous",
    "apply_strategies",
    "batch_negatives",
    "contrast",
    "contrastive_loss",
    "false_negatives",
    "feature_transform",
    "filter_hardest",
    "geodesic",
    "mochi",
    "negative_set",
    "score",
]
