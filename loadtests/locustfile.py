"""Locust scenarios against a running server (`make serve`, then `make load`).

    locust -f loadtests/locustfile.py --headless -u 10 -r 5 -t 30s MixedUser GrpcUser

Users: PalindromeUser, SampleUser, InterpolateUser (REST, one endpoint each, as fast as answers come),
GrpcUser (unary Predictions and a StreamPredictions interpolation over one persistent channel),
MixedUser (REST, a weighted mix with think time), PingUser (GET /ping: the load generator's own ceiling).
Every user checks the content of each answer, not just the status: a wrong digit, a missing frame or a
PNG that does not decode to 28 x 28 is a failure. The token comes from $TORCHSERVE_TOKEN or the
server's key file, as for the clients.

Stands on its own (no import from benchmarks/, no torch): the SDK in clients/ finds keys, checks answers
against the typed response models and makes the gRPC calls (`GrpcClient`, one channel per user). The REST
users send through locust's FastHttpUser rather than the SDK's requests.Session: the load generator's own
ceiling matters here (PingUser measures it), and geventhttpclient raises it well above requests'.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import grpc
from grpc.experimental import gevent as grpc_gevent
from locust import FastHttpUser, User, between, constant, events, tag, task

from clients.auth import find_token
from clients.base import decode_message
from clients.errors import ServerError
from clients.grpc import DEFAULT_TARGET, DEFAULT_TIMEOUT, GrpcClient
from clients.images import decode_png
from digitlab.constants import NUM_CLASSES
from digitlab.schemas import Frame, InterpolateResponse, PalindromeResponse, SampleResponse
from digitlab.workload import (
    FIRST_FRAME,
    GRPC_PALINDROME,
    INTERPOLATE_STEPS,
    LAST_FRAME,
    SAMPLE_N,
    interpolation_body,
    palindrome_prefix,
)

IMAGE_SHAPE = (28, 28)
STREAM_TIMEOUT = 60.0  # seconds for a whole interpolation stream: frames come one at a time

# Locust runs every user on gevent; grpcio blocks the whole process unless told to cooperate, and it
# must be told before the first channel exists.
grpc_gevent.init_gevent()
# gevent caches its loop's clock, and nothing ran the loop while this file's imports took their ~0.5 s;
# locust sets its --run-time timer next, against that stale clock, so runs ended that much early and
# the final CSV missed their last requests (a 1 s run recorded none). Read the clock now.
gevent.get_hub().loop.update_now()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--sample-n", type=int, default=SAMPLE_N, help="images per /predictions/sample request")
    parser.add_argument("--interpolate-steps", type=int, default=INTERPOLATE_STEPS, help="frames per interpolation")
    parser.add_argument("--grpc-target", default=DEFAULT_TARGET, help="host:port of TorchServe's gRPC inference API")


# -- requests and their checks: each check returns what is wrong with an answer, or None ----------


class Draws:
    """Each user's own random requests, from the mix every benchmark target shares (digitlab.workload)."""

    def __init__(self) -> None:
        self.rng = random.Random()

    def prefix(self) -> tuple[list[int], int]:
        """(first T digits, missing digit) of a random palindrome, T uniform in the mix's range."""
        return palindrome_prefix(self.rng)

    def interpolation(self, steps: int) -> dict[str, Any]:
        return interpolation_body(self.rng, steps)


def png_problem(b64: str) -> str | None:
    try:
        width, height = decode_png(b64).size
    except (ValueError, OSError) as err:  # bad base64 / not a PNG
        return f"broken PNG: {err}"
    shape = (height, width)
    return None if shape == IMAGE_SHAPE else f"image of shape {shape}, expected {IMAGE_SHAPE}"


def first_problem(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p), None)


def palindrome_problem(answer: dict[str, Any] | PalindromeResponse, digits: list[int], expected: int) -> str | None:
    answer = PalindromeResponse.model_validate(answer)  # ten probabilities, a digit 0-9, the model's name
    if answer.digit != expected:
        return f"wrong digit {answer.digit} for {digits}, expected {expected}"
    if answer.length != len(digits):
        return f"malformed answer for {digits}: {answer}"
    return None


def sample_problem(answer: dict[str, Any], n: int) -> str | None:
    answer = SampleResponse.model_validate(answer)
    if len(answer.images) != n:
        return f"{len(answer.images)} images, asked for {n}"
    if [img.id and (img.id.seed, img.id.index) for img in answer.images] != [(answer.seed, i) for i in range(n)]:
        return "image ids are not (seed, 0..n-1)"
    return first_problem(png_problem(img.png) if img.png else "an image without a PNG" for img in answer.images)


def frame_problem(frame: dict[str, Any] | Frame, index: int, steps: int) -> str | None:
    frame = Frame.model_validate(frame)
    if (frame.index, frame.of) != (index, steps):
        return f"frame {frame.index} of {frame.of}, expected {index} of {steps}"
    if not 0 <= frame.digit < NUM_CLASSES:
        return f"frame {index} reads as digit {frame.digit}"
    return png_problem(frame.png)


def frames_problem(frames: list[Frame], steps: int) -> str | None:
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
        with self.client.post(
            f"/predictions/{model}", data=json.dumps(payload), headers=self.headers, name=model, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                error = problem(decode_message(resp.content))
            except (ValueError, KeyError, TypeError, ServerError) as err:  # not JSON, or not the promised shape
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
    user.post(
        "interpolate",
        user.draws.interpolation(steps),
        lambda answer: frames_problem(InterpolateResponse.model_validate(answer).frames, steps),
    )


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

    Never the unary Predictions call: the door refuses it, and on TorchServe's own port a unary
    call that streams stalls the worker (SECURITY.md). The SDK's `GrpcClient` makes only StreamPredictions.

    Locust has no gRPC client, so each call is reported through the request event, named apart from the
    REST entries: "palindrome gRPC", and the stream as "interpolate first frame" (time to its first
    message) and "interpolate last frame" (time to the whole stream).
    Tags `palindrome` / `interpolate` select one task (locust --tags).
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        # One channel, two deadlines; no retries: a call that reaches no server is a failure to count, not to hide.
        self.channel = grpc.insecure_channel(self.environment.parsed_options.grpc_target)
        self.grpc = GrpcClient(channel=self.channel, timeout=DEFAULT_TIMEOUT, retries=0)
        self.grpc_stream = GrpcClient(channel=self.channel, timeout=STREAM_TIMEOUT, retries=0)
        self.draws = Draws()

    def on_stop(self) -> None:
        self.channel.close()

    def report(self, name: str, ms: float, length: int = 0, problem: str | Exception | None = None) -> None:
        error = RuntimeError(problem) if isinstance(problem, str) else problem
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=ms, response_length=length, exception=error, context={}
        )

    @tag("palindrome")
    @task
    def palindrome(self) -> None:
        digits, expected = self.draws.prefix()
        began = time.perf_counter()
        try:
            reply = self.grpc.predict_bytes("palindrome", {"digits": digits})
        except ServerError as err:  # a refusal, no server, or not exactly one message
            self.report(GRPC_PALINDROME, ms_since(began), problem=err)
            return
        ms = ms_since(began)  # the answer's checks are not part of its latency
        try:
            problem = palindrome_problem(decode_message(reply), digits, expected)
        except (ServerError, ValueError, KeyError, TypeError) as err:  # a refusal, or not the promised shape
            problem = err
        self.report(GRPC_PALINDROME, ms, len(reply), problem)

    @tag("interpolate")
    @task
    def interpolate_stream(self) -> None:
        steps = self.environment.parsed_options.interpolate_steps
        path = self.draws.interpolation(steps)
        began, count, problem = time.perf_counter(), 0, None
        try:
            # GrpcClient.stream adds "stream": true, and only ever on StreamPredictions.
            for message in self.grpc_stream.stream("interpolate", path):
                if count == 0:
                    self.report(FIRST_FRAME, ms_since(began))
                problem = problem or frame_problem(message, count, steps)
                count += 1
            problem = problem or (None if count == steps else f"{count} frames, asked for {steps}")
        except (ServerError, ValueError, KeyError, TypeError) as err:
            problem = err
        self.report(LAST_FRAME, ms_since(began), 0, problem)
