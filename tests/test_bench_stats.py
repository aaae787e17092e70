"""Welch's t-test of the benchmarks (benchmarks/stats.py) against closed forms, Student-t
table values and R's ``t.test`` on the sleep data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from stats import betainc, student_t_two_sided, welch_t_test  # noqa: E402


@pytest.mark.parametrize("x", [0.0, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0])
def test_betainc_closed_forms(x):
    assert betainc(x, 1.0, 1.0) == pytest.approx(x, abs=1e-14)
    assert betainc(x, 3.0, 1.0) == pytest.approx(x**3, abs=1e-14)
    assert betainc(x, 1.0, 2.5) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-14)
    # I_x(1/2, 1/2) = (2/π) asin(√x)
    assert betainc(x, 0.5, 0.5) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)


@pytest.mark.parametrize("t", [0.1, 1.0, 2.5, 12.706, 60.0])
def test_student_t_closed_forms_for_one_and_two_degrees_of_freedom(t):
    assert student_t_two_sided(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-10)  # Cauchy
    assert student_t_two_sided(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)


@pytest.mark.parametrize(
    "df,t,p",
    [
        # two-sided critical values from the usual Student-t table
        (1, 12.706, 0.05),
        (2, 4.303, 0.05),
        (5, 2.571, 0.05),
        (10, 2.228, 0.05),
        (30, 2.042, 0.05),
        (4, 4.604, 0.01),
        (10, 3.169, 0.01),
        (20, 2.845, 0.01),
        (60, 2.000, 0.05),
        (3, 2.353, 0.10),
    ],
)
def test_student_t_table(df, t, p):
    assert student_t_two_sided(t, df) == pytest.approx(p, rel=3e-3)


def test_welch_on_the_sleep_data_matches_r():
    # R: t.test(extra ~ group, data = sleep) -> t = -1.8608, df = 17.776, p-value = 0.07939
    g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    t, df, p = welch_t_test(g1, g2)
    assert t == pytest.approx(-1.8608, abs=1e-4)
    assert df == pytest.approx(17.776, abs=1e-3)
    assert p == pytest.approx(0.07939, abs=1e-5)


def test_welch_degenerate_inputs():
    assert all(math.isnan(v) for v in welch_t_test([1.0], [2.0, 3.0]))
    assert all(math.isnan(v) for v in welch_t_test([1.0, 1.0], [2.0, 2.0]))
    t, df, p = welch_t_test([1.0, 1.0, 1.0], [2.0, 2.5, 3.0])
    assert t < 0 and df == pytest.approx(2.0) and 0 < p < 0.1
