"""The protocol every hard-negative strategy implements.

A strategy is a dataclass of its config entry's parameters (``{name: …, param: …}``, the name
registered in ``vissl_neg.negatives.STRATEGIES``) that subclasses :class:`Strategy`:

- ``start_epoch``: a field; the strategy acts from this many epochs on (fractions allowed);
- ``__call__(negs) -> NegativeSet``: the step's negatives after it, on the device, with no
  host reads; random draws come from a sampler beside a pure function of explicit
  coefficients (rows, weights) that the tests check against the paper's formula;
- ``check()``: raises ValueError (one line) for parameters outside their domain;
- ``limits()``: the counts it takes from each query's negatives ({param: count}), checked
  against what the query has at that point of the chain;
- ``kept(available)``: how many negatives per query it leaves, when it narrows them;
- ``mixes``: it makes synthetic negatives from the current source;
- ``changes_source``: it replaces the source rows (so it must come before any mixing).

A new strategy is one module with such a class, its line in ``STRATEGIES`` and a config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vissl_neg.negatives.negative_set import NegativeSet


class Strategy:
    start_epoch: float = 0.0

    @property
    def mixes(self) -> bool:
        """It makes synthetic negatives from the current source."""
        return False

    @property
    def changes_source(self) -> bool:
        """It replaces the source rows (so it must come before any mixing)."""
        return False

    def check(self) -> None:
        """Raise ValueError for parameters outside their domain."""

    def limits(self) -> dict[str, int]:
        return {}

    def kept(self, available: int) -> int | None:
        """Negatives per query after this strategy, or None when it does not narrow them."""
        return None

    def __call__(self, negs: NegativeSet) -> NegativeSet:
        raise NotImplementedError
