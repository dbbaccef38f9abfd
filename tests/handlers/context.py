"""Build TorchServe's own Context / RequestProcessor objects, as a worker would, for handler tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ts
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

TS_METRICS = Path(os.path.dirname(ts.__file__)) / "configs" / "metrics.yaml"  # a worker's default metrics config


def make_context(
    model_dir: Path, serialized_file: str, batch_size: int = 1, options: dict | None = None, gpu_id: int | None = None
) -> Context:
    manifest = {
        "model": {
            "modelName": "test",
            "modelVersion": "1.0",
            "serializedFile": serialized_file,
            "handler": "handler.py",
        }
    }
    metrics = MetricsCacheYamlImpl(str(TS_METRICS))  # as the worker builds it, for the model "test"
    metrics.initialize_cache()
    metrics.model_name = "test"
    return Context(
        "test",
        str(model_dir),
        manifest,
        batch_size,
        gpu_id,
        "0.12.0",
        metrics=metrics,
        model_yaml_config={"handler": options or {}},
    )


# What a worker's headers look like (see ts/service.py): one entry per input, with a dict value, then
# the request-level headers, as strings. REST requests always carry `url_path`; gRPC ones nothing else.
REST_HEADERS = {
    "body": {"content-type": "application/json"},
    "url_path": "predictions/test",
    "content-type": "application/json",
}
GRPC_HEADERS = {"data": {"content-type": None}}


def start_batch(context: Context, n: int, headers: list[dict[str, Any]] | None = None) -> None:
    """What TorchServe's service does before each `handle`: one RequestProcessor per request (REST by default)."""
    context.request_ids = {i: f"req-{i}" for i in range(n)}
    context.metrics.set_request_ids(context.request_ids)
    context.request_processor = [RequestProcessor((headers or [REST_HEADERS] * n)[i]) for i in range(n)]


def statuses(context: Context, n: int) -> list[int]:
    return [context.get_response_status(i)[0] for i in range(n)]
