"""The runtime's Prometheus exposition: what `ops.metrics` writes is what Prometheus's text format says."""

import math
import re
import shutil
import subprocess

import pytest

from ops.metrics import Counter, Gauge, Histogram, Registry

LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eEInf]+$')


def registry() -> tuple[Registry, Counter, Histogram]:
    reg = Registry()
    reg.add(Gauge("digitlab_ready", "ready", lambda: {(): 1.0}))
    counter = reg.add(Counter("digitlab_things_total", "things"))
    histogram = reg.add(Histogram("digitlab_wait_seconds", "waits", buckets=(0.1, 1.0)))
    return reg, counter, histogram


def test_counters_gauges_and_histograms_in_the_text_format():
    reg, counter, histogram = registry()
    counter.inc({"model": 'odd "name"\\'})
    counter.inc({"model": "palindrome"}, by=2)
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value, {"model": "sample"})
    text = reg.render()
    for line in text.splitlines():
        assert line.startswith("# ") or LINE.match(line), line
    assert "# TYPE digitlab_things_total counter" in text and "digitlab_ready 1" in text
    assert 'digitlab_things_total{model="odd \\"name\\"\\\\"} 1' in text
    assert 'digitlab_things_total{model="palindrome"} 2' in text
    # cumulative buckets: <= 0.1 holds 0.05 and 0.1 (le is inclusive), <= 1 adds 0.5, +Inf adds 3.0
    assert 'digitlab_wait_seconds_bucket{model="sample",le="0.1"} 2' in text
    assert 'digitlab_wait_seconds_bucket{model="sample",le="1"} 3' in text
    assert 'digitlab_wait_seconds_bucket{model="sample",le="+Inf"} 4' in text
    assert 'digitlab_wait_seconds_count{model="sample"} 4' in text
    total = float(re.search(r'digitlab_wait_seconds_sum\{model="sample"\} (\S+)', text)[1])
    assert math.isclose(total, 3.65)


def test_a_counter_never_seen_is_zero_and_never_falls():
    reg, counter, _ = registry()
    assert "digitlab_things_total 0" in reg.render()
    with pytest.raises(ValueError):
        counter.inc(by=-1)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_reads_it():
    reg, counter, histogram = registry()
    counter.inc({"model": "palindrome"})
    histogram.observe(0.2, {"model": "palindrome"})
    run = subprocess.run(["promtool", "check", "metrics"], input=reg.render(), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
