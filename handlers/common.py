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


def request_body(row: dict[str, Any]) -> Any:
    """TorchServe puts a REST body under "body" and a gRPC input under its map key (clients use "data")."""
    for key in ("data", "body"):
        if key in row:
            return row[key]
    raise InvalidRequest(
        'no JSON body found: send it with the header "Content-Type: application/json" (REST) '
        'or as the input named "data" (gRPC)'
    )


class JsonHandler:
    """Subclasses set `schema` and implement `setup`, `predict` (and `encode` if responses are not JSON)."""

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
        responses: list[Any] = [None] * len(batch)
        valid: list[tuple[int, BaseModel]] = []
        for idx, row in enumerate(batch):
            try:
                valid.append((idx, self.decode(request_body(row))))
            except InvalidRequest as err:
                responses[idx] = json.dumps(err.to_json())
                context.set_response_status(err.status, "Bad Request" if err.status == 400 else "", idx)
                context.set_response_content_type(idx, "application/json")
        if valid:
            outputs = self.predict([req for _, req in valid])
            for (idx, req), output in zip(valid, outputs):
                responses[idx] = self.encode(output, req, idx, context)
        return responses

    # -- the four small steps ------------------------------------------------------------------

    def setup(self) -> None:
        """Load the model from `self.serialized_file` onto `self.device`."""
        raise NotImplementedError

    def validation_context(self) -> dict[str, Any] | None:
        """Limits that depend on the loaded model, passed to the schema's validators."""
        return None

    def decode(self, body: Any) -> BaseModel:
        return parse_request(self.schema, body, self.validation_context())

    def predict(self, requests: list[BaseModel]) -> list[Any]:
        """All valid requests of a batch at once -> one output each."""
        raise NotImplementedError

    def encode(self, output: Any, request: BaseModel, idx: int, context) -> Any:
        """One output -> the bytes/str TorchServe sends (compact JSON unless a subclass says otherwise)."""
        context.set_response_content_type(idx, "application/json")
        return output.model_dump_json() if isinstance(output, BaseModel) else json.dumps(output)
