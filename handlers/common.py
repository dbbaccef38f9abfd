"""The adapter every handler shares: setup / decode / predict / encode, with per-request errors.

TorchServe calls `initialize(context)` once per worker and `handle(batch, context)` per batch. Whatever
one request does, it cannot take its neighbours or the worker down:
- anything that goes wrong while reading or validating a request is that request's 4xx, with a message;
- an unexpected error while answering fails that request alone (500, logged with its request id): a
  batch that raises is answered again one request at a time to find the culprit;
- nothing raises out of `handle`, where TorchServe would fail the whole batch with 503.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from digitlab.device import serving_device
from digitlab.schemas import InvalidRequest, parse_request

log = logging.getLogger(__name__)
STREAM_NEXT = "ts_stream_next"  # TorchServe's response header: "true" = more messages follow
GRPC_INPUT = "data"  # the one input a gRPC request may carry: the JSON body
REST_BODY = "body"  # TorchServe's name for a REST request's body
REST_MARK = "url_path"  # a request-level header the frontend sets on every REST request, as a string


def is_grpc(headers: dict[str, Any]) -> bool:
    """True for a gRPC request, in a way no client can forge.

    TorchServe merges two things into the handler's headers: one entry per input, whose value is a dict
    (`{"content-type": ...}`), then the request-level headers, whose values are strings. REST requests
    always carry the string header `url_path`; gRPC requests have no request-level headers at all. A gRPC
    client that names an input `url_path` therefore produces a dict there, never a string.
    """
    return not isinstance(headers.get(REST_MARK), str)


def request_body(row: dict[str, Any], grpc: bool) -> Any:
    """The request's JSON body: the gRPC input "data", or the REST body. Anything else is refused."""
    if grpc:
        if set(row) != {GRPC_INPUT}:
            raise InvalidRequest(f'a gRPC request carries exactly one input, named "{GRPC_INPUT}" (the JSON body); '
                                 f"got {sorted(map(str, row))[:5]}")
        return row[GRPC_INPUT]
    if REST_BODY not in row:
        raise InvalidRequest('no JSON body found: POST it with the header "Content-Type: application/json"')
    if len(row) > 1:  # query-string parameters and form fields arrive as extra inputs
        extra = sorted(str(k) for k in row if k != REST_BODY)[:5]
        raise InvalidRequest(f"send the request as a JSON body only: query parameters and form fields {extra} "
                             "are not accepted")
    return row[REST_BODY]


def request_headers(context, idx: int) -> dict[str, Any]:
    """The request's headers with lower-cased names (HTTP headers are case-insensitive)."""
    return {str(k).lower(): v for k, v in context.get_all_request_header(idx).items()}


class InternalError(Exception):
    """An unexpected failure while answering one request: its 500, the details stay in the log."""

    status = 500

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id)
        self.request_id = request_id

    def to_json(self) -> dict[str, Any]:
        return {"code": 500, "type": "InternalError",
                "message": f"the server failed to answer this request (id {self.request_id}); it is logged. "
                           "Retrying the same request will fail the same way."}


class JsonHandler:
    """Subclasses set `schema` and implement `setup` and `predict` (and `encode` if answers are not JSON)."""

    schema: type[BaseModel]

    def __init__(self) -> None:
        self.initialized = False

    # -- TorchServe entry points -----------------------------------------------------------------

    def initialize(self, context) -> None:
        # The worker reads this per request: "false" hands us the raw bytes, so that JSON is parsed once,
        # by `decode_json`, with its depth limit, instead of by TorchServe with none.
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
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
            outputs = self.guarded(self.predict, valid, responses, context)
            for (idx, req), output in zip(valid, outputs):
                if responses[idx] is None:
                    responses[idx] = self.encode_or_fail(output, req, idx, context)
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
                headers = request_headers(context, idx)
                valid.append((idx, self.decode(request_body(row, is_grpc(headers)), headers)))
            except InvalidRequest as err:
                responses[idx] = self.refuse(err, idx, context)
            except Exception:  # noqa: BLE001 - whatever a body does to the parser, it is still the client's 400
                log.warning("request %s: unreadable body", request_id(context, idx), exc_info=True)
                responses[idx] = self.refuse(InvalidRequest("the body could not be read as a request; send JSON "
                                                            "as shown in the README"), idx, context)
        return responses, valid

    def guarded(self, work: Callable[[list[Any]], list[Any]], items: list[tuple[int, Any]],
                responses: list[Any], context) -> list[Any]:
        """`work` on every item's payload at once; if it raises, again one at a time so only the culprit fails.

        `items` are (request index, payload). A failed request gets its error answer in `responses` and
        None as its output.
        """
        try:
            return work([payload for _, payload in items])
        except Exception as err:  # noqa: BLE001 - isolated below, never raised out of the worker
            if len(items) > 1:
                return [self.guarded(work, [one], responses, context)[0] for one in items]
            idx = items[0][0]
            responses[idx] = (self.refuse(err, idx, context) if isinstance(err, InvalidRequest)
                              else self.fail(idx, context))
            return [None]

    def encode_or_fail(self, output: Any, request: BaseModel, idx: int, context) -> Any:
        try:
            return self.encode(output, request, idx, context)
        except InvalidRequest as err:
            return self.refuse(err, idx, context)
        except Exception:  # noqa: BLE001
            return self.fail(idx, context)

    @staticmethod
    def refuse(err: InvalidRequest, idx: int, context) -> str:
        context.set_response_status(err.status, "Bad Request" if err.status == 400 else "Unprocessable Entity", idx)
        context.set_response_content_type(idx, "application/json")
        return json.dumps(err.to_json())

    @staticmethod
    def fail(idx: int, context) -> str:
        """The answer to a request whose prediction raised unexpectedly; the traceback goes to the log."""
        err = InternalError(request_id(context, idx))
        log.exception("request %s failed", err.request_id)
        context.set_response_status(500, "Internal Server Error", idx)
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


def request_id(context, idx: int) -> str:
    return str((getattr(context, "request_ids", None) or {}).get(idx, f"#{idx}"))
