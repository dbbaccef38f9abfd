"""The SDK's own logic, without TorchServe: retries, key re-reads, typed answers, frames to files.

The first tests script a transport (`Fake`); the later ones run the real `RestClient` against a tiny real
HTTP server started in the test (`Recorder`), which records every body and key it receives.
"""

from __future__ import annotations

import base64
import io
import json
import random
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from clients import base, rest
from clients.base import Client, decode_message, retry_delay
from clients.errors import ServerError, Unreachable
from clients.images import decode_png, frames_file
from clients.rest import RestClient

ANSWER = {"digit": 1, "probabilities": [0.0, 1.0] + [0.0] * 8, "length": 4, "model": "lstm"}


class Fake(Client):
    """Answers from a script: each item is an exception to raise or bytes to return; records the keys sent."""

    def __init__(self, script: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script, self.keys = list(script), []

    def close(self) -> None:
        pass

    @staticmethod
    def is_auth_error(err: Exception) -> bool:
        return isinstance(err, ServerError) and err.status == 401

    def _next(self, key: str | None) -> Any:
        self.keys.append(key)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def _bytes(self, model: str, payload: dict[str, Any], key: str | None, accept: str) -> bytes:
        return self._next(key)

    def _messages(self, model: str, payload: dict[str, Any], key: str | None) -> Iterator[dict[str, Any]]:
        return iter(decode_message(m) for m in self._next(key))


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(base.time, "sleep", waited.append)
    return waited


def test_an_unreachable_server_is_retried_with_exponential_backoff_and_jitter(sleeps):
    down = Unreachable("unreachable", "no server")
    client = Fake([down, down, json.dumps(ANSWER).encode()], token="k", retries=2, backoff=0.5)
    assert client.palindrome([1, 2, 3, 2]).digit == 1
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0 and client.keys == ["k", "k", "k"]


def test_clients_cut_off_together_do_not_retry_in_lockstep():
    delays = [retry_delay(0.2, 3, random.Random(seed)) for seed in range(50)]
    assert all(0.8 <= d <= 1.6 for d in delays)  # within the window's second half
    assert len({round(d, 6) for d in delays}) == 50 and max(delays) - min(delays) > 0.5  # spread over it


def test_retries_are_bounded_and_refusals_are_not_retried(sleeps):
    down = Unreachable("unreachable", "no server")
    with pytest.raises(Unreachable):
        Fake([down, down, down], token="k", retries=2).predict("palindrome", {})
    refused = Fake([ServerError(400, "bad digits")], token="k")
    with pytest.raises(ServerError, match="bad digits"):
        refused.predict("palindrome", {})
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4 and refused.script == []


def test_a_refused_key_from_a_key_file_is_read_again_and_retried_once(tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text("old\n")

    class Rotating(Fake):
        def _bytes(self, model, payload, key, accept):
            keys.write_text("old\nnew\n")  # the key rotates while the call is refused
            return super()._bytes(model, payload, key, accept)

    client = Rotating([ServerError(401, "wrong key"), json.dumps(ANSWER).encode()], key_file=keys)
    assert client.predict("palindrome", {})["digit"] == 1
    assert client.keys == ["old", "new"]
    given = Fake([ServerError(401, "wrong key")], token="given")  # a key passed explicitly is used as given
    with pytest.raises(ServerError):
        given.predict("palindrome", {})


def test_torchserve_key_files_are_read_too(tmp_path):
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"inference": {"key": "ts-key"}, "management": {"key": "m"}}))
    client = Fake([json.dumps(ANSWER).encode()], key_file=key_file)
    client.predict("palindrome", {})
    assert client.keys == ["ts-key"]


def png(value: int) -> str:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), value).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_streamed_frames_are_typed_and_a_failed_stream_raises():
    frames = [{"index": i, "of": 2, "png": png(9), "digit": 3, "confidence": 0.9, "generated_at": 1.0} for i in (0, 1)]
    client = Fake([[json.dumps(f) for f in frames]], token="")
    assert [f.index for f in client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=2)] == [0, 1]
    failing = Fake([[json.dumps(frames[0]), json.dumps({"code": 500, "type": "InternalError", "message": "x"})]])
    with pytest.raises(ServerError, match="500: x"):
        list(failing.stream("interpolate", {}))


def test_frames_become_a_gif_or_a_strip_with_pillow_only():
    frames = [{"png": png(v)} for v in (0, 128, 255)]
    gif = Image.open(io.BytesIO(frames_file(frames, gif=True)))
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (112, 112)
    strip = Image.open(io.BytesIO(frames_file(frames, gif=False)))
    assert strip.size == (84, 28) and strip.getpixel((30, 5)) == 128
    assert decode_png(png(7)).size == (28, 28)


# -- the real RestClient against a real (tiny) HTTP server ------------------------------------------------


class Recorder(ThreadingHTTPServer):
    """POST /predictions/{model} like TorchServe's contract: a JSON answer, NDJSON frames for an interpolation
    asked to stream, 400 for "stream" sent to a model that refuses it, 401 for a key it does not accept.
    Records (model, body, key) for every request; `on_request` runs first (e.g. to rotate the key)."""

    daemon_threads = True

    def __init__(self, accepted: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.accepted = accepted  # None: no auth
        self.requests: list[tuple[str, dict, str | None]] = []
        self.on_request: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        model = self.path.removeprefix("/predictions/")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        key = auth.removeprefix("Bearer ") if auth else None
        self.server.requests.append((model, body, key))
        if self.server.on_request:
            self.server.on_request()
        if self.server.accepted is not None and key != self.server.accepted:
            return self.answer(401, {"code": 401, "type": "Unauthorized", "message": "wrong key"})
        if "stream" in body and model != "interpolate":
            return self.answer(400, {"code": 400, "type": "InvalidRequest", "message": f"{model} takes no stream"})
        if model == "interpolate" and body.get("stream"):
            frames = [
                {"index": i, "of": 2, "png": png(9), "digit": 3, "confidence": 0.9, "generated_at": 0.0} for i in (0, 1)
            ]
            return self.answer(200, frames, ndjson=True)
        return self.answer(200, ANSWER)

    def answer(self, status: int, value: Any, ndjson: bool = False) -> None:
        data = ("".join(json.dumps(v) + "\n" for v in value) if ndjson else json.dumps(value)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-ndjson" if ndjson else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_streaming_adds_stream_true_only_for_the_models_that_take_it(recorder):
    """Regression: the old module-level `clients.rest.stream` added `"stream": true` to exactly the models
    that refuse it (palindrome and sample answered 400; interpolate got it from `Client.stream` anyway).
    One streaming path now, the client's, and the bodies it sends are the ones each model takes."""
    assert not hasattr(rest, "stream"), "one streaming path: RestClient.stream"
    with RestClient(recorder.url, token="", timeout=5, retries=0) as client:
        assert [m["digit"] for m in client.stream("palindrome", {"digits": [1, 2, 3, 2]})] == [1]
        assert [m["digit"] for m in client.stream("sample", {"n": 1, "seed": 7})] == [1]
        frames = client.stream("interpolate", {"start": {"digit": 9}, "end": {"digit": 3}, "steps": 2})
        assert [m["index"] for m in frames] == [0, 1]
    sent = {model: body for model, body, _ in recorder.requests}
    assert "stream" not in sent["palindrome"] and "stream" not in sent["sample"]
    assert sent["interpolate"]["stream"] is True
    assert [key for *_, key in recorder.requests] == [None, None, None]  # token "" sends no key


def test_truncation_is_sent_only_when_asked_for(recorder):
    """Left out, the server's default (off) applies and the request is today's, byte for byte."""
    with RestClient(recorder.url, token="", timeout=5, retries=0) as client:
        client.sample_grid(2, seed=1)
        client.sample_grid(2, seed=1, truncation=0.7)
        assert len(list(client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=2))) == 2
        assert len(list(client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=2, truncation=0.5))) == 2
    bodies = [body for _, body, _ in recorder.requests]
    assert "truncation" not in bodies[0] and bodies[1]["truncation"] == 0.7
    assert "truncation" not in bodies[2] and bodies[3]["truncation"] == 0.5


def test_a_key_rotated_while_the_call_is_refused_is_read_again_and_the_call_retried_once(recorder, tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text("old\n")
    recorder.accepted = "old"

    def rotate() -> None:  # the server renews its key and rewrites the file while the request is in flight
        keys.write_text("old\nnew\n")
        recorder.accepted = "new"
        recorder.on_request = None

    recorder.on_request = rotate
    with RestClient(recorder.url, key_file=keys, timeout=5, retries=0) as client:
        assert client.predict("palindrome", {"digits": [1, 2, 3, 2]})["digit"] == 1
    assert [key for *_, key in recorder.requests] == ["old", "new"]  # exactly 2 requests: refused, then served


def test_a_refused_key_that_did_not_change_is_not_retried(recorder, tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text("stale\n")
    recorder.accepted = "other"
    with RestClient(recorder.url, key_file=keys, timeout=5, retries=0) as client:
        with pytest.raises(ServerError) as err:
            client.predict("palindrome", {"digits": [1, 2, 3, 2]})
    assert err.value.status == 401 and [key for *_, key in recorder.requests] == ["stale"]


def test_an_explicit_token_is_never_read_again(recorder, tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text("new\n")  # the right key is in the file, but the caller chose its own
    recorder.accepted = "new"
    with RestClient(recorder.url, token="given", key_file=keys, timeout=5, retries=3) as client:
        with pytest.raises(ServerError) as err:
            client.predict("palindrome", {"digits": [1, 2, 3, 2]})
    assert err.value.status == 401 and err.value.message == "wrong key"
    assert [key for *_, key in recorder.requests] == ["given"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_closed_port_is_unreachable_after_the_retries():
    with RestClient(f"http://127.0.0.1:{closed_port()}", token="", timeout=5, retries=2, backoff=0.01) as client:
        with pytest.raises(Unreachable, match="no server at"):
            client.predict("palindrome", {"digits": [1, 2, 2]})


def test_a_server_that_drops_every_connection_gets_retries_plus_one_attempts():
    """A listening socket that accepts and closes each connection at once: each attempt is one connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port, accepted = listener.getsockname()[1], []

        def drop() -> None:
            try:
                while True:
                    conn, _ = listener.accept()
                    accepted.append(conn)
                    conn.close()
            except OSError:  # the listener closed (or nothing more came)
                pass

        thread = threading.Thread(target=drop, daemon=True)
        thread.start()
        with RestClient(f"http://127.0.0.1:{port}", token="", timeout=5, retries=3, backoff=0.01) as client:
            with pytest.raises(Unreachable):
                client.predict("palindrome", {"digits": [1, 2, 2]})
        listener.shutdown(socket.SHUT_RDWR)
    thread.join(timeout=5)
    assert len(accepted) == 4


def test_the_rest_client_sends_a_request_id_and_says_which_the_server_logged():
    """Each attempt carries a fresh X-Request-Id; the answer's (or the error body's) id is exposed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            sent = self.headers["X-Request-Id"]
            seen.append(sent)
            refused = self.path.endswith("/palindrome_rnn")
            body = json.dumps(
                {"code": 400, "type": "InvalidRequest", "message": "no", "request_id": "server-made"}
                if refused
                else ANSWER
            ).encode()
            self.send_response(400 if refused else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Request-Id", "server-made" if refused else sent)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with RestClient(f"http://127.0.0.1:{server.server_port}", token="k") as client:
            assert client.palindrome([1, 2, 3, 2]).digit == 1
            assert client.last_request_id == seen[-1] and len(seen[-1]) == 32
            with pytest.raises(ServerError) as refused:
                client.palindrome([1, 2, 3, 2], model="palindrome_rnn")
            assert refused.value.request_id == "server-made" and "(request server-made)" in str(refused.value)
            assert len(set(seen)) == 2  # a fresh id per call
    finally:
        server.shutdown()


# -- the real GrpcClient against a real (tiny) gRPC server ------------------------------------------------


@pytest.fixture
def grpc_server() -> Iterator[tuple[int, list[str]]]:
    """TorchServe's gRPC contract, as the door answers it: (port, the x-request-id of every call, in order).

    palindrome: one answer, the id sent echoed in the initial metadata. palindrome_rnn: TorchServe's in-band
    refusal (an error object without a request_id), no metadata. sample: a refusal by status (INVALID_ARGUMENT),
    its id in the trailing metadata only, as a trailers-only answer has it. interpolate: the id echoed, then one
    message per frame. unreachable: UNAVAILABLE the first time (a server going away), then one answer.
    """
    grpc = pytest.importorskip("grpc")
    stubs = pytest.importorskip("clients.ts_grpc.inference_pb2_grpc")

    from clients.ts_grpc import inference_pb2

    seen: list[str] = []

    class Inference(stubs.InferenceAPIsServiceServicer):
        def StreamPredictions(self, request, context):  # noqa: N802 - the service's name
            sent = dict(context.invocation_metadata())["x-request-id"]
            # the same id as the input "request_id", the only way it reaches a TorchServe worker
            given = request.input["request_id"].decode() if "request_id" in request.input else None
            seen.append(sent if given == sent else f"input {given!r} is not the metadata's {sent!r}")
            model, body = request.model_name, json.loads(request.input["data"])
            if model == "sample":
                context.set_trailing_metadata((("x-request-id", f"door-{sent}"),))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "n: at most 64 samples")
            if model == "unreachable" and len(seen) == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            if model != "palindrome_rnn":
                context.send_initial_metadata((("x-request-id", sent),))
            if model == "palindrome_rnn":
                messages = [{"code": 400, "type": "InvalidRequest", "message": "digits: too short"}]
            elif body.get("stream"):
                messages = [{"index": i, "of": 2, "png": png(9), "digit": 3, "confidence": 0.9} for i in (0, 1)]
            else:
                messages = [ANSWER]
            for message in messages:
                yield inference_pb2.PredictionResponse(prediction=json.dumps(message).encode())

    from tests.grpc_servers import grpc_server

    with grpc_server(lambda server: stubs.add_InferenceAPIsServiceServicer_to_server(Inference(), server)) as port:
        yield port, seen


def test_the_grpc_client_sends_a_request_id_and_says_which_the_server_answered_with(grpc_server):
    """Each call carries a fresh x-request-id; `last_request_id` is the id of the answer's initial metadata (else
    the one sent), set for a stream once its first frame came; every refusal of the call names it."""
    from clients.grpc import GrpcClient

    port, seen = grpc_server
    with GrpcClient(f"127.0.0.1:{port}", token="k") as client:
        assert client.palindrome([1, 2, 3, 2]).digit == 1
        assert client.last_request_id == seen[-1] and len(seen[-1]) == 32
        with pytest.raises(ServerError) as in_band:  # an error object naming no id: the call's
            client.palindrome([1, 2], model="palindrome_rnn")
        assert in_band.value.request_id == client.last_request_id == seen[-1]  # no metadata: the id sent
        assert f"(request {seen[-1]})" in str(in_band.value)
        with pytest.raises(ServerError) as by_status:  # the id of the trailing metadata
            client.sample(n=65)
        assert by_status.value.status == "INVALID_ARGUMENT"
        assert by_status.value.request_id == client.last_request_id == f"door-{seen[-1]}"
        frames = client.stream("interpolate", {"steps": 2})
        assert next(frames)["index"] == 0 and client.last_request_id == seen[-1]
        assert [frame["index"] for frame in frames] == [1]
    assert len(set(seen)) == len(seen) == 4  # a fresh id per call


def test_a_grpc_retry_is_a_new_attempt_with_a_new_request_id(grpc_server, sleeps):
    """As over REST: an attempt that reached no server is sent again under a fresh id, which names the answer."""
    from clients.grpc import GrpcClient

    port, seen = grpc_server
    with GrpcClient(f"127.0.0.1:{port}", token="k", retries=1) as client:
        assert client.predict("unreachable", {"digits": [1, 2, 2]})["digit"] == 1
    assert len(seen) == 2 and seen[0] != seen[1] and client.last_request_id == seen[1] and len(sleeps) == 1


def test_the_cli_prints_the_request_id_of_a_grpc_refusal(grpc_server, capsys):
    from clients.__main__ import main

    port, seen = grpc_server
    assert main(["sample", "--n", "65", "--grpc", "--target", f"127.0.0.1:{port}", "--token", "k"]) == 1
    assert capsys.readouterr().err == f"error: INVALID_ARGUMENT: n: at most 64 samples (request door-{seen[-1]})\n"


def test_an_error_object_naming_its_own_request_id_keeps_it():
    refusal = json.dumps({"code": 400, "type": "InvalidRequest", "message": "no", "request_id": "worker-1"})
    with pytest.raises(ServerError) as named:
        decode_message(refusal, "call-1")
    assert named.value.request_id == "worker-1"
    with pytest.raises(ServerError) as unnamed:
        decode_message(json.dumps({"code": 400, "type": "InvalidRequest", "message": "no"}), "call-1")
    assert unnamed.value.request_id == "call-1"


def test_a_client_sends_the_key_of_a_key_file_line_that_names_its_id(tmp_path):
    from digitlab.keyfiles import newest_client_key, read_any_key

    keys = tmp_path / "api_keys"
    keys.write_text("old-key-without-an-id-0123456789abcdef\nteam-a new-key-with-an-id-0123456789abcdef\n")
    assert newest_client_key(keys) == "new-key-with-an-id-0123456789abcdef"
    assert read_any_key(keys) == "new-key-with-an-id-0123456789abcdef"
