"""Negative sources (queue, memory bank, the batch's keys; ``SOURCES``) and the hard-negative strategies that plug onto
them, each in its own module; ``STRATEGIES`` maps a config name to its class (each a
:class:`~vissl_neg.negatives.strategy.Strategy`). For your own loop: the functions of
``functional`` (``functional.mochi(q, k, queue)``, ``contrastive_loss(negs)``, ...; the main
ones also from ``vissl_neg``) and each strategy's pure
function (``mix_hard_negatives``, ``slerp``, ``hardest_negatives``, ...); see docs/api.md."""

from vissl_neg.negatives import functional
from vissl_neg.negatives.ambiguous import Ambiguous, gumbel_top_k, sample_without_replacement, simans_logits
from vissl_neg.negatives.false_negatives import FalseNegatives, suspect_false_negatives
from vissl_neg.negatives.feature_transform import FeatureTransform, extrapolate_positives, interpolate_negatives
from vissl_neg.negatives.filtering import Filter, hardest_negatives, hardest_positions
from vissl_neg.negatives.functional import (
    apply_strategies,
    batch_negatives,
    contrast,
    contrastive_loss,
    filter_hardest,
    score,
)
from vissl_neg.negatives.geodesic import Geodesic, geodesic_mix, slerp
from vissl_neg.negatives.memory_bank import MemoryBank
from vissl_neg.negatives.mochi import MixCoefficients, Mochi, mix_hard_negatives, mochi_mix, sample_mix_coefficients
from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.queue import NegativeQueue
from vissl_neg.negatives.source import BatchKeys, NegativeSource
from vissl_neg.negatives.strategy import Strategy

SOURCES: dict[str, type[NegativeSource]] = {"queue": NegativeQueue, "memory_bank": MemoryBank, "batch": BatchKeys}
STRATEGIES: dict[str, type[Strategy]] = {
    "filter": Filter,
    "mochi": Mochi,
    "geodesic": Geodesic,
    "feature_transform": FeatureTransform,
    "ambiguous": Ambiguous,
    "false_negatives": FalseNegatives,
}

__all__ = [
    "SOURCES",
    "STRATEGIES",
    # sources, strategies and the set they pass along
    "Ambiguous",
    "BatchKeys",
    "FalseNegatives",
    "FeatureTransform",
    "Filter",
    "Geodesic",
    "MemoryBank",
    "Mochi",
    "NegativeQueue",
    "NegativeSet",
    "NegativeSource",
    "Strategy",
    # building blocks for your own loop: all in functional (a strategy's function there, e.g. functional.mochi,
    # is named after its module here, so only the names no submodule takes are repeated at this level)
    "functional",
    "apply_strategies",
    "batch_negatives",
    "contrast",
    "contrastive_loss",
    "filter_hardest",
    "score",
    # the strategies' pure functions and samplers
    "MixCoefficients",
    "extrapolate_positives",
    "geodesic_mix",
    "gumbel_top_k",
    "hardest_negatives",
    "hardest_positions",
    "interpolate_negatives",
    "mix_hard_negatives",
    "mochi_mix",
    "sample_mix_coefficients",
    "sample_without_replacement",
    "simans_logits",
    "slerp",
    "suspect_false_negatives",
]
