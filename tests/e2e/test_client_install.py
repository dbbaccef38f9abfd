"""The client as a user installs it: `pip install ".[client]"` into a fresh venv without torch, against a
real TorchServe.

Proves that the installed namespace is `digitlab` only, that the `digitlab` command and the SDK work,
REST and a gRPC interpolation stream included, and that nothing pulls in torch. The venv is built once
per session in a temporary directory (about a minute: a venv, then pip from the local index or cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.server, pytest.mark.install]
INSTALL_TIMEOUT_S = 900  # only against a hung pip; nothing here asserts on time


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> Path:
    if not (ROOT / "clients" / "ts_grpc" / "inference_pb2_grpc.py").exists():
        pytest.fail("no gRPC stubs in clients/ts_grpc: run `make stubs` (make test does)")
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
    run = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", ".[client]"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env=clean_env(),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without this checkout on the path or its keys: the venv must stand alone."""
    drop = {"PYTHONPATH", "TORCHSERVE_TOKEN", "TORCHSERVE_KEY_FILE", "DIGITLAB_API_KEY", "VIRTUAL_ENV"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def run_in(venv: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`args[0]` from the venv's bin/ (the `digitlab` command, its python), run outside the checkout."""
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(**env),
    )


def site_packages(venv: Path) -> Path:
    [path] = (venv / "lib").glob("python3.*/site-packages")
    return path


def test_torch_is_not_installed_and_only_the_digitlab_namespace_is(client_venv, tmp_path):
    python = str(client_venv / "bin" / "python")
    no_torch = subprocess.run(
        [python, "-c", "import torch"], cwd=tmp_path, capture_output=True, text=True, env=clean_env()
    )
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    installed = {p.name for p in site_packages(client_venv).iterdir()}
    assert "digitlab" in installed
    assert not installed & {"clients", "handlers", "tools", "training", "benchmarks", "loadtests", "tests"}
    package = site_packages(client_venv) / "digitlab"
    assert (package / "clients" / "ts_grpc" / "inference_pb2_grpc.py").is_file()


def test_digitlab_command_answers_a_palindrome(client_venv, server, tmp_path):
    run = run_in(
        client_venv,
        "digitlab",
        "palindrome",
        "1",
        "2",
        "3",
        "2",
        "--url",
        server.endpoints.inference,
        f"--token={server.key()}",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("1232 -> 1   (lstm")


def test_digitlab_command_reads_the_key_file_and_streams_an_interpolation_over_grpc(client_venv, server, tmp_path):
    gif = tmp_path / "path.gif"
    run = run_in(
        client_venv,
        "digitlab",
        "interpolate",
        "--from",
        "id:1:0",
        "--to",
        "id:1:1",
        "--steps",
        "4",
        "--grpc",
        "--target",
        server.endpoints.grpc_inference,
        "--quiet",
        "-o",
        str(gif),
        cwd=tmp_path,
        TORCHSERVE_KEY_FILE=str(server.key_file),
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()[0].split(":")[1].split()) == 4  # "digits read along the path: d d d d"
    assert gif.read_bytes().startswith(b"GIF8")


SDK_SCRIPT = """
import sys
from digitlab.clients import GrpcClient, RestClient
from digitlab.schemas import Frame, PalindromeResponse
target, url, key = sys.argv[1:4]
with GrpcClient(target, token=key) as client:
    frames = list(client.interpolate_stream({"seed": 1, "index": 0}, {"seed": 1, "index": 1}, steps=5))
    assert [f.index for f in frames] == list(range(5)) and all(isinstance(f, Frame) for f in frames)
    assert client.palindrome("1232").digit == 1
with RestClient(url, token=key) as client:
    answer = client.palindrome([4, 5, 5], model="palindrome_rnn")
    assert isinstance(answer, PalindromeResponse) and answer.digit == 4 and answer.model == "rnn"
assert "torch" not in sys.modules and "numpy" not in sys.modules
print("ok")
"""


def test_the_sdk_streams_frames_and_returns_typed_answers_without_torch(client_venv, server, tmp_path):
    run = run_in(
        client_venv,
        "python",
        "-c",
        SDK_SCRIPT,
        server.endpoints.grpc_inference,
        server.endpoints.inference,
        server.key(),
        cwd=tmp_path,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
