"""A server that heals itself: stalled and killed workers replaced, keys renewed, all without a person.

These tests hurt their server on purpose, so they get one of their own (not the shared `server`), with
keys that expire after KEY_LIFETIME_MIN minutes so that renewal happens during the test. Times are
measured and printed (run with -s to see them); nothing here asserts on a time, only on recovery.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests

from clients.auth import KEY_FILE_ENV, TOKEN_ENV
from clients.errors import ServerError, Unreachable
from clients.grpc import GrpcClient, request_message
from clients.rest import RestClient
from clients.ts_grpc import inference_pb2_grpc
from ops import server as ops_server
from ops.api import ARRIVAL_METRIC, counter
from ops.state import IDLE_PROBE_S

pytestmark = [pytest.mark.server, pytest.mark.recovery]
KEY_LIFETIME_MIN = 0.5  # the supervisor renews at a quarter left: every ~22 s here
RECOVERY_LIMIT_S = 120  # a test gives up waiting after this: a hang must fail, not block CI
GOOD = {"digits": [4, 5, 5]}
INTERPOLATION = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 3}


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    with ops_server.serving(
        tmp_path_factory.mktemp("disposable"), overrides={"token_expiration_min": str(KEY_LIFETIME_MIN)}
    ) as running:
        yield running


@pytest.fixture
def key_file_clients(own_server, monkeypatch):
    """Clients that find the key the way a user's do: in the server's key file, re-read on refusal."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(own_server.key_file))


def events(server) -> list[dict]:
    return requests.get(f"{server.endpoints.ready}/events", timeout=5).json()["events"]


def restarts(server) -> list[str]:
    return [e["model"] for e in events(server) if e["event"] == "restart"]


def arrivals(server, model: str) -> float:
    text = requests.get(f"{server.endpoints.metrics}/metrics", timeout=5).text
    return counter(text, ARRIVAL_METRIC).get(model, 0.0)


def wait_until(check, limit: float = RECOVERY_LIMIT_S) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if check():
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"no recovery within {limit} s")


def interpolation_answers(server) -> bool:
    try:
        with RestClient(server.endpoints.inference, timeout=2) as client:
            return len(client.predict("interpolate", INTERPOLATION)["frames"]) == 3
    except (ServerError, requests.RequestException):
        return False


def test_a_stalled_worker_is_replaced_without_a_person(own_server, key_file_clients):
    """A unary Predictions call that streams stalls the model's worker for good; the supervisor restarts it."""
    before = own_server.worker_pids("interpolate")
    with grpc.insecure_channel(own_server.endpoints.grpc_inference) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        began = time.monotonic()
        reply = stub.Predictions(
            request_message("interpolate", {**INTERPOLATION, "steps": 8, "stream": True}),
            metadata=[("authorization", f"Bearer {own_server.key()}")],
            timeout=30,
        )
    assert b'"index":0' in reply.prediction  # the unary caller got frame 0 as if it were the answer...
    stalled = not interpolation_answers(own_server)  # ...and the model stopped answering
    wait_until(lambda: interpolation_answers(own_server))
    recovered = time.monotonic() - began
    # The restart is recorded once its workers are READY, which can be a moment after the first answer.
    wait_until(lambda: restarts(own_server) == ["interpolate"], limit=30)
    print(
        f"\nstall: model answered again {recovered:.1f} s after the offending call (stalled: {stalled}); "
        f"restart {events(own_server)[-1]}"
    )
    assert own_server.worker_pids("interpolate") != before
    # The stalled call also blocked one of TorchServe's backend netty threads for minutes; with
    # instance_properties' many threads the other models, whose channels are elsewhere, never noticed.
    with RestClient(own_server.endpoints.inference, timeout=10) as client:
        assert client.predict("palindrome", GOOD)["digit"] == 4


def test_a_worker_killed_under_load_is_replaced(own_server, key_file_clients):
    """SIGKILL the palindrome worker while 8 clients call it: TorchServe starts another; count what failed."""
    [pid] = own_server.worker_pids("palindrome")
    stop, results = threading.Event(), []

    def client(_: int) -> None:
        with RestClient(own_server.endpoints.inference, timeout=10) as rest_client:  # one session per client
            while not stop.is_set():
                try:
                    answer = rest_client.predict("palindrome", GOOD)
                    results.append((time.monotonic(), answer["digit"]))
                except ServerError as err:
                    results.append((time.monotonic(), err.status))
                except requests.RequestException as err:  # e.g. a read timeout while no worker runs
                    results.append((time.monotonic(), type(err).__name__))

    with ThreadPoolExecutor(8) as pool:
        for i in range(8):
            pool.submit(client, i)
        try:
            time.sleep(2)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: own_server.worker_pids("palindrome") not in ([pid], []))
            wait_until(lambda: any(t > killed_at + 0.5 and d == 4 for t, d in results[-50:]))
        finally:
            stop.set()  # the clients must end, or leaving the pool waits for them forever
    after = [(t, d) for t, d in results if t > killed_at]
    failures = [(t, d) for t, d in after if d != 4]
    last_failure = max((t for t, _ in failures), default=killed_at)
    # Requests queued meanwhile wait for the new worker: its first answer is the first after the first
    # failure (the killed worker's batch); an answer stamped just after the kill can be the old worker's.
    first_failure = min((t for t, _ in failures), default=killed_at)
    first_answer = min(t for t, d in after if d == 4 and t > first_failure)
    print(
        f"\nkill: the new worker answered {first_answer - killed_at:.1f} s after the kill; {len(failures)} failed of "
        f"{len(after)} after it, the last {last_failure - killed_at:.1f} s after it; "
        f"statuses {sorted({d for _, d in failures}, key=str)}"
    )
    # While no worker runs, requests fail (TorchServe answers 5xx, or a client times out), never wrongly.
    assert all(not isinstance(d, int) or d == 4 or d >= 500 for _, d in after)
    assert own_server.worker_pids("palindrome") != [pid]


def test_an_idle_model_gets_a_canary_every_idle_period_not_every_second(own_server):
    """Canaries are arrivals in TorchServe's metrics: they must not count as new traffic that calls for
    another canary (that was a canary a second on every model, forever)."""
    before, began = arrivals(own_server, "palindrome_rnn"), time.monotonic()
    time.sleep(2 * IDLE_PROBE_S)
    seen = arrivals(own_server, "palindrome_rnn") - before
    print(f"\ncanaries: {seen:.0f} in {time.monotonic() - began:.0f} s of idleness")
    assert 1 <= seen <= 3


def test_rotated_keys_refuse_the_old_key_and_clients_follow(own_server, key_file_clients):
    old = own_server.key()
    assert ops_server.rotate_keys(own_server.workdir) == ["inference", "management"]
    assert own_server.key() != old
    with RestClient(own_server.endpoints.inference, token=old) as client:
        with pytest.raises(ServerError, match="Token Authorization failed"):
            client.predict("palindrome", GOOD)
    # A client that read the key before the rotation: refused once, re-reads the file, answered.
    with RestClient(own_server.endpoints.inference) as client:
        assert client.predict("palindrome", GOOD)["digit"] == 4
    with GrpcClient(own_server.endpoints.grpc_inference) as client:
        assert client.predict("palindrome", GOOD)["digit"] == 4


def test_keys_are_renewed_before_they_expire(own_server, key_file_clients):
    """Keys live KEY_LIFETIME_MIN here: a client calling for longer than that never sees a refusal."""
    lifetime = KEY_LIFETIME_MIN * 60
    began, answers = time.monotonic(), 0
    with RestClient(own_server.endpoints.inference) as client:  # reads the key file on every call
        while time.monotonic() - began < 1.2 * lifetime:
            assert client.predict("palindrome", GOOD)["digit"] == 4
            answers += 1
            time.sleep(0.2)
    renewals = [e for e in events(own_server) if e["event"] == "keys renewed"]
    print(f"\nkeys: {answers} answers over {1.2 * lifetime:.0f} s, {len(renewals)} renewals")
    assert renewals


def frontend_of(server) -> int:
    """The JVM of the server's TorchServe: the launcher's child whose command is java (in /proc)."""
    launcher = int((server.workdir / ops_server.TORCHSERVE_PID_FILE).read_text())
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and command.endswith(b"java"):
            return int(entry.name)
    raise AssertionError(f"no java child of the TorchServe launcher {launcher}")


def test_a_killed_frontend_is_a_failure_that_the_supervisor_repairs(own_server, key_file_clients):
    """kill -9 of TorchServe's JVM, as the OOM killer does: the launcher exits 0, which must not pass for a
    clean stop. /ready turns 503, the supervisor records the end and starts TorchServe again (new keys,
    which the clients read from the key file), and the service answers again. Last here: it changes keys."""
    before = own_server.key()
    os.kill(frontend_of(own_server), signal.SIGKILL)
    killed = time.monotonic()
    ready = f"{own_server.endpoints.ready}/ready"
    wait_until(lambda: requests.get(ready, timeout=5).status_code == 503, limit=10)
    noticed = time.monotonic() - killed
    live = requests.get(f"{own_server.endpoints.ready}/live", timeout=5)
    assert live.status_code == 200 and live.json()["status"] in ("restarting", "live")  # not given up

    def answered() -> bool:
        try:
            with RestClient(own_server.endpoints.inference, timeout=5, retries=0) as client:
                return client.predict("palindrome", GOOD)["digit"] == 4
        except ServerError:
            return False

    recovered = wait_until(answered)
    wait_until(lambda: requests.get(ready, timeout=5).status_code == 200)
    [ended] = [e for e in events(own_server) if e["event"] == "torchserve exited"]
    print(f"\nfrontend killed: /ready 503 after {noticed:.2f} s, answering again after {recovered:.1f} s; {ended}")
    assert ended["restarting"] is True and own_server.key() != before


def test_a_stop_drains_what_is_in_flight_first(own_server, key_file_clients):
    """SIGTERM (make stop, docker stop, a rolling update): /ready turns 503 at once; the clients, like a load
    balancer reading it, start no new call, and every call under way is answered whole, streams included,
    before TorchServe stops. Last here: it stops the module's server."""
    body = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 48}
    outcomes: list[str] = []
    stop = threading.Event()

    def client(_: int) -> None:
        with RestClient(own_server.endpoints.inference, timeout=30, retries=0) as client:
            while not stop.is_set():
                try:
                    frames = list(client.interpolate_stream(body["start"], body["end"], body["steps"]))
                    outcomes.append("whole" if len(frames) == body["steps"] else f"cut at {len(frames)}")
                except ServerError as err:  # refused once TorchServe has stopped: the caller was told by /ready
                    outcomes.append("refused" if isinstance(err, Unreachable) else f"failed {err.status}")
                    return

    with ThreadPoolExecutor(4) as pool:
        for i in range(4):
            pool.submit(client, i)
        time.sleep(3)
        stopping = threading.Thread(target=ops_server.stop, args=(own_server.workdir,))
        stopping.start()
        wait_until(lambda: requests.get(f"{own_server.endpoints.ready}/ready", timeout=5).status_code == 503, limit=5)
        stop.set()  # as a load balancer does on the 503: no new calls; the ones under way go on
        stopping.join(timeout=60)
    print(f"\nstop under 4 streaming clients: {outcomes.count('whole')} streams whole, then {sorted(set(outcomes))}")
    # Without the drain TorchServe is gone before the 503 is read, and a client's next call is refused.
    assert outcomes.count("whole") > 0 and set(outcomes) == {"whole"}
