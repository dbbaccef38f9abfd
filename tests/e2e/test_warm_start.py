"""Warm before ready: when /ready first says ready, every path a client can take to every model has answered.

Read from TorchServe's own access log, not from the supervisor's word: the lines written up to the moment
the session's server became ready must hold a REST answer of each model and the gRPC calls the supervisor's
warm-up makes (StreamPredictions for each model and for each streamed model again, unary Predictions for
each). The latency this buys is measured by `python -m benchmarks.serving.warm_start` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from digitlab.catalog import STREAMING

pytestmark = pytest.mark.server
LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}) - \S+ \"(?P<request>[^\"]+)\" (?P<status>\d+)")


def access_before(server, moment: float) -> list[tuple[str, str]]:
    """(request, status) of every access-log line TorchServe wrote up to `moment` (Unix seconds)."""
    lines = []
    for line in (server.workdir / "logs" / "access_log.log").read_text().splitlines():
        if (match := LINE.match(line)) and datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S,%f").timestamp() <= moment:
            lines.append((match["request"], match["status"]))
    return lines


def test_every_path_of_every_model_answered_before_ready(server):
    served = access_before(server, server.ready_at)
    for model in server.models:
        assert (f"POST /predictions/{model} HTTP/1.1", "200") in served, f"{model}: no REST answer before ready"
    grpc_calls = [
        request.split()[1].rsplit("/", 1)[1]
        for request, status in served
        if request.startswith("gRPC ") and status == "0"
    ]
    streamed = [m for m in server.models if m in STREAMING]
    assert grpc_calls.count("StreamPredictions") >= len(server.models) + len(streamed)
    assert grpc_calls.count("Predictions") >= len(server.models)
