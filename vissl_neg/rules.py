"""Value rules that a config key carries beside it, in its section's dataclass.

A bound is ``typing.Annotated`` metadata on the field (``lr: PositiveFloat = 0.06``); a choice is a
``Literal[...]`` annotation; the config loader (``vissl_neg.config.coerce``) checks both when it reads
the key and names the key in its one-line error. Rules over several keys of one section live in the
section's ``check()`` method. This module is at the bottom of the package so that every component's
section (a loss, a data set) can use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Bound:
    """value > low (``strict``) or value >= low; ``note`` is appended to the message."""

    low: float
    strict: bool = False
    note: str = ""

    def problem(self, value) -> str | None:
        if value > self.low or (value == self.low and not self.strict):
            return None
        return f"must be {'>' if self.strict else '>='} {self.low:g}{self.note}, got {value}"


@dataclass(frozen=True)
class Interval:
    """value in [low, high], either end open."""

    low: float
    high: float
    closed_low: bool = True
    closed_high: bool = True
    what: str = ""  # "a probability": the message says what the interval is

    def problem(self, value) -> str | None:
        above = value > self.low or (self.closed_low and value == self.low)
        below = value < self.high or (self.closed_high and value == self.high)
        if above and below:
            return None
        span = f"{'[' if self.closed_low else '('}{self.low:g}, {self.high:g}{']' if self.closed_high else ')'}"
        return f"must be {self.what + ' ' if self.what else ''}in {span}, got {value}"


Positive = Bound(0, strict=True)
NonNegative = Bound(0)
PositiveInt = Annotated[int, Positive]
PositiveFloat = Annotated[float, Positive]
NonNegativeInt = Annotated[int, NonNegative]
NonNegativeFloat = Annotated[float, NonNegative]
Probability = Annotated[float, Interval(0.0, 1.0, what="a probability")]
UnitFraction = Annotated[float, Interval(0.0, 1.0, closed_high=False)]  # [0, 1): momenta, smoothing


def choice_problem(value: str, choices: Iterable[str]) -> str | None:
    """None when ``value`` is one of ``choices``, else 'must be one of a, b; got 'x' (did you mean …?)'."""
    choices = list(choices)
    if value in choices:
        return None
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"must be one of {', '.join(choices)}; got '{value}'{hint}"
