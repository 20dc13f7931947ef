"""Reading fastrpc's latency histograms: cumulative buckets and percentiles.

Every histogram in fastrpc (server handlers, client methods, balancer
endpoints) has the buckets of LATENCY_BUCKETS plus one for the rest, counts
not cumulative, so they add up across methods, endpoints and processes.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from fastrpc._core.servercore import LATENCY_BUCKETS

__all__ = ["LATENCY_BUCKETS", "cumulative", "quantile", "add"]


def cumulative(counts: Sequence[int]) -> List[Tuple[float, int]]:
    """(upper bound, calls at or below it) per bucket, the last bound +inf,
    as Prometheus histograms give them."""
    out, total = [], 0
    for bound, count in zip(list(LATENCY_BUCKETS) + [float("inf")], counts):
        total += count
        out.append((bound, total))
    return out


def quantile(counts: Sequence[int], q: float) -> Optional[float]:
    """The `q` quantile (0..1) of the durations counted, in seconds,
    interpolated within its bucket as Prometheus's histogram_quantile does;
    None when nothing was counted. Above the last bound it answers that
    bound (the histogram knows no more)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, count in enumerate(counts):
        upper = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else None
        if count and seen + count >= rank:
            if upper is None:
                return lower
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
        if upper is not None:
            lower = upper
    return lower


def add(a: Sequence[int], b: Sequence[int]) -> List[int]:
    """The sum of two histograms (missing buckets count 0)."""
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]
