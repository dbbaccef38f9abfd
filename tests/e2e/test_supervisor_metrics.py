"""The supervisor's /metrics and its readiness server under a burst of probes, against the session's server."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.server


def test_metrics_say_ready_and_time_the_canaries(server):
    text = requests.get(f"{server.endpoints.ready}/metrics", timeout=10).text
    assert re.search(r"^digitlab_ready 1$", text, re.M)
    assert re.search(r"^digitlab_torchserve_restarts_total 0$", text, re.M)
    for model in server.models:  # every model was warmed up (REST, gRPC) before the server said ready
        count = re.search(rf'^digitlab_canary_latency_seconds_count{{model="{model}"}} (\d+)$', text, re.M)
        assert count and int(count[1]) >= 1, model


PROBE_CONNECT_S = 1.0  # how long the door's /health waits to connect to a replica's /ready (ops/nginx.conf.template)


def test_a_burst_of_probes_on_fresh_connections_is_accepted_in_time(server):
    """128 probes at once, each on a new connection, connecting as the door does (1 s): with http.server's backlog
    of 5 the kernel dropped the connections it could not queue, and their SYNs came back only after a second,
    past the door's patience, which then said "not ready" for a ready server."""

    def probe(_: int) -> int | str:
        with requests.Session() as session:
            try:
                return session.get(f"{server.endpoints.ready}/ready", timeout=(PROBE_CONNECT_S, 30)).status_code
            except requests.ConnectionError as err:  # ConnectTimeout included
                return type(err).__name__

    with ThreadPoolExecutor(128) as pool:
        codes = list(pool.map(probe, range(1024)))
    assert codes.count(200) == len(codes), {c: codes.count(c) for c in set(codes)}
