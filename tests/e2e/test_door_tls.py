"""The door over TLS, end to end: nginx (on free ports) in front of the session's real TorchServe, both ports
speaking TLS with a certificate from the door's local CA (ops/door_tls.py), as `make door TLS=1` makes it.

HTTPS (HTTP/1.1 and HTTP/2) and gRPC over TLS with the project's clients (ca=); an interpolation streamed over
TLS frame by frame; TLS 1.1 refused, TLS 1.2 and 1.3 with resumption served; plain HTTP to the TLS port refused
with the JSON body, never a prediction; the certificate rotated (`make door-reload`) under 8 clients with no
failed request; and REST's keep-alive throughput over TLS against plain, measured with `ab -k` in one run.
Every loop is bounded; all traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from clients.errors import ServerError, Unreachable
from clients.grpc import GrpcClient
from clients.rest import RestClient
from ops import door as ops_door
from ops import door_nginx, door_tls
from ops import server as ops_server
from tests.e2e.doors import RunningDoor, end_load, open_door

pytestmark = pytest.mark.server
if (missing := ops_door.missing_nginx()) is not None:
    pytest.skip(f"door TLS tests skipped: {missing}", allow_module_level=True)
if shutil.which("openssl") is None:
    pytest.skip("door TLS tests skipped: no openssl command (apt-get install openssl)", allow_module_level=True)

TIMEOUT = 30
HOST = "127.0.0.1"
INTERPOLATION = {"start": {"seed": 5, "index": 0}, "end": {"seed": 5, "index": 1}, "steps": 64}
ROTATION_REST_CLIENTS, ROTATION_GRPC_CLIENTS = 6, 2
ROTATION_PAUSE_S = 2.0
AB_REQUESTS, AB_CONCURRENCY, AB_ROUNDS = 6000, 16, 3
PALINDROME_BODY = b'{"digits": [1, 2, 3, 4, 5, 4, 3, 2]}'


def start_door(
    server: ops_server.RunningServer, runtime: Path, tls: bool = True, limits: ops_door.Limits = ops_door.LIMITS
) -> RunningDoor:
    """A door in front of the session's TorchServe, over TLS with the local CA's certificate as `make door TLS=1`
    makes it in RUNTIME/tls (or plain, `tls=False`)."""
    return open_door(server, runtime, limits, tls=tls)


@pytest.fixture(scope="module")
def tls_door(server, tmp_path_factory):
    running = start_door(server, tmp_path_factory.mktemp("tls_door"))
    try:
        yield running
    finally:
        ops_door.stop(running.runtime)


def served_certificate(port: int, ca: Path) -> bytes:
    """The certificate the door serves now (DER), verified against `ca` for 127.0.0.1."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((HOST, port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        return tls.getpeercert(binary_form=True)


# -- answers over TLS -----------------------------------------------------------------------------------


def test_https_and_grpc_over_tls_answer_through_the_door(tls_door):
    """The project's clients with ca=: REST over HTTPS and gRPC over TLS, the certificate verified for 127.0.0.1
    and for localhost (its subjectAltName names both); plain gRPC to the TLS port gets no answer."""
    for url in (tls_door.url, f"https://localhost:{tls_door.door.port}"):
        with RestClient(url, tls_door.key, timeout=TIMEOUT, ca=tls_door.ca) as client:
            assert client.predict("palindrome", {"digits": [1, 2, 3, 2]})["digit"] == 1
            images = client.predict("sample", {"n": 2, "seed": 7})["images"]
            assert [im["id"] for im in images] == [{"seed": 7, "index": i} for i in range(2)]
    for target in (tls_door.target, f"grpcs://localhost:{tls_door.door.grpc_port}"):
        with GrpcClient(target, tls_door.key, timeout=TIMEOUT, ca=tls_door.ca) as client:
            assert client.predict("palindrome", {"digits": "1232"})["digit"] == 1
    with GrpcClient(f"{HOST}:{tls_door.door.grpc_port}", tls_door.key, timeout=TIMEOUT, retries=0) as plain:
        with pytest.raises((ServerError, Unreachable)):
            plain.predict("palindrome", {"digits": "1232"})


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl (apt-get install curl)")
def test_rest_speaks_http2_and_http11_over_tls_with_hsts(tls_door):
    """ALPN: curl gets HTTP/2 when it asks for it, HTTP/1.1 otherwise; every HTTPS answer, a refusal included,
    carries HSTS."""
    base = [
        "curl", "--silent", "--show-error", "--max-time", str(TIMEOUT), "--cacert", str(tls_door.ca),
        "--output", "/dev/null", "--write-out", "%{http_version} %{http_code}", "--dump-header", "-",
    ]  # fmt: skip
    url = f"{tls_door.url}/predictions/palindrome"
    data = ["--data", '{"digits": [1, 2, 3, 2]}', "--header", "Content-Type: application/json"]
    auth = ["--header", f"Authorization: Bearer {tls_door.key}"]
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        out = subprocess.run([*base, flag, *auth, *data, url], capture_output=True, text=True, timeout=TIMEOUT + 5)
        assert out.stdout.rstrip().endswith(f"{version} 200"), out.stdout + out.stderr
        assert re.search(r"(?im)^strict-transport-security: max-age=63072000", out.stdout), out.stdout
    refused = requests.post(url, json={"digits": [1, 2, 2]}, verify=str(tls_door.ca), timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.headers["Strict-Transport-Security"] == "max-age=63072000"
    page = requests.get(f"{tls_door.url}/", verify=str(tls_door.ca), timeout=TIMEOUT)
    assert page.status_code == 200 and "Strict-Transport-Security" in page.headers


def test_a_grpc_interpolation_streams_over_tls_frame_by_frame(tls_door):
    arrivals, frames = [], []
    with GrpcClient(tls_door.target, tls_door.key, timeout=TIMEOUT, ca=tls_door.ca) as client:
        for frame in client.stream("interpolate", INTERPOLATION):
            arrivals.append(time.time())
            frames.append(frame)
    assert [f["index"] for f in frames] == list(range(64))
    # Same machine, same clock: frame 0 was in the client's hands before TorchServe rendered frame 63.
    assert arrivals[0] < frames[-1]["generated_at"]


def test_make_door_tls_makes_a_local_ca_once_and_a_users_certificate_replaces_it(server, tmp_path, capsys, monkeypatch):
    """`make door TLS=1` (ops.door start --tls): a local CA and certificate on first start, kept in RUNTIME/tls
    and named in what start prints; with $DIGITLAB_TLS_CERT/KEY the user's certificate is served instead and
    the local CA's files are gone (no stale ca.pem for clients to find)."""
    for variable in (door_tls.CERT_ENV, door_tls.KEY_ENV, door_tls.NAMES_ENV):
        monkeypatch.delenv(variable, raising=False)
    runtime = tmp_path / "door"
    port, grpc_port = ops_server.free_ports(2)
    options = [
        "--runtime", str(runtime), "--port", str(port), "--grpc-port", str(grpc_port),
        "--config", str(server.workdir / "config.properties"), "--torchserve-workdir", str(server.workdir),
        "--models", *server.models,
    ]  # fmt: skip
    ca = (runtime / ops_door.TLS_DIR / door_tls.CA_CERT).resolve()

    def palindrome(trusted: Path) -> int:
        key = ops_door.client_key(runtime / ops_door.CLIENT_KEY_FILE)
        with RestClient(f"https://127.0.0.1:{port}", key, timeout=TIMEOUT, ca=trusted) as client:
            return client.predict("palindrome", {"digits": [6, 1, 1]})["digit"]

    ops_door.main(["start", "--tls", *options])
    try:
        printed = capsys.readouterr().out
        assert "made a local CA" in printed and f"CA {ca}" in printed and f"https://127.0.0.1:{port}" in printed
        assert palindrome(ca) == 6
    finally:
        ops_door.main(["stop", "--runtime", str(runtime)])
    made = ca.read_bytes()
    ops_door.main(["start", "--tls", *options])  # a second start keeps the CA clients already trust
    try:
        assert "made a local CA" not in capsys.readouterr().out and ca.read_bytes() == made
    finally:
        ops_door.main(["stop", "--runtime", str(runtime)])
    user = tmp_path / "user"  # the user's own CA and certificate
    user.mkdir()
    door_tls.make_ca(user)
    door_tls.issue_server_certificate(user, ["localhost", "127.0.0.1"])
    monkeypatch.setenv(door_tls.CERT_ENV, str(user / door_tls.CERT))
    monkeypatch.setenv(door_tls.KEY_ENV, str(user / door_tls.KEY))
    ops_door.main(["start", "--tls", *options])
    try:
        assert not ca.exists() and not (runtime / ops_door.TLS_DIR / door_tls.CA_KEY).exists()
        assert palindrome(user / door_tls.CA_CERT) == 6
    finally:
        ops_door.main(["stop", "--runtime", str(runtime)])


# -- the TLS itself -------------------------------------------------------------------------------------


def s_client(port: int, *options: str, ca: Path | None = None) -> subprocess.CompletedProcess:
    command = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost", *options]
    if ca is not None:
        command += ["-CAfile", str(ca), "-verify_return_error"]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=TIMEOUT)


def test_tls_11_is_refused_and_12_and_13_are_served_with_resumption(tls_door, tmp_path):
    for port in (tls_door.door.port, tls_door.door.grpc_port):
        # The client side allows TLS 1.1 (OpenSSL 3 forbids it at its default security level): the server refuses.
        old = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        # The server's answer is alert 70, protocol_version: no certificate, no session.
        assert old.returncode != 0 and "alert protocol version" in old.stderr, old.stderr
        assert "no peer certificate available" in old.stdout, old.stdout
        for option, protocol in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            done = s_client(port, option, ca=tls_door.ca)
            assert done.returncode == 0, done.stderr
            assert re.search(rf"New, {re.escape(protocol)}, Cipher is ", done.stdout), done.stdout
            assert "Verify return code: 0 (ok)" in done.stdout
    # Session resumption: the second handshake resumes the first one's session (the shared cache).
    session = tmp_path / "session.pem"
    first = s_client(tls_door.door.port, "-tls1_2", "-sess_out", str(session), ca=tls_door.ca)
    again = s_client(tls_door.door.port, "-tls1_2", "-sess_in", str(session), ca=tls_door.ca)
    assert first.returncode == 0 and "New, TLSv1.2" in first.stdout
    assert again.returncode == 0 and "Reused, TLSv1.2" in again.stdout, again.stdout


def test_plain_http_to_the_tls_port_is_refused_clearly_never_predicted(tls_door):
    before = len(tls_door.log_lines())
    request = (
        f"POST /predictions/palindrome HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {tls_door.key}\r\n"
        'Content-Type: application/json\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{"digits": [1, 2, 2]}'
    ).encode()
    for port in (tls_door.door.port, tls_door.door.grpc_port):
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer[:300]
        refusal = json.loads(body)
        assert refusal["type"] == "BadRequest" and "https://" in refusal["message"], refusal
    deadline = time.monotonic() + 10
    while len([line for line in tls_door.log_lines()[before:] if line["status"] == 400]) < 2:
        assert time.monotonic() < deadline, tls_door.log_lines()[before:]
        time.sleep(0.05)
    assert all(line["upstream"] == "" for line in tls_door.log_lines()[before:] if line["status"] == 400)


# -- the certificate rotated under load -----------------------------------------------------------------


def ask_until(stop: threading.Event, client, outcomes: Counter, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            digit = client.predict("palindrome", {"digits": [7, 4, 4]})["digit"]
            outcomes["ok" if digit == 7 else f"wrong digit {digit}"] += 1
        except (ServerError, OSError) as err:
            outcomes[f"{getattr(err, 'status', type(err).__name__)}: {str(err)[:100]}"] += 1


def test_the_certificate_rotates_without_a_restart_and_fails_no_request(server, tmp_path):
    """A new server certificate (from the same CA, for the same names) written while 8 clients (6 REST over HTTPS,
    2 gRPC over TLS) ask palindromes: the door reads its certificate at every new connection, so the new one is
    served from the next handshake on, on both ports, with neither a restart nor a reload; every request answered."""
    running = start_door(server, tmp_path / "door", limits=ops_door.Limits(per_client=False))
    try:
        old = served_certificate(running.door.port, running.ca)
    except BaseException:
        ops_door.stop(running.runtime)
        raise
    folder = running.ca.parent
    stop = threading.Event()
    outcomes = [Counter() for _ in range(ROTATION_REST_CLIENTS + ROTATION_GRPC_CLIENTS)]
    clients = [
        RestClient(running.url, running.key, timeout=TIMEOUT, ca=running.ca) for _ in range(ROTATION_REST_CLIENTS)
    ]
    clients += [
        GrpcClient(running.target, running.key, timeout=TIMEOUT, ca=running.ca) for _ in range(ROTATION_GRPC_CLIENTS)
    ]
    threads = [
        threading.Thread(target=ask_until, args=(stop, client, counts, 3 * ROTATION_PAUSE_S + 60), daemon=True)
        for client, counts in zip(clients, outcomes, strict=True)
    ]
    pid = ops_door.master_pid(running.runtime)
    workers = door_nginx.workers(pid)
    try:
        for thread in threads:
            thread.start()
        time.sleep(ROTATION_PAUSE_S)
        door_tls.issue_server_certificate(folder, door_tls.server_names())
        new = served_certificate(running.door.port, running.ca)
        new_grpc = served_certificate(running.door.grpc_port, running.ca)
        time.sleep(ROTATION_PAUSE_S)
        same_workers = door_nginx.workers(pid) == workers
    finally:
        end_load(stop, threads, clients, running, TIMEOUT)
    total = sum(outcomes, Counter())
    print(f"\nthrough a certificate rotation over TLS: {dict(total)}")
    assert new != old and new_grpc == new  # the rotated certificate, on both ports, at once
    assert same_workers  # not reloaded, not restarted
    assert all(counts["ok"] > 0 for counts in outcomes), outcomes
    assert set(total) == {"ok"}, dict(total)


# -- what TLS costs ---------------------------------------------------------------------------------------


def ab(url: str, key: str, body: Path) -> dict[str, float]:
    """`ab -k` (keep-alive): AB_REQUESTS palindromes, AB_CONCURRENCY at once; -> req/s, failures, non-2xx."""
    out = subprocess.run(
        [
            "ab", "-k", "-q", "-n", str(AB_REQUESTS), "-c", str(AB_CONCURRENCY), "-s", str(TIMEOUT), "-p", str(body),
            "-T", "application/json", "-H", f"Authorization: Bearer {key}", f"{url}/predictions/palindrome",
        ],
        capture_output=True, text=True, timeout=600,
    ).stdout  # fmt: skip
    figure = {
        "rps": float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1)),
        "failed": int(re.search(r"Failed requests:\s+(\d+)", out).group(1)),
        "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx responses:\s+(\d+)", out)) else 0,
        "keep_alive": int(m.group(1)) if (m := re.search(r"Keep-Alive requests:\s+(\d+)", out)) else 0,
    }
    return figure


@pytest.mark.skipif(shutil.which("ab") is None, reason="no ab (apt-get install apache2-utils)")
def test_rest_over_tls_with_keep_alive_against_plain(server, tmp_path, record_property):
    """`ab -k -c 16` at palindromes through two doors in front of the same TorchServe, one over TLS and one plain
    (limits off: ab is one client), after a warm-up run of each, alternating, AB_ROUNDS each. Recorded: the
    medians and their ratio (docs/OPERATIONS.md's measurement); asserted: no failure, every request kept alive."""
    body = tmp_path / "palindrome.json"
    body.write_bytes(PALINDROME_BODY)
    off = ops_door.Limits(per_client=False)
    doors = {"tls": start_door(server, tmp_path / "tls", limits=off)}
    doors["plain"] = start_door(server, tmp_path / "plain", tls=False, limits=off)
    runs: dict[str, list[dict]] = {"tls": [], "plain": []}
    urls = {name: f"{'https' if name == 'tls' else 'http'}://{HOST}:{d.door.port}" for name, d in doors.items()}
    try:
        for name, running in doors.items():  # warm-up, not counted: the first runs were the slowest by far
            ab(urls[name], running.key, body)
        for round_ in range(AB_ROUNDS):  # alternating, and which goes first alternates too
            for name in ("tls", "plain") if round_ % 2 == 0 else ("plain", "tls"):
                runs[name].append(ab(urls[name], doors[name].key, body))
    finally:
        for running in doors.values():
            ops_door.stop(running.runtime)
    medians = {name: sorted(r["rps"] for r in figures)[len(figures) // 2] for name, figures in runs.items()}
    figures = {
        "tls_rps": [r["rps"] for r in runs["tls"]],
        "plain_rps": [r["rps"] for r in runs["plain"]],
        "ratio": round(medians["tls"] / medians["plain"], 3),
    }
    record_property("tls_keep_alive", figures)
    print(f"\nREST through the door, ab -k -c {AB_CONCURRENCY}: {figures}")
    for figure in runs["tls"] + runs["plain"]:
        assert figure["failed"] == 0 and figure["non_2xx"] == 0, runs
        assert figure["keep_alive"] == AB_REQUESTS, runs
