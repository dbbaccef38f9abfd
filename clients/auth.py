"""Finding TorchServe's API keys the way a user's shell would."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

KEY_FILE_ENV = "TORCHSERVE_KEY_FILE"  # path to a key_file.json
TOKEN_ENV = "TORCHSERVE_TOKEN"  # an inference key, e.g. for a remote server
API_KEY_ENV = "DIGITLAB_API_KEY"  # a key of the front door (make gateway), not of TorchServe
T = TypeVar("T")
DEFAULT_KEY_FILES = (Path(".ts/key_file.json"), Path(__file__).resolve().parent.parent / ".ts" / "key_file.json")


KEY_FILE_READS = 5  # TorchServe rewrites the key file in place: a read can catch it empty or half-written


def read_key_file(path: Path) -> dict:
    """key_file.json -> {"management": {"key", "expiration time"}, "inference": ..., "API": ...}."""
    for attempt in range(KEY_FILE_READS):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            if attempt == KEY_FILE_READS - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def find_token(kind: str = "inference", key_file: str | Path | None = None) -> str | None:
    """The key for `kind` ("inference" or "management"), or None when the server runs without auth.

    Order: explicit `key_file`, $TORCHSERVE_TOKEN (inference only), $TORCHSERVE_KEY_FILE, then the
    key file `make serve` writes (.ts/key_file.json). Read on every call: keys rotate.
    """
    if key_file is None and kind == "inference" and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    candidates = [Path(key_file)] if key_file else [Path(p) for p in filter(None, [os.environ.get(KEY_FILE_ENV)])]
    candidates += [] if key_file else list(DEFAULT_KEY_FILES)
    for path in candidates:
        if path.is_file():
            return read_key_file(path)[kind]["key"]
    return None


def call_with_fresh_key(call: Callable[[str | None], T], token: str | None, is_auth_error: Callable[[Exception], bool],
                        kind: str = "inference") -> T:
    """`call(key)`; when it fails for authentication and the key came from the key file, re-read and retry once.

    TorchServe's keys expire and are renewed by the supervisor (or `make rotate-keys`), which rewrites
    the key file: a client holding the old key gets one refusal, then goes on with the new one. A key
    the caller passed explicitly is used as given.
    """
    key = token if token is not None else find_token(kind)
    try:
        return call(key)
    except Exception as err:
        if token is not None or not is_auth_error(err):
            raise
        fresh = find_token(kind)
        if fresh == key:
            raise
        return call(fresh)


def find_api_key(key_file: str | Path | None = None) -> str | None:
    """A key of the front door: the newest (last) line of `key_file`, else $DIGITLAB_API_KEY, else None.

    The door's key file (`.gateway/api_keys`) holds one key per line, oldest first: during a rotation
    both are accepted, and clients already send the new one.
    """
    if key_file is not None:
        keys = [line.strip() for line in Path(key_file).read_text().splitlines() if line.strip()]
        if keys:
            return keys[-1]
    return os.environ.get(API_KEY_ENV) or None

