"""The SDK's own logic, without a server: retries, key re-reads, typed answers, frames to files."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from clients import base
from clients.base import Client, decode_message
from clients.errors import ServerError, Unreachable
from clients.images import decode_png, frames_file

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


def test_an_unreachable_server_is_retried_with_exponential_backoff(sleeps):
    down = Unreachable("unreachable", "no server")
    client = Fake([down, down, json.dumps(ANSWER).encode()], token="k", retries=2, backoff=0.5)
    assert client.palindrome([1, 2, 3, 2]).digit == 1
    assert sleeps == [0.5, 1.0] and client.keys == ["k", "k", "k"]


def test_retries_are_bounded_and_refusals_are_not_retried(sleeps):
    down = Unreachable("unreachable", "no server")
    with pytest.raises(Unreachable):
        Fake([down, down, down], token="k", retries=2).predict("palindrome", {})
    refused = Fake([ServerError(400, "bad digits")], token="k")
    with pytest.raises(ServerError, match="bad digits"):
        refused.predict("palindrome", {})
    assert sleeps == [0.2, 0.4] and refused.script == []


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
