"""Prometheus metrics of the runtime's own processes, in the text exposition format (version 0.0.4).

The smallest correct thing, standard library only: the supervisor runs in the serving image beside
TorchServe's packages, and the door's image has no third-party package at all, so neither can count on
prometheus_client. A registry holds counters, gauges and histograms with labels; `render` writes them as
Prometheus reads them (HELP and TYPE lines, escaped label values, cumulative histogram buckets with +Inf,
_sum and _count).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: one series
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # request/canary latencies


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, labels: Labels, extra: Labels = ()) -> str:
    pairs = labels + extra
    inside = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{name}{{{inside}}}" if pairs else name


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.lock = threading.Lock()

    def lines(self) -> Iterable[str]:
        raise NotImplementedError

    def render(self) -> str:
        head = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        return "\n".join([*head, *self.lines()])


class Counter(Metric):
    """A count that only grows, per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: dict[str, str] | None = None, by: float = 1.0) -> None:
        if by < 0:
            raise ValueError("a counter only grows")
        with self.lock:
            key = _labels(labels)
            self.values[key] = self.values.get(key, 0.0) + by

    def lines(self) -> Iterable[str]:
        with self.lock:
            items = sorted(self.values.items()) or [((), 0.0)]
        return [f"{_series(self.name, k)} {_number(v)}" for k, v in items]


class Gauge(Metric):
    """A value read when scraped: `read()` -> {labels: value} (a gauge of one series returns {(): value})."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], dict[Labels, float]]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def lines(self) -> Iterable[str]:
        return [f"{_series(self.name, k)} {_number(v)}" for k, v in sorted(self.read().items())]


class Histogram(Metric):
    """Observations counted into cumulative buckets, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        super().__init__(name, help_text)
        self.bounds = tuple(sorted(buckets))
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}  # labels -> (bucket counts, [sum, count])

    def observe(self, value: float, labels: dict[str, str] | None = None) -> None:
        with self.lock:
            counts, totals = self.series.setdefault(_labels(labels), ([0] * (len(self.bounds) + 1), [0.0, 0]))
            counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
            totals[0] += value
            totals[1] += 1

    def lines(self) -> Iterable[str]:
        out = []
        with self.lock:
            items = sorted((k, (list(c), list(t))) for k, (c, t) in self.series.items())
        for labels, (counts, (total, count)) in items:
            running = 0
            for bound, n in zip((*self.bounds, math.inf), counts):
                running += n
                out.append(f"{_series(self.name + '_bucket', labels, (('le', _number(bound)),))} {running}")
            out.append(f"{_series(self.name + '_sum', labels)} {_number(total)}")
            out.append(f"{_series(self.name + '_count', labels)} {count}")
        return out


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(m.render() for m in self.metrics) + "\n"
