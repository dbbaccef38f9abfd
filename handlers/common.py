"""The template every handler shares: TorchServe's requests in, digitlab.serving's answers out.

A handler module only names its model kind; what an endpoint means lives in the serving layer, so the
same semantics serve the benchmarks' in-process and FastAPI targets, and another server needs only
another adapter. This template decodes (body, transport), predicts (the serving layer), and encodes
(JSON, binary media types, or a stream of frames sent as they are generated).

TorchServe calls `initialize(context)` once per worker and `handle(batch, context)` per batch; a batch's
cost is what the serving layer computes plus what this template adds, kept to reading each request's
headers once and no log line or metric of its own (TorchServe times every batch itself: PredictionTime).
Whatever
one request does, it cannot take its neighbours or the worker down:
- anything that goes wrong while reading or validating a request is that request's 4xx, with a message;
- an unexpected error while answering fails that request alone (500, logged with its request id): a
  batch that raises is answered again one request at a time to find the culprit;
- nothing raises out of `handle`, where TorchServe would fail the whole batch with 503.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from ts.handler_utils.utils import send_intermediate_predict_response

from digitlab import catalog, serving
from digitlab.device import serving_device
from digitlab.errors import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    InternalError,
    InvalidRequest,
    error_body,
    safe_request_id,
)
from digitlab.jsonlog import json_handler
from digitlab.options import parse_options
from digitlab.schemas import Frame
from digitlab.serving import Answer, Binary

log = logging.getLogger(__name__)
STREAM_NEXT = "ts_stream_next"  # TorchServe's response header: "true" = more messages follow
GRPC_INPUT = "data"  # the input a gRPC request carries: the JSON body
# The one other input a gRPC request may carry: its id. TorchServe 0.12 passes no gRPC metadata to the worker,
# so the id the door sends as `x-request-id` never reaches it; the SDK sends the same id here too.
GRPC_REQUEST_ID = "request_id"
REST_BODY = "body"  # TorchServe's name for a REST request's body
REST_MARK = "url_path"  # a request-level header the frontend sets on every REST request, as a string
DESCRIBE = "describe"  # the header of the frontend's describe request
VERSION_HEADER = "X-Model-Version"  # on REST answers: the archive's model version (gRPC carries no headers)
WORKER_METRICS_LOGGER = "ts.metrics.caching_metric"  # the worker's metric lines, which feed the frontend's /metrics
# log4j2.xml's appender "cancelled_streams" writes this file in TorchServe's log directory ($LOG_LOCATION): one
# line, "<time> <request id>", per reply the frontend could not deliver because the gRPC client had cancelled.
CANCELLED_STREAMS_LOG = "cancelled_streams.log"
CANCELLED_READ_MAX = 1 << 20  # bytes read at once: the file rolls at 1 MB (log4j2.xml)
CLIENT_CLOSED = 499  # the status of the (undelivered) last message of a cancelled stream, as nginx names it


def model_config_source(name: str) -> str:
    """How an options error names the model config: the shipped file of a catalog model, else the model's name."""
    served = catalog.BY_NAME.get(name)
    return served.config if served else f"the model config of {name!r}"


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
        if GRPC_INPUT not in row or not set(row) <= {GRPC_INPUT, GRPC_REQUEST_ID}:
            raise InvalidRequest(
                f'a gRPC request carries exactly one input, named "{GRPC_INPUT}" (the JSON body), and may carry '
                f'its id as "{GRPC_REQUEST_ID}"; got {sorted(map(str, row))[:5]}'
            )
        return row[GRPC_INPUT]
    if REST_BODY not in row:
        raise InvalidRequest('no JSON body found: POST it with the header "Content-Type: application/json"')
    if len(row) > 1:  # query-string parameters and form fields arrive as extra inputs
        extra = sorted(str(k) for k in row if k != REST_BODY)[:5]
        raise InvalidRequest(
            f"send the request as a JSON body only: query parameters and form fields {extra} are not accepted"
        )
    return row[REST_BODY]


def is_describe(headers: dict[str, Any]) -> bool:
    """The frontend's describe request (GET /models/<name>?customized=true), as TorchServe's BaseHandler
    detects it. A client that sends the header on a prediction only gets the description as its own answer."""
    return headers.get(DESCRIBE) == "True"


def request_headers(context, idx: int) -> dict[str, Any]:
    """The request's headers with lower-cased names (HTTP headers are case-insensitive)."""
    return {str(k).lower(): v for k, v in context.get_all_request_header(idx).items()}


class CancelledStreams:
    """Which streams' clients went away, read from the one place TorchServe 0.12 says so: its log.

    The frontend tells a worker nothing when a gRPC client cancels a call: the worker keeps sending frames,
    and for each one the frontend cannot deliver, GRPCJob logs a WARN line with the request id. log4j2.xml
    routes those lines, and only those, to CANCELLED_STREAMS_LOG (time and request id). A stream checks it
    after each frame it sends, before generating the next: one stat() while the file has not grown (a few
    microseconds, against milliseconds per frame), and a read of what other requests added when it has.
    The first undelivered frame is logged while the next is generated, so a cancelled stream stops one or
    two frames after the first frame the frontend could not deliver.

    Without the file (a log config without the appender, no LOG_LOCATION) nothing is ever cancelled: streams
    run to their end, as before. A roll-over (a new file, or a shorter one) is read from its start; a line
    missed across one only costs a frame, since every undelivered frame writes another.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.inode: int | None = None
        self.offset = 0

    @classmethod
    def from_environment(cls) -> CancelledStreams:
        """The file in TorchServe's log directory: $LOG_LOCATION, which the frontend hands its workers (and
        log4j2.xml uses), else TorchServe's default "logs" (relative to the frontend's directory, which a
        worker's is not: then nothing is found and nothing is cancelled)."""
        return cls(Path(os.environ.get("LOG_LOCATION", "logs")) / CANCELLED_STREAMS_LOG)

    def _stat(self) -> os.stat_result | None:
        if self.path is None:
            return None
        try:
            return os.stat(self.path)
        except OSError:
            return None

    def skip(self) -> None:
        """Start watching from the file's end: what it holds now concerns requests sent before."""
        st = self._stat()
        self.inode, self.offset = (st.st_ino, st.st_size) if st else (None, 0)

    def cancelled(self, request_id: str) -> bool:
        """Has the frontend logged, since the last look, a reply to `request_id` it could not deliver?"""
        st = self._stat()
        if st is None:
            return False
        if st.st_ino != self.inode or st.st_size < self.offset:  # rolled over: a new file
            self.inode, self.offset = st.st_ino, 0
        if st.st_size == self.offset:
            return False
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                added = f.read(min(st.st_size - self.offset, CANCELLED_READ_MAX))
        except OSError:
            return False
        whole = added[: added.rfind(b"\n") + 1]  # a line being written is read whole next time
        self.offset += len(whole)
        return request_id.encode() in whole


class ServingHandler:
    """Subclasses name the served model `kind` (digitlab.serving); everything else is this template.

    `predict` returns, per request, an answer of the serving layer: JSON, `Binary` (its own media type),
    the request's `InvalidRequest`, or an iterator of frames, which `send` streams one message each.
    """

    kind: str

    def __init__(self) -> None:
        self.initialized = False

    # -- TorchServe entry points -----------------------------------------------------------------

    def initialize(self, context) -> None:
        # The worker reads this per request: "false" hands us the raw bytes, so that JSON is parsed once,
        # by pydantic in one pass with the validation (digitlab.schemas.parse_request), instead of by TorchServe.
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"

        props = context.system_properties
        self.device = serving_device(props.get("gpu_id"))
        model = context.manifest["model"]
        self.version = str(model.get("modelVersion", ""))
        # The model config's `handler:` section, typed: an unknown or ill-typed option fails the load with a
        # message naming it and the file (the archive builder refuses the same config before it ships).
        section = (getattr(context, "model_yaml_config", None) or {}).get("handler")
        self.options = parse_options(self.kind, section, model_config_source(model.get("modelName", "")))
        # Intra-op threads per worker (model config `handler.threads`): workers x threads <= cores.
        torch.set_num_threads(self.options.threads)
        checkpoint = Path(props["model_dir"]) / model["serializedFile"]
        self.service = serving.load(self.kind, checkpoint, self.options, self.device)
        log.info("%s ready on %s with options %s", type(self).__name__, self.device, self.options)
        # From here on the worker writes no INFO line of its own: TorchServe's worker announces every batch on
        # the root logger ("Backend received inference at"), a line the frontend reads from the worker's
        # stdout only to drop it (log4j2.xml). Its metric lines stay: the frontend builds /metrics from them.
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger(WORKER_METRICS_LOGGER).setLevel(logging.INFO)
        # This template's own lines (a refused body it could not read, a failed request) are JSON objects with
        # their `request_id`, on the worker's stdout, which TorchServe files in model_log.log.
        log.handlers[:], log.propagate = [json_handler()], False
        self.initialized = True

    def handle(self, batch: list[dict[str, Any]], context) -> list[Any]:
        headers = [request_headers(context, idx) for idx in range(len(batch))]  # read once per request
        # Each request's id, as its error bodies, log lines and REST answer carry it: the client's (through the
        # door, which makes one when the client sent none; over gRPC its input "request_id") when it is safe,
        # else TorchServe's own.
        self.ids = [
            safe_request_id(h.get(REQUEST_ID_HEADER.lower()))
            or (is_grpc(h) and grpc_request_id(row))
            or request_id(context, idx)
            for idx, (h, row) in enumerate(zip(headers, batch))
        ]
        responses, valid = self.decode_batch(batch, headers, context)
        if valid:
            outputs = self.guarded(self.predict, valid, responses, context)
            for (idx, _), output in zip(valid, outputs):
                if responses[idx] is None:
                    responses[idx] = self.send(output, idx, context)
        self.mark_final(headers, context)
        for idx in range(len(batch)):  # which model version answered: a rolling update's switch is visible
            context.set_response_header(idx, VERSION_HEADER, self.version)
            context.set_response_header(idx, REQUEST_ID_HEADER, self.ids[idx])
        return responses

    def describe_handle(self) -> str:
        """GET /models/<name>?customized=true: what the model can do (its `customizedMetadata`)."""
        return json.dumps({"version": self.version, **self.service.describe()})

    # -- the steps ---------------------------------------------------------------------------------

    def decode(self, body: Any, headers: dict[str, Any]) -> BaseModel:
        accept = headers.get("accept")
        return self.service.parse(body, accept if isinstance(accept, str) else "")

    def predict(self, requests: list[BaseModel]) -> list[Answer]:
        """All valid requests of a batch at once -> one answer each."""
        return self.service.answer(requests)

    def encode(self, output: BaseModel | Binary, idx: int, context) -> bytes | str:
        """One answer -> the bytes/str TorchServe sends: compact JSON, or a `Binary` as its media type."""
        if isinstance(output, Binary):
            context.set_response_content_type(idx, output.media_type)
            for name, value in output.headers.items():
                context.set_response_header(idx, name, value)
            return output.data
        context.set_response_content_type(idx, "application/json")
        return output.model_dump_json()

    def send(self, output: Answer, idx: int, context) -> bytes | str:
        if isinstance(output, InvalidRequest):  # refused by the model's own limits (e.g. a digit search)
            return self.refuse(output, idx, context)
        if isinstance(output, Iterator):
            return self.stream(output, idx, context)
        try:
            return self.encode(output, idx, context)
        except Exception:  # noqa: BLE001 - one answer's failure is its own
            return self.fail(idx, context)

    def stream(self, frames: Iterator[Frame], idx: int, context) -> str:
        """Send each frame but the last as soon as it is generated; return the last, which TorchServe sends
        as the final message (gRPC StreamPredictions, or chunked HTTP).

        Before each next frame is generated, a stream whose client has cancelled it ends (`CancelledStreams`):
        its last message, which nobody receives, says so. An unexpected error ends the stream with the error
        object as its last message (the status line of a stream that has begun cannot change).
        """
        context.set_response_content_type(idx, "application/json")
        request_id = str(context.request_ids[idx])
        watch = self.cancelled_streams
        watch.skip()  # this request has no line there before its first frame is sent
        sent = 0
        try:
            for frame in frames:
                message = frame.model_dump_json() + "\n"  # NDJSON over HTTP: a client splits on newlines
                if frame.index == frame.of - 1:
                    return message
                send_intermediate_predict_response(
                    {idx: message}, {idx: request_id}, "Intermediate Prediction success", 200, context
                )
                sent += 1
                if watch.cancelled(request_id):
                    close = getattr(frames, "close", None)
                    if close is not None:
                        close()
                    return self.cancelled(sent, idx, context)
            raise RuntimeError("the stream ended before its last frame")
        except Exception:  # noqa: BLE001 - one stream's failure is its own
            return self.fail(idx, context) + "\n"

    @functools.cached_property
    def cancelled_streams(self) -> CancelledStreams:
        """This worker's view of the frontend's cancelled-streams log (created at the first stream)."""
        return CancelledStreams.from_environment()

    @staticmethod
    def cancelled(sent: int, idx: int, context) -> str:
        """The last message of a stream its client cancelled: TorchServe drops it (the call is gone), but the
        frontend needs an answer to finish the request. No log line: the frontend has logged the cancel."""
        context.set_response_status(CLIENT_CLOSED, "Client Closed Request", idx)
        return (
            json.dumps(
                error_body(
                    CLIENT_CLOSED,
                    "Cancelled",
                    f"the client cancelled the stream after {sent} frame(s); no more were generated",
                )
            )
            + "\n"
        )

    # -- shared plumbing -----------------------------------------------------------------------

    def decode_batch(
        self, batch, headers: list[dict[str, Any]], context
    ) -> tuple[list[Any], list[tuple[int, BaseModel]]]:
        """Decode every request; refused ones get their error answer now. -> (answers, [(idx, request)])."""
        responses: list[Any] = [None] * len(batch)
        valid: list[tuple[int, BaseModel]] = []
        for idx, row in enumerate(batch):
            try:
                if is_describe(headers[idx]):
                    responses[idx] = self.describe_handle()
                    continue
                valid.append((idx, self.decode(request_body(row, is_grpc(headers[idx])), headers[idx])))
            except InvalidRequest as err:
                responses[idx] = self.refuse(err, idx, context)
            except Exception:  # noqa: BLE001 - whatever a body does to the parser, it is still the client's 400
                log.warning("unreadable body", exc_info=True, extra={REQUEST_ID: self.ids[idx]})
                responses[idx] = self.refuse(
                    InvalidRequest("the body could not be read as a request; send JSON as shown in docs/API.md"),
                    idx,
                    context,
                )
        return responses, valid

    def guarded(
        self, work: Callable[[list[Any]], list[Any]], items: list[tuple[int, Any]], responses: list[Any], context
    ) -> list[Any]:
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
            responses[idx] = (
                self.refuse(err, idx, context) if isinstance(err, InvalidRequest) else self.fail(idx, context)
            )
            return [None]

    def refuse(self, err: InvalidRequest, idx: int, context) -> str:
        context.set_response_status(err.status, "Bad Request" if err.status == 400 else "Unprocessable Entity", idx)
        context.set_response_content_type(idx, "application/json")
        return json.dumps(err.to_json(self.ids[idx]))

    def fail(self, idx: int, context) -> str:
        """The answer to a request whose prediction raised unexpectedly; the traceback goes to the log."""
        err = InternalError(self.ids[idx])
        log.exception("request failed", extra={REQUEST_ID: err.request_id})
        context.set_response_status(500, "Internal Server Error", idx)
        context.set_response_content_type(idx, "application/json")
        return json.dumps(err.to_json(err.request_id))

    @staticmethod
    def mark_final(headers: list[dict[str, Any]], context) -> None:
        """Mark each gRPC answer as the last message of its call.

        TorchServe's gRPC StreamPredictions reads this header on every reply and, when it is missing,
        throws in the frontend and restarts the worker; unary calls ignore it. REST must not get it:
        there it turns the answer into an unterminated chunked stream.
        """
        for idx, request in enumerate(headers):
            if is_grpc(request) and not is_describe(request):
                context.set_response_header(idx, STREAM_NEXT, "false")


def grpc_request_id(row: dict[str, Any]) -> str | None:
    """The id a gRPC request names in its input "request_id", when it is safe (else None)."""
    value = row.get(GRPC_REQUEST_ID)
    return safe_request_id(value.decode("ascii", "replace")) if isinstance(value, bytes | bytearray) else None


def request_id(context, idx: int) -> str:
    return str((getattr(context, "request_ids", None) or {}).get(idx, f"#{idx}"))
