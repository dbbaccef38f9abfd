"""TorchServe's APIs as the supervisor calls them: management (list, describe, scale, keys), metrics, inference.

Every HTTP call goes through ops.probe; an unreachable TorchServe raises OSError, which the watch loop takes
for "starting or going away" and looks again. The gRPC warm-up's request is encoded here by hand (below), so
that the runtime needs neither the generated stubs nor the clients that hold them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from digitlab.keyfiles import read_key_file
from ops import probe
from ops.instance import key_file

try:  # the gRPC warm-up's transport; without it (a bare runtime) only REST is warmed
    import grpc
except ImportError:  # pragma: no cover - the checkout's venv and the image both have it
    grpc = None

log = logging.getLogger("supervisor")

CANARY_TIMEOUT_S = 60.0  # a canary that is stuck is abandoned after this (the restart answers it first)
GRPC_SERVICE = "/org.pytorch.serve.grpc.inference.InferenceAPIsService"
GRPC_DEFAULT_PORT = "7070"  # TorchServe's own default, for a config that names none
# Sums that grow when a model's worker takes a job from its queue, and when it completes one. Refused
# requests (4xx) count in the first only: a worker that refuses everything is still alive.
PROGRESS_METRICS = ("ts_queue_latency_microseconds", "ts_inference_latency_microseconds")
ARRIVAL_METRIC = "ts_inference_requests_total"  # grows when a request for a model arrives
# The header (gRPC: metadata key) a canary or a warm-up carries its request id in (ops.state.request_id), which
# the workers log it by: digitlab.errors.REQUEST_ID_HEADER, which the serving image does not carry.
REQUEST_ID_HEADER = "X-Request-Id"


@dataclass(frozen=True)
class TorchServeAPI:
    """One TorchServe instance's endpoints, and its working directory, where its key file is."""

    workdir: Path
    inference: str
    management: str
    metrics: str
    grpc_inference: str  # host:port, a wildcard listener reached on loopback

    @classmethod
    def from_properties(cls, workdir: Path, props: dict[str, str]) -> TorchServeAPI:
        host = props.get("grpc_inference_address", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        return cls(
            workdir=workdir,
            inference=props["inference_address"],
            management=props["management_address"],
            metrics=props["metrics_address"],
            grpc_inference=f"{host}:{props.get('grpc_inference_port', GRPC_DEFAULT_PORT)}",
        )

    # keys: read for every call, since a key can be renewed (or TorchServe restarted) at any time ----
    def keys(self) -> dict[str, dict]:
        return key_entries(self.workdir)

    def key(self, kind: str) -> str | None:
        return self.keys().get(kind, {}).get("key")

    def renew_key(self, kind: str, api_key: str) -> tuple[int, bytes]:
        return probe.request("POST", f"{self.management}/token?type={kind}", api_key)

    # management --------------------------------------------------------------------------------------
    def model_names(self) -> list[str] | None:
        """The registered models' names; None when TorchServe does not answer 200."""
        status, body = probe.request("GET", f"{self.management}/models?limit=1000", self.key("management"))
        return [entry["modelName"] for entry in json.loads(body)["models"]] if status == 200 else None

    def describe(self, name: str) -> dict | None:
        """The model's description (minWorkers, workers: id, pid, status...); None when not 200."""
        status, body = probe.request("GET", f"{self.management}/models/{name}", self.key("management"))
        return json.loads(body)[0] if status == 200 else None

    def ask_scale(self, name: str, count: int) -> bool:
        """Ask for exactly `count` workers; -> whether TorchServe took the request."""
        url = f"{self.management}/models/{name}?min_worker={count}&max_worker={count}"
        status, body = probe.request("PUT", url, self.key("management"))
        if status not in (200, 202):
            log.warning("scaling %s to %d: %s %s", name, count, status, body[:200])
        return status in (200, 202)

    # metrics ------------------------------------------------------------------------------------------
    def metrics_text(self) -> str | None:
        """TorchServe's Prometheus text; None when it does not answer 200."""
        status, text = probe.request("GET", f"{self.metrics}/metrics")
        return text.decode() if status == 200 else None

    def wait_quiet(self, quiet_s: float, timeout: float) -> None:
        """Until TorchServe's request counters stand still for `quiet_s` (no arrival, no completion: nothing
        left in flight), at most `timeout` s; at once when TorchServe does not answer."""
        began = last_change = time.monotonic()
        last = None
        while time.monotonic() - began < timeout:
            try:
                text = self.metrics_text()
            except OSError:
                return  # TorchServe is gone: nothing to wait for
            if text is None:
                return
            counts = tuple(sum(counter(text, m).values()) for m in (ARRIVAL_METRIC, *PROGRESS_METRICS))
            if counts != last:
                last, last_change = counts, time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                return
            time.sleep(0.2)

    # inference ----------------------------------------------------------------------------------------
    def predict(self, model: str, body: dict, request_id: str | None = None) -> int:
        """One REST prediction with the current inference key, under `request_id` (X-Request-Id) -> its HTTP status."""
        url = f"{self.inference}/predictions/{model}"
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        body_bytes = json.dumps(body).encode()
        return probe.request("POST", url, self.key("inference"), body_bytes, CANARY_TIMEOUT_S, headers)[0]

    def warm_up(self, model: str, calls: list[tuple[str, dict, str]]) -> list[tuple[str, str]]:
        """Each (transport, body, request id) call once: "rest", "grpc-stream" or "grpc-unary";
        -> (transport, request id) of each call that failed."""
        failed = []
        for transport, body, request_id in calls:
            try:
                if transport == "rest":
                    ok = self.predict(model, body, request_id) == 200
                else:
                    ok = self.grpc_call(model, body, stream=transport == "grpc-stream", request_id=request_id)
            except (OSError, ValueError) as err:
                ok = False
                extra = {"model": model, "request_id": request_id}
                log.debug("warm-up of %s over %s failed: %s", model, transport, err, extra=extra)
            if not ok:
                failed.append((transport, request_id))
        return failed

    def grpc_call(self, model: str, body: dict, stream: bool, request_id: str | None = None) -> bool:
        """One StreamPredictions (every message read) or unary Predictions call, under `request_id` (x-request-id
        metadata, and the input the worker reads it from); True when it succeeded."""
        if grpc is None:
            return True  # no gRPC client in this runtime: nothing to warm with
        key = self.key("inference")
        metadata = [("authorization", f"Bearer {key}")] if key else []
        if request_id:
            metadata.append((REQUEST_ID_HEADER.lower(), request_id))  # gRPC metadata keys are lower case
        request = predictions_request(model, json.dumps(body).encode(), request_id)
        with grpc.insecure_channel(self.grpc_inference) as channel:
            try:
                if stream:
                    call = channel.unary_stream(f"{GRPC_SERVICE}/StreamPredictions")
                    for _ in call(request, metadata=metadata, timeout=CANARY_TIMEOUT_S):
                        pass
                else:
                    channel.unary_unary(f"{GRPC_SERVICE}/Predictions")(
                        request, metadata=metadata, timeout=CANARY_TIMEOUT_S
                    )
            except grpc.RpcError as err:
                log.debug("gRPC warm-up of %s: %s", model, err, extra={"model": model, "request_id": request_id})
                return False
        return True


def key_entries(workdir: Path) -> dict[str, dict]:
    """TorchServe's key_file.json: {"management": {"key", "expiration time"}, "inference": ..., "API": ...}.

    Empty when token authorization is off (no key file).
    """
    try:
        return read_key_file(key_file(workdir))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def expires_at(entry: dict) -> float | None:
    """A key's expiry as Unix seconds (TorchServe writes ISO-8601 with a Z), None when it has none."""
    text = entry.get("expiration time")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def counter(metrics_text: str, metric: str) -> dict[str, float]:
    """Prometheus text -> {model: value of `metric`}, a counter per model that only grows."""
    pattern = re.compile(rf'^{metric}{{model_name="([^"]+)"[^}}]*}} ([0-9.eE+-]+)$', re.M)
    return {m: float(v) for m, v in pattern.findall(metrics_text)}


@dataclass(frozen=True)
class Counts:
    """What TorchServe's metrics say of each model: work taken or done (PROGRESS_METRICS summed), arrivals."""

    progress: dict[str, float]
    arrivals: dict[str, float]

    @classmethod
    def parse(cls, metrics_text: str) -> Counts:
        sums = [counter(metrics_text, metric) for metric in PROGRESS_METRICS]
        models = {name for per_model in sums for name in per_model}
        return cls({m: sum(s.get(m, 0.0) for s in sums) for m in models}, counter(metrics_text, ARRIVAL_METRIC))


# -- gRPC's request, by hand ------------------------------------------------------------------------------


def predictions_request(model: str, body: bytes, request_id: str | None = None) -> bytes:
    """TorchServe's PredictionsRequest {model_name = 1, input = 3: {"data": body, "request_id": id}} in protobuf's
    wire format (the input "request_id" is how the id reaches the worker: TorchServe passes it no metadata)."""
    inputs = {b"data": body} | ({b"request_id": request_id.encode()} if request_id else {})
    entries = b"".join(
        _length_delimited(3, _length_delimited(1, key) + _length_delimited(2, value))  # a map entry: key 1, value 2
        for key, value in inputs.items()
    )
    return _length_delimited(1, model.encode()) + entries


def _length_delimited(field_number: int, data: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)
