"""Welch's t-test without scipy: the Student-t tail from the regularized incomplete beta
function, evaluated by its continued fraction (modified Lentz)."""

from __future__ import annotations

import math
import statistics

TINY = 1e-300
EPS = 1e-15


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction 1 / (1 + d1 / (1 + d2 / (1 + ...))) of I_x(a, b), with
    d_{2m+1} = −(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d_{2m} = m(b−m) x / ((a+2m−1)(a+2m))."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > TINY else TINY)
    out = d
    for m in range(1, 10_000):
        for coef in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coef * d
            d = 1.0 / (d if abs(d) > TINY else TINY)
            c = 1.0 + coef / c
            c = c if abs(c) > TINY else TINY
            out *= c * d
        if abs(c * d - 1.0) < EPS:
            return out
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (x={x}, a={a}, b={b})")


def betainc(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta I_x(a, b) = B(x; a, b) / B(a, b) for 0 <= x <= 1, a, b > 0."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; else use the symmetry
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for T ~ Student-t with ``df`` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / (df + t * t), df / 2.0, 0.5)


def welch_t_test(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of mean(a) vs mean(b) -> (t, df, two-sided p).
    nan for all three with fewer than two values in a sample or no variance in either."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return math.nan, math.nan, math.nan
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, df, student_t_two_sided(t, df)
