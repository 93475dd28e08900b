"""Summary statistics of latency samples (milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linear between closest ranks.

    This is numpy's default ("linear") method: with 100 samples p99 lies between the 99th and the
    100th smallest value, so it is not simply the maximum.
    """
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, min, median, p90, p99, max and mean of ``values``, rounded to microseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    out = {
        "n": float(len(ordered)),
        "min": ordered[0],
        "median": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }
    return {k: (int(v) if k == "n" else round(v, 3)) for k, v in out.items()}
