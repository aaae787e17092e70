"""Negative sources (queue, memory bank, the batch's keys; ``SOURCES``) and the hard-negative strategies that plug onto
them, each in its own module; ``STRATEGIES`` maps a config name to its class (each a
:class:`~vissl_neg.negatives.strategy.Strategy`)."""

from vissl_neg.negatives.ambiguous import Ambiguous
from vissl_neg.negatives.false_negatives import FalseNegatives
from vissl_neg.negatives.feature_transform import FeatureTransform
from vissl_neg.negatives.filtering import Filter
from vissl_neg.negatives.geodesic import Geodesic
from vissl_neg.negatives.memory_bank import MemoryBank
from vissl_neg.negatives.mochi import Mochi
from vissl_neg.negatives.negative_set import NegativeSet
from vissl_neg.negatives.queue import NegativeQueue
from vissl_neg.negatives.source import BatchKeys, NegativeSource
from vissl_neg.negatives.strategy import Strategy

SOURCES = {"queue": NegativeQueue, "memory_bank": MemoryBank, "batch": BatchKeys}
STRATEGIES = {"filter": Filter, "mochi": Mochi, "geodesic": Geodesic, "feature_transform": FeatureTransform,
              "ambiguous": Ambiguous, "false_negatives": FalseNegatives}

__all__ = ["SOURCES", "STRATEGIES", "Ambiguous", "BatchKeys", "FalseNegatives", "FeatureTransform", "Filter", "Geodesic", "MemoryBank", "Mochi",
           "NegativeQueue", "NegativeSet", "NegativeSource", "Strategy"]
