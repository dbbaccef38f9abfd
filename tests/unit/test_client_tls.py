"""The SDK and the `digitlab` command over TLS, against tiny servers started here (no door, no TorchServe).

A throwaway CA made with `openssl` signs a certificate for 127.0.0.1 and localhost (subjectAltName), and one
for another host name; an HTTPS server (http.server + ssl) answers like TorchServe's REST API and a gRPC
server with `ssl_server_credentials` like its InferenceAPIsService. The clients must answer when given the
CA (argument, --ca, $DIGITLAB_CA, or the local door's CA found by itself), and fail in one line that says
the certificate could not be verified when it is missing, wrong, or for another host: never a traceback,
never a retry, never an unverified answer.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients import base, tls
from clients.__main__ import main
from clients.errors import ServerError, Unreachable
from clients.grpc import GrpcClient
from clients.rest import RestClient
from clients.tls import find_ca, grpc_target
from tests.grpc_servers import grpc_server

if shutil.which("openssl") is None:
    pytest.skip("TLS tests skipped: no openssl command to make their certificates", allow_module_level=True)
try:
    from clients.ts_grpc import inference_pb2, inference_pb2_grpc
except ImportError:
    pytest.skip("TLS tests skipped: no gRPC stubs (make stubs)", allow_module_level=True)

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
KEY = "tls-test-key"
ANSWER = {"digit": 1, "probabilities": [0.0, 1.0] + [0.0] * 8, "length": 4, "model": "lstm"}
FRAMES = [
    {"index": i, "of": 3, "png": "iVBORw0KGgo=", "digit": 3, "confidence": 0.9, "generated_at": 0.0} for i in range(3)
]
# What nginx answers a plain HTTP request on its TLS port (nginx 1.22, its error 497).
NGINX_PLAIN_ON_TLS = (
    "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n"
    "<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n"
    "<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
)


# -- certificates ---------------------------------------------------------------------------------------


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"),
        *("-keyout", key, "-out", cert, "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=folder,
    )
    return cert, key


def make_server_cert(folder: Path, name: str, ca: tuple[Path, Path], alt_names: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(
        f"subjectAltName={alt_names}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", key, "-out", csr, "-subj", f"/CN={name}"),
        cwd=folder,
    )
    openssl(
        *("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2"),
        *("-out", cert, "-extfile", ext),
        cwd=folder,
    )
    return cert, key


class Pki:
    """The test's CA, a CA nobody trusts, and two certificates signed by the first: this machine's, another host's."""

    def __init__(self, folder: Path) -> None:
        ca = make_ca(folder, "test-ca")
        self.ca = ca[0]
        self.wrong_ca = make_ca(folder, "wrong-ca")[0]
        self.local = make_server_cert(folder, "local", ca, "IP:127.0.0.1,DNS:localhost")
        self.elsewhere = make_server_cert(folder, "elsewhere", ca, "DNS:elsewhere.invalid")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def no_ca_around(monkeypatch) -> None:
    """No CA from the environment or from a door of this checkout (.door/tls/ca.pem): each test names its own."""
    monkeypatch.delenv(tls.CA_ENV, raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setattr(tls, "DEFAULT_CA_FILES", ())


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Every retry's wait: a TLS failure is not retried."""
    waited: list[float] = []
    monkeypatch.setattr(base.time, "sleep", waited.append)
    return waited


# -- the servers ----------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """TorchServe's REST contract, as little as the tests need: a palindrome answer, frames for a stream."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.plain_answer is not None:  # type: ignore[attr-defined]
            return self.answer(400, self.server.plain_answer.encode(), "text/html")  # type: ignore[attr-defined]
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self.answer(401, b'{"code": 401, "type": "Unauthorized", "message": "wrong key"}')
        if body.get("stream"):
            return self.answer(200, "".join(json.dumps(f) + "\n" for f in FRAMES).encode(), "application/x-ndjson")
        return self.answer(200, json.dumps(ANSWER).encode())

    def answer(self, status: int, data: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    plain_answer: str | None = None  # set: answer every request with this HTML 400 (nginx on its TLS port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused handshake is what the tests ask for, not news


def serve_http(cert: tuple[Path, Path] | None, plain_answer: str | None = None) -> Iterator[int]:
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.plain_answer = plain_answer
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        # The handshake in the request's thread, not in accept(): a client that never completes one
        # cannot stall the others.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def https_port(pki) -> Iterator[int]:
    yield from serve_http(pki.local)


@pytest.fixture(scope="module")
def elsewhere_port(pki) -> Iterator[int]:
    """Serves a certificate the CA signed, for another host name."""
    yield from serve_http(pki.elsewhere)


@pytest.fixture(scope="module")
def plain_port() -> Iterator[int]:
    """Plain HTTP answering as nginx answers plain HTTP on a TLS port."""
    yield from serve_http(None, plain_answer=NGINX_PLAIN_ON_TLS)


class Inference(inference_pb2_grpc.InferenceAPIsServiceServicer):
    """TorchServe's gRPC contract: a key in the metadata, one message, or one per frame for a stream."""

    def _refused(self, context: grpc.ServicerContext) -> bool:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {KEY}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong key")
        return False

    def Predictions(self, request, context):  # noqa: N802 - the service's name
        self._refused(context)
        return inference_pb2.PredictionResponse(prediction=json.dumps(ANSWER).encode())

    def StreamPredictions(self, request, context):  # noqa: N802
        self._refused(context)
        body = json.loads(request.input["data"])
        for message in FRAMES if body.get("stream") else [ANSWER]:
            yield inference_pb2.PredictionResponse(prediction=json.dumps(message).encode())


def serve_grpc(cert: tuple[Path, Path]) -> Iterator[int]:
    credentials = grpc.ssl_server_credentials([(cert[1].read_bytes(), cert[0].read_bytes())])
    with grpc_server(
        lambda server: inference_pb2_grpc.add_InferenceAPIsServiceServicer_to_server(Inference(), server), credentials
    ) as port:
        yield port


@pytest.fixture(scope="module")
def grpcs_port(pki) -> Iterator[int]:
    yield from serve_grpc(pki.local)


@pytest.fixture(scope="module")
def grpcs_elsewhere_port(pki) -> Iterator[int]:
    yield from serve_grpc(pki.elsewhere)


def assert_not_verified(err: ServerError) -> None:
    """One line that says what failed and what to do; not an "unreachable" (which would be retried)."""
    assert not isinstance(err, Unreachable)
    assert err.status == "tls", err
    assert "could not be verified" in err.message and "give the CA that signed it" in err.message, err
    assert "\n" not in str(err)


# -- REST -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_rest_over_tls_answers_with_the_ca(pki, https_port, host):
    with RestClient(f"https://{host}:{https_port}", KEY, ca=pki.ca) as client:
        assert client.tls and client.ca == pki.ca
        assert client.palindrome("1232").digit == 1
        assert [f.index for f in client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=3)] == [0, 1, 2]


@pytest.mark.parametrize("which", ["no CA", "a wrong CA"])
def test_rest_without_the_right_ca_says_the_certificate_could_not_be_verified(pki, https_port, sleeps, which):
    ca = None if which == "no CA" else pki.wrong_ca
    with RestClient(f"https://127.0.0.1:{https_port}", KEY, ca=ca) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert_not_verified(err.value)
    assert "unable to get local issuer certificate" in err.value.message
    assert (str(pki.wrong_ca) in err.value.message) == (ca is not None)  # it says which CA it tried
    assert sleeps == []  # not retried: the same certificate would be refused again


def test_rest_checks_the_host_name(pki, elsewhere_port, sleeps):
    """Signed by the trusted CA, but for another host: refused all the same."""
    with RestClient(f"https://127.0.0.1:{elsewhere_port}", KEY, ca=pki.ca) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert_not_verified(err.value)
    assert "mismatch" in err.value.message and sleeps == []


def test_plain_http_to_a_tls_port_fails_clearly(https_port, plain_port):
    # A TLS server that drops the plain request (Python's ssl): the hint comes with "unreachable".
    with RestClient(f"http://127.0.0.1:{https_port}", KEY, retries=0) as client, pytest.raises(Unreachable) as err:
        client.palindrome("1232")
    assert f"use https://127.0.0.1:{https_port}" in err.value.message and "\n" not in str(err.value)
    # nginx (the door) answers it with a 400 HTML page: one line that says the same.
    with RestClient(f"http://127.0.0.1:{plain_port}", KEY) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert err.value.status == 400
    assert err.value.message == f"http://127.0.0.1:{plain_port} is a TLS port: use https://127.0.0.1:{plain_port}"


def test_https_to_a_plain_port_fails_clearly(pki, plain_port, sleeps):
    with RestClient(f"https://127.0.0.1:{plain_port}", KEY, ca=pki.ca) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert (
        err.value.status == "tls"
        and "no TLS handshake" in err.value.message
        and "is it a TLS port?" in err.value.message
    )
    assert "\n" not in str(err.value) and sleeps == []


# -- gRPC -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:7070", ("127.0.0.1:7070", False)),  # as today: plaintext
        ("grpc://127.0.0.1:7070", ("127.0.0.1:7070", False)),
        ("http://127.0.0.1:7070/", ("127.0.0.1:7070", False)),
        ("grpcs://127.0.0.1:7090", ("127.0.0.1:7090", True)),
        ("https://localhost:7090", ("localhost:7090", True)),
        ("GRPCS://[::1]:7090", ("[::1]:7090", True)),
        ("dns:///example.com:443", ("dns:///example.com:443", False)),  # grpcio's own syntax passes through
    ],
)
def test_a_grpc_target_says_whether_it_is_tls(target, expected):
    assert grpc_target(target) == expected
    assert grpc_target(expected[0], tls=True) == (expected[0], True)


def test_contradictions_and_a_ca_for_a_plain_address_are_refused(pki, monkeypatch):
    for bad in ("grpcs://", "grpcs://h:1/path"):
        with pytest.raises(ValueError, match="a gRPC address is"):
            grpc_target(bad)
    with pytest.raises(ValueError, match="disagree"):
        grpc_target("grpcs://h:1", tls=False)
    with pytest.raises(ValueError, match="use grpcs://127.0.0.1:1"):
        GrpcClient("127.0.0.1:1", ca=pki.ca)
    with pytest.raises(ValueError, match="plain HTTP: use https://"):
        RestClient("http://127.0.0.1:1", ca=pki.ca)
    with pytest.raises(ValueError, match="http://host:port or https://host:port"):
        RestClient("127.0.0.1:8080")
    with pytest.raises(FileNotFoundError, match="ca: no CA file at"):
        RestClient("https://127.0.0.1:1", ca=pki.ca.parent / "missing.pem")
    monkeypatch.setenv(tls.CA_ENV, str(pki.ca.parent / "missing.pem"))
    with pytest.raises(FileNotFoundError, match=r"\$DIGITLAB_CA: no CA file at"):
        GrpcClient("grpcs://127.0.0.1:1")
    assert RestClient("http://127.0.0.1:1").ca is None  # the environment's CA only matters for TLS


@pytest.mark.parametrize("form", ["grpcs://127.0.0.1:{}", "https://localhost:{}", "tls=True"])
def test_grpc_over_tls_answers_and_streams_with_the_ca(pki, grpcs_port, form):
    target, options = (
        (f"127.0.0.1:{grpcs_port}", {"tls": True}) if form == "tls=True" else (form.format(grpcs_port), {})
    )
    with GrpcClient(target, KEY, ca=pki.ca, **options) as client:
        assert client.tls
        assert client.palindrome("1232").digit == 1
        frames = list(client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=3))
    assert [(f.index, f.of) for f in frames] == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("which", ["no CA", "a wrong CA", "another host"])
def test_grpc_without_the_right_ca_says_the_certificate_could_not_be_verified(
    pki, grpcs_port, grpcs_elsewhere_port, sleeps, which
):
    port = grpcs_elsewhere_port if which == "another host" else grpcs_port
    ca = {"no CA": None, "a wrong CA": pki.wrong_ca, "another host": pki.ca}[which]
    with GrpcClient(f"grpcs://127.0.0.1:{port}", KEY, ca=ca) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert_not_verified(err.value)
    assert ("mismatch" in err.value.message) == (which == "another host") and sleeps == []


def test_plaintext_grpc_to_a_tls_port_fails_clearly(grpcs_port, plain_port, sleeps):
    with GrpcClient(f"127.0.0.1:{grpcs_port}", KEY, retries=0) as client, pytest.raises(Unreachable) as err:
        client.palindrome("1232")
    assert f"use grpcs://127.0.0.1:{grpcs_port}" in err.value.message
    # nginx's TLS port (and any HTTP/1 server) answers in HTTP/1: said so, and not retried.
    with GrpcClient(f"127.0.0.1:{plain_port}", KEY) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert not isinstance(err.value, Unreachable) and "not a plaintext gRPC port" in err.value.message
    assert f"use grpcs://127.0.0.1:{plain_port}" in err.value.message and sleeps == []


def test_tls_grpc_to_a_plain_port_fails_clearly(pki, plain_port, sleeps):
    with GrpcClient(f"grpcs://127.0.0.1:{plain_port}", KEY, ca=pki.ca) as client, pytest.raises(ServerError) as err:
        client.palindrome("1232")
    assert err.value.status == "tls" and "no TLS handshake" in err.value.message and sleeps == []


# -- where the CA comes from ----------------------------------------------------------------------------


def test_the_environment_names_the_ca(pki, https_port, grpcs_port, monkeypatch):
    monkeypatch.setenv(tls.CA_ENV, str(pki.ca))
    with (
        RestClient(f"https://127.0.0.1:{https_port}", KEY) as rest,
        GrpcClient(f"grpcs://127.0.0.1:{grpcs_port}", KEY) as rpc,
    ):
        assert rest.ca == rpc.ca == pki.ca
        assert rest.palindrome("1232").digit == rpc.palindrome("1232").digit == 1
    with RestClient(f"https://127.0.0.1:{https_port}", KEY, ca=pki.wrong_ca) as client, pytest.raises(ServerError):
        client.palindrome("1232")  # an argument wins over the environment


def test_the_local_doors_ca_is_found_for_servers_on_this_machine_only(pki, https_port, grpcs_port, monkeypatch):
    monkeypatch.setattr(tls, "DEFAULT_CA_FILES", (pki.ca.parent / "no-door-here.pem", pki.ca))
    with (
        RestClient(f"https://localhost:{https_port}", KEY) as rest,
        GrpcClient(f"grpcs://127.0.0.1:{grpcs_port}", KEY) as rpc,
    ):
        assert rest.ca == rpc.ca == pki.ca
        assert rest.palindrome("1232").digit == rpc.palindrome("1232").digit == 1
    assert [find_ca(host) for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2")] == [pki.ca] * 5
    assert [find_ca(host) for host in ("example.com", "10.0.0.1", "", None)] == [None] * 4
    monkeypatch.setenv(tls.CA_ENV, str(pki.wrong_ca))
    assert find_ca("127.0.0.1") == pki.wrong_ca  # a CA the user named wins over the door's


# -- the command ----------------------------------------------------------------------------------------


def test_the_command_takes_ca_or_digitlab_ca(pki, https_port, grpcs_port, monkeypatch, capsys):
    rest = ["palindrome", "1232", "--url", f"https://127.0.0.1:{https_port}", f"--token={KEY}"]
    rpc = ["palindrome", "1232", "--grpc", "--target", f"grpcs://127.0.0.1:{grpcs_port}", f"--token={KEY}"]
    for argv in (rest, rpc):
        assert main([*argv, "--ca", str(pki.ca)]) == 0
        assert capsys.readouterr().out.startswith("1232 -> 1   (lstm")
    monkeypatch.setenv(tls.CA_ENV, str(pki.ca))
    for argv in (rest, rpc):
        assert main(argv) == 0
        assert capsys.readouterr().out.startswith("1232 -> 1   (lstm")


def test_the_command_without_the_ca_fails_in_one_line(pki, https_port, grpcs_port, capsys):
    for argv in (
        ["--url", f"https://127.0.0.1:{https_port}"],
        ["--grpc", "--target", f"grpcs://127.0.0.1:{grpcs_port}", "--ca", str(pki.wrong_ca)],
    ):
        assert main(["palindrome", "1232", f"--token={KEY}", "--timeout", "5", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: tls: the certificate of ") and "could not be verified" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["palindrome", "1232", "--url", "http://127.0.0.1:1", "--ca", str(pki.ca)]) == 2
    assert (
        capsys.readouterr().err == "error: a CA was given for http://127.0.0.1:1, which is plain HTTP: use https://\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["palindrome", "1232", "--ca", str(pki.ca.parent / "missing.pem")])
    assert exit_.value.code == 2 and "no CA file at" in capsys.readouterr().err


def test_the_installed_command_prints_one_line_too(grpcs_port):
    """In its own process grpcio logs a refused handshake on stderr unless told not to: the command tells it."""
    run = subprocess.run(
        [sys.executable, "-m", "clients", "palindrome", "1232", "--grpc", f"--token={KEY}"]
        + ["--target", f"grpcs://127.0.0.1:{grpcs_port}", "--timeout", "5"],
        cwd=ROOT,
        env={name: value for name, value in os.environ.items() if name != "GRPC_VERBOSITY"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("error: tls: the certificate of ") and run.stderr.count("\n") == 1, run.stderr
