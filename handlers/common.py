"""The adapter every handler shares: setup / decode / predict / encode, with per-request errors.

TorchServe calls `initialize(context)` once per worker and `handle(batch, context)` per batch. A bad
request in a batch gets its own 4xx and JSON message; the rest of the batch is still served, and an
invalid input can never raise out of the worker.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from digitlab.device import serving_device
from digitlab.schemas import InvalidRequest, parse_request

log = logging.getLogger(__name__)
STREAM_NEXT = "ts_stream_next"  # TorchServe's response header: "true" = more messages follow


def request_body(row: dict[str, Any]) -> Any:
    """TorchServe puts a REST body under "body" and a gRPC input under its map key (clients use "data")."""
    for key in ("data", "body"):
        if key in row:
            return row[key]
    raise InvalidRequest(
        'no JSON body found: send it with the header "Content-Type: application/json" (REST) '
        'or as the input named "data" (gRPC)'
    )


def request_headers(context, idx: int) -> dict[str, Any]:
    """The request's headers with lower-cased names (HTTP headers are case-insensitive)."""
    return {str(k).lower(): v for k, v in context.get_all_request_header(idx).items()}


def is_grpc(headers: dict[str, Any]) -> bool:
    """TorchServe adds `url_path` (and the HTTP headers) to every REST request, none to a gRPC one."""
    return "url_path" not in headers


class JsonHandler:
    """Subclasses set `schema` and implement `setup` and `predict` (and `encode` if answers are not JSON)."""

    schema: type[BaseModel]

    def __init__(self) -> None:
        self.initialized = False

    # -- TorchServe entry points -----------------------------------------------------------------

    def initialize(self, context) -> None:
        props = context.system_properties
        self.model_dir = Path(props["model_dir"])
        self.device = serving_device(props.get("gpu_id"))
        self.options: dict[str, Any] = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        self.serialized_file = self.model_dir / context.manifest["model"]["serializedFile"]
        # Intra-op threads per worker (model config `handler.threads`): workers x threads <= cores.
        torch.set_num_threads(int(self.options.get("threads", 1)))
        self.setup()
        log.info("%s ready on %s with options %s", type(self).__name__, self.device, self.options)
        self.initialized = True

    def handle(self, batch: list[dict[str, Any]], context) -> list[Any]:
        responses, valid = self.decode_batch(batch, context)
        if valid:
            outputs = self.predict([req for _, req in valid])
            for (idx, req), output in zip(valid, outputs):
                responses[idx] = self.encode(output, req, idx, context)
        self.mark_final(batch, context)
        return responses

    # -- the four small steps ------------------------------------------------------------------

    def setup(self) -> None:
        """Load the model from `self.serialized_file` onto `self.device`."""
        raise NotImplementedError

    def validation_context(self) -> dict[str, Any] | None:
        """Limits that depend on the loaded model or its config, passed to the schema's validators."""
        return None

    def decode(self, body: Any, headers: dict[str, Any]) -> BaseModel:
        return parse_request(self.schema, body, self.validation_context())

    def predict(self, requests: list[BaseModel]) -> list[Any]:
        """All valid requests of a batch at once -> one output each."""
        raise NotImplementedError

    def encode(self, output: Any, request: BaseModel, idx: int, context) -> Any:
        """One output -> the bytes/str TorchServe sends (compact JSON unless a subclass says otherwise)."""
        context.set_response_content_type(idx, "application/json")
        return output.model_dump_json() if isinstance(output, BaseModel) else json.dumps(output)

    # -- shared plumbing -----------------------------------------------------------------------

    def decode_batch(self, batch, context) -> tuple[list[Any], list[tuple[int, BaseModel]]]:
        """Decode every request; refused ones get their error answer now. -> (answers, [(idx, request)])."""
        responses: list[Any] = [None] * len(batch)
        valid: list[tuple[int, BaseModel]] = []
        for idx, row in enumerate(batch):
            try:
                valid.append((idx, self.decode(request_body(row), request_headers(context, idx))))
            except InvalidRequest as err:
                responses[idx] = self.refuse(err, idx, context)
        return responses, valid

    @staticmethod
    def refuse(err: InvalidRequest, idx: int, context) -> str:
        context.set_response_status(err.status, "Bad Request" if err.status == 400 else "Unprocessable Entity", idx)
        context.set_response_content_type(idx, "application/json")
        return json.dumps(err.to_json())

    @staticmethod
    def mark_final(batch, context) -> None:
        """Mark each gRPC answer as the last message of its call.

        TorchServe's gRPC StreamPredictions reads this header on every reply and, when it is missing,
        throws in the frontend and restarts the worker; unary calls ignore it. REST must not get it:
        there it turns the answer into an unterminated chunked stream.
        """
        for idx in range(len(batch)):
            if is_grpc(request_headers(context, idx)):
                context.set_response_header(idx, STREAM_NEXT, "false")
