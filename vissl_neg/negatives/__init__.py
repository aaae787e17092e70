"""Negative sources (queue, memory bank) and the hard-negative strategies that plug onto them."""

from vissl_neg.negatives.queue import NegativeQueue

__all__ = ["NegativeQueue"]
