"""The one percentile every benchmark computes its published p50 / p95 / p99 with.

Nearest rank: the p-th percentile of n values is the smallest value that at least p % of them do not exceed,
the value at rank ceil(p / 100 * n) of the sorted values (rank 1 for p = 0). Chosen, rather than numpy's
default (linear interpolation between the two closest ranks), because:

- it is a latency some request actually had, and it says exactly what the docs say a p99 means: 99 % of
  the requests were answered in this time or less;
- it is what the load generators whose percentiles share our tables compute: locust (its CSV's 50% / 95% /
  99%, over response times it rounds) and Apache Bench (its "served within a certain time" table) both
  report an observed value at a rank, not an interpolation; our own rows (the in-process target, the soak,
  the flood, the replicas) stand beside theirs;
- it needs no numpy and has no free parameter: for a handful of samples it cannot invent a tail.

Medians of repeated runs (the median of three runs' req/s or p99) are another thing, the centre of
repeated measurements: they stay `statistics.median`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction


def percentile(values: Iterable[float], p: float) -> float:
    """The `p`-th percentile (0 <= p <= 100) of `values` by nearest rank; ValueError when there are none."""
    return percentiles(values, [p])[0]


def percentiles(values: Iterable[float], ps: Sequence[float]) -> list[float]:
    """Several percentiles of `values` by nearest rank (see the module), sorting them once."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values: a percentile of nothing is undefined")
    out = []
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is outside 0..100")
        # Exact arithmetic: 0.07 * 100 is 7.000000000000001 in floats, whose ceiling is one rank too high.
        rank = math.ceil(Fraction(str(p)) * len(ordered) / 100)
        out.append(ordered[max(rank, 1) - 1])
    return out
