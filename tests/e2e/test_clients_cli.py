"""The CLI against the real server: answers, one-line errors and exit codes."""

import pytest

from clients.__main__ import main

pytestmark = pytest.mark.server


def connection(server):
    # "--token=KEY": TorchServe's keys are base64url and may start with "-", which argparse takes for an option.
    return [
        "--url",
        server.endpoints.inference,
        "--target",
        server.endpoints.grpc_inference,
        f"--token={server.key()}",
        "--timeout",
        "10",
    ]


@pytest.mark.parametrize("transport", [[], ["--grpc"]])
def test_palindrome_command(server, capsys, transport):
    assert main(["palindrome", "1", "2", "3", "2", *connection(server), *transport]) == 0
    assert capsys.readouterr().out.startswith("1232 -> 1   (lstm")


def test_bad_input_is_one_line_on_stderr_and_exit_code_1(server, capsys):
    assert main(["palindrome", "1234", *connection(server)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 400: digits: not the first T digits") and err.count("\n") == 1


def test_server_down_is_a_clear_error(capsys):
    assert main(["palindrome", "122", "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "no server at http://127.0.0.1:9: start it with `make serve`" in capsys.readouterr().err


def test_token_command_reads_the_key_file(server, capsys, monkeypatch):
    monkeypatch.setenv("TORCHSERVE_KEY_FILE", str(server.key_file))
    monkeypatch.delenv("TORCHSERVE_TOKEN", raising=False)
    assert main(["token"]) == 0
    assert capsys.readouterr().out.strip() == server.key()
