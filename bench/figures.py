"""Figures: the median of several runs with their min and max, and weighted percentiles.

A *figure* is ``{"median": m, "min": a, "max": b, "runs": [v1, v2, ...]}``; every number the
suite reports is one, so a reader always sees the spread behind the median.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def figure(values: Iterable[float | None]) -> dict | None:
    """Median, min and max of the runs that produced a value (None when none did)."""
    runs = [float(v) for v in values if v is not None]
    if not runs:
        return None
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def ratio(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> dict | None:
    """Figure of the per-run ratios (each run against the reference measured in that run)."""
    return figure(n / d if n is not None and d else None for n, d in zip(numerators, denominators, strict=True))


def weighted_percentile(values: Sequence[float], weights: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` each repeated ``weights`` times (lower nearest rank)."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    rank = q * total
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= rank:
            return value
    return pairs[-1][0]


def rate(rows: int | None, seconds: float | None) -> float | None:
    return rows / seconds if rows and seconds and seconds > 0 else None
