"""The experiments' statistics (``experiments.stats``: standard library only)."""

from __future__ import annotations

import math

import pytest


def test_the_experiments_statistics() -> None:
    from experiments.stats import percentile, ratio, summary

    values = [0.004, 0.001, 0.003, 0.002]
    # Linear between closest ranks, as numpy's default: rank 1.5 of 1..4 ms.
    assert percentile(values, 50) == pytest.approx(0.0025)
    assert percentile(values, 100) == 0.004 and percentile(values, 0) == 0.001
    assert math.isnan(percentile([], 50))
    s = summary(values)
    assert list(s) == ["n", "p50", "p95", "p99", "max", "mean"] and s["n"] == 4
    assert s["max"] == pytest.approx(4.0) and s["mean"] == pytest.approx(2.5)
    assert summary(values, keys=("p50", "max")) == {"p50": pytest.approx(2.5), "max": 4.0}
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(1.0, math.nan))
