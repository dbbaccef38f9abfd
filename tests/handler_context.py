"""Build TorchServe's own Context / RequestProcessor objects, as a worker would, for handler tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ts.context import Context, RequestProcessor


def make_context(model_dir: Path, serialized_file: str, batch_size: int = 1, options: dict | None = None,
                 gpu_id: int | None = None) -> Context:
    manifest = {"model": {"modelName": "test", "serializedFile": serialized_file, "handler": "handler.py"}}
    return Context("test", str(model_dir), manifest, batch_size, gpu_id, "0.12.0",
                   model_yaml_config={"handler": options or {}})


# What a worker's headers look like (see ts/service.py): one entry per input, with a dict value, then
# the request-level headers, as strings. REST requests always carry `url_path`; gRPC ones nothing else.
REST_HEADERS = {"body": {"content-type": "application/json"}, "url_path": "predictions/test",
                "content-type": "application/json"}
GRPC_HEADERS = {"data": {"content-type": None}}


def start_batch(context: Context, n: int, headers: list[dict[str, Any]] | None = None) -> None:
    """What TorchServe's service does before each `handle`: one RequestProcessor per request (REST by default)."""
    context.request_ids = {i: f"req-{i}" for i in range(n)}
    context.request_processor = [RequestProcessor((headers or [REST_HEADERS] * n)[i]) for i in range(n)]


def statuses(context: Context, n: int) -> list[int]:
    return [context.get_response_status(i)[0] for i in range(n)]
