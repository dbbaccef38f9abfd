"""Locust scenarios against a running server (`make serve`, then `make load`).

    locust -f loadtests/locustfile.py --headless -u 10 -r 5 -t 30s MixedUser GrpcUser

Users: PalindromeUser, SampleUser, InterpolateUser (REST, one endpoint each, as fast as answers come),
GrpcUser (unary Predictions and a StreamPredictions interpolation over one persistent channel),
MixedUser (REST, a weighted mix with think time), PingUser (GET /ping: the load generator's own ceiling).
Every user checks the content of each answer, not just the status: a wrong digit, a missing frame or a
PNG that does not decode to 28 x 28 is a failure. The token comes from $TORCHSERVE_TOKEN or the
server's key file, as for the clients.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import torch
from grpc.experimental import gevent as grpc_gevent
from locust import FastHttpUser, User, between, constant, events, tag, task

from benchmarks.locust_run import FIRST_FRAME, GRPC_PALINDROME, LAST_FRAME
from clients.auth import find_token
from clients.errors import ServerError
from clients.grpc import DEFAULT_TARGET, DEFAULT_TIMEOUT, decode_reply, request_message
from clients.images import decode_png
from clients.ts_grpc import inference_pb2_grpc
from digitlab.constants import NUM_CLASSES
from digitlab.palindrome import palindrome_batch
from digitlab.schemas import MAX_SEED

MIN_LENGTH, MAX_LENGTH = 3, 15
IMAGE_SHAPE = (28, 28)
STREAM_TIMEOUT = 60.0  # seconds for a whole interpolation stream: frames come one at a time

# Locust runs every user on gevent; grpcio blocks the whole process unless told to cooperate, and it
# must be told before the first channel exists.
grpc_gevent.init_gevent()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--sample-n", type=int, default=16, help="images per /predictions/sample request")
    parser.add_argument("--interpolate-steps", type=int, default=32, help="frames per interpolation")
    parser.add_argument("--grpc-target", default=DEFAULT_TARGET, help="host:port of TorchServe's gRPC inference API")


# -- requests and their checks: each check returns what is wrong with an answer, or None ----------


class Draws:
    """Each user's own random requests."""

    def __init__(self) -> None:
        self.rng = random.Random()
        self.generator = torch.Generator().manual_seed(self.rng.randrange(2**31))

    def prefix(self) -> tuple[list[int], int]:
        """(first T digits, missing digit) of a random palindrome, T uniform in the served range."""
        inputs, targets = palindrome_batch(1, self.rng.randint(MIN_LENGTH, MAX_LENGTH), self.generator)
        return inputs[0].tolist(), int(targets[0])

    def interpolation(self, steps: int) -> dict[str, Any]:
        """A path between two latent ids: ids cost no digit search, so every request does the same work."""
        seed = self.rng.randrange(MAX_SEED)
        return {"start": {"seed": seed, "index": 0}, "end": {"seed": seed, "index": 1}, "steps": steps}


def png_problem(b64: str) -> str | None:
    try:
        shape = decode_png(b64).shape
    except (ValueError, OSError) as err:  # bad base64 / not a PNG
        return f"broken PNG: {err}"
    return None if shape == IMAGE_SHAPE else f"image of shape {shape}, expected {IMAGE_SHAPE}"


def first_problem(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p), None)


def palindrome_problem(answer: dict[str, Any], digits: list[int], expected: int) -> str | None:
    if answer["digit"] != expected:
        return f"wrong digit {answer['digit']} for {digits}, expected {expected}"
    if len(answer["probabilities"]) != NUM_CLASSES or answer["length"] != len(digits):
        return f"malformed answer for {digits}: {answer}"
    return None


def sample_problem(answer: dict[str, Any], n: int) -> str | None:
    images = answer["images"]
    if len(images) != n:
        return f"{len(images)} images, asked for {n}"
    if [img["id"] for img in images] != [{"seed": answer["seed"], "index": i} for i in range(n)]:
        return "image ids are not (seed, 0..n-1)"
    return first_problem(png_problem(img["png"]) for img in images)


def frame_problem(frame: dict[str, Any], index: int, steps: int) -> str | None:
    if (frame["index"], frame["of"]) != (index, steps):
        return f"frame {frame['index']} of {frame['of']}, expected {index} of {steps}"
    if not 0 <= frame["digit"] < NUM_CLASSES:
        return f"frame {index} reads as digit {frame['digit']}"
    return png_problem(frame["png"])


def frames_problem(frames: list[dict[str, Any]], steps: int) -> str | None:
    if len(frames) != steps:
        return f"{len(frames)} frames, asked for {steps}"
    return first_problem(frame_problem(f, i, steps) for i, f in enumerate(frames))


# -- REST ----------------------------------------------------------------------------------------


class RestUser(FastHttpUser):
    """Shared set-up of the REST users: auth header, random requests, and `post` with a content check."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        token = find_token()
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self.draws = Draws()

    def post(self, model: str, payload: dict[str, Any], problem: Callable[[dict[str, Any]], str | None]) -> None:
        with self.client.post(f"/predictions/{model}", data=json.dumps(payload), headers=self.headers,
                              name=model, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                error = problem(resp.json())
            except (ValueError, KeyError, TypeError) as err:  # not JSON, or not the promised shape
                error = f"malformed answer ({err!r}): {resp.text[:200]}"
            if error:
                resp.failure(error)


def palindrome(user: RestUser) -> None:
    digits, expected = user.draws.prefix()
    user.post("palindrome", {"digits": digits}, lambda answer: palindrome_problem(answer, digits, expected))


def sample(user: RestUser) -> None:
    n = user.environment.parsed_options.sample_n
    user.post("sample", {"n": n}, lambda answer: sample_problem(answer, n))


def interpolate(user: RestUser) -> None:
    steps = user.environment.parsed_options.interpolate_steps
    user.post("interpolate", user.draws.interpolation(steps), lambda answer: frames_problem(answer["frames"], steps))


class PalindromeUser(RestUser):
    tasks = [palindrome]


class SampleUser(RestUser):
    tasks = [sample]


class InterpolateUser(RestUser):
    tasks = [interpolate]


class MixedUser(RestUser):
    """A person using the product: mostly palindromes, some samples, the odd interpolation, pauses between."""

    tasks = {palindrome: 16, sample: 3, interpolate: 1}
    wait_time = between(0.2, 1.0)


class PingUser(RestUser):
    """GET /ping, which does no model work: how many requests the load generator itself can make here."""

    @task
    def ping(self) -> None:
        with self.client.get("/ping", headers=self.headers, name="ping", catch_response=True) as resp:
            if resp.status_code != 200 or resp.json().get("status") != "Healthy":
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")


# -- gRPC ----------------------------------------------------------------------------------------


def ms_since(began: float) -> float:
    return (time.perf_counter() - began) * 1000


class GrpcUser(User):
    """StreamPredictions for both the palindrome (a one-message stream) and interpolate, over one channel.

    Never the unary Predictions call: the front door refuses it, and on TorchServe's own port a unary
    call that streams stalls the worker (SECURITY.md).

    Locust has no gRPC client, so each call is reported through the request event, named apart from the
    REST entries: "palindrome gRPC", and the stream as "interpolate first frame" (time to its first
    message) and "interpolate last frame" (time to the whole stream).
    Tags `palindrome` / `interpolate` select one task (locust --tags).
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(self.environment.parsed_options.grpc_target)
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)
        token = find_token()
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.draws = Draws()

    def on_stop(self) -> None:
        self.channel.close()

    def report(self, name: str, ms: float, length: int = 0, problem: str | Exception | None = None) -> None:
        error = RuntimeError(problem) if isinstance(problem, str) else problem
        self.environment.events.request.fire(request_type="grpc", name=name, response_time=ms, response_length=length,
                                             exception=error, context={})

    @tag("palindrome")
    @task
    def palindrome(self) -> None:
        digits, expected = self.draws.prefix()
        began = time.perf_counter()
        try:
            [reply] = self.stub.StreamPredictions(request_message("palindrome", {"digits": digits}),
                                                  metadata=self.metadata, timeout=DEFAULT_TIMEOUT)
        except (grpc.RpcError, ValueError) as err:  # ValueError: not exactly one message
            self.report(GRPC_PALINDROME, ms_since(began), problem=err)
            return
        ms = ms_since(began)  # the answer's checks are not part of its latency
        try:
            problem = palindrome_problem(decode_reply(reply.prediction), digits, expected)
        except (ServerError, ValueError, KeyError, TypeError) as err:  # a refusal, or not the promised shape
            problem = err
        self.report(GRPC_PALINDROME, ms, len(reply.prediction), problem)

    @tag("interpolate")
    @task
    def interpolate_stream(self) -> None:
        steps = self.environment.parsed_options.interpolate_steps
        # "stream": true only ever goes to StreamPredictions: on a unary call it stalls TorchServe 0.12's worker.
        request = request_message("interpolate", {**self.draws.interpolation(steps), "stream": True})
        began, count, size, problem = time.perf_counter(), 0, 0, None
        try:
            for reply in self.stub.StreamPredictions(request, metadata=self.metadata, timeout=STREAM_TIMEOUT):
                if count == 0:
                    self.report(FIRST_FRAME, ms_since(began), len(reply.prediction))
                problem = problem or frame_problem(decode_reply(reply.prediction), count, steps)
                count, size = count + 1, size + len(reply.prediction)
            problem = problem or (None if count == steps else f"{count} frames, asked for {steps}")
        except (grpc.RpcError, ServerError, ValueError, KeyError, TypeError) as err:
            problem = err
        self.report(LAST_FRAME, ms_since(began), size, problem)
