"""Small statistics over measured durations: percentiles, a summary, ratios.

Standard library only: ``experiments.perf.dispatch_measure`` imports it inside a
one-off container of the services' image, which has none of the experiments'
dependencies (matplotlib, the harness).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SUMMARY_KEYS = ("n", "p50", "p95", "p99", "max", "mean")


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(
    seconds: Sequence[float], *, scale: float = 1000.0, keys: Sequence[str] = SUMMARY_KEYS
) -> dict[str, float]:
    """n, p50, p95, p99, max and mean of durations, in ms by default.

    ``keys``: only these, in this order (a report that has always shown fewer keeps
    its shape)."""
    everything = {
        "n": len(seconds),
        "p50": percentile(seconds, 50) * scale,
        "p95": percentile(seconds, 95) * scale,
        "p99": percentile(seconds, 99) * scale,
        "max": (max(seconds) * scale) if seconds else math.nan,
        "mean": (sum(seconds) / len(seconds) * scale) if seconds else math.nan,
    }
    return {k: everything[k] for k in keys}


def ratio(a: float, b: float) -> float:
    """``a / b``; NaN when ``b`` is zero or NaN."""
    return a / b if b and not math.isnan(b) else math.nan
