"""Finding API keys the way a user's shell would: TorchServe's key file, the front door's, or the environment."""

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
# Relative to the working directory (a checkout running `make serve`); the second is the checkout this
# module lives in, when it is run from one (an installed package has no .ts/ beside it: harmless).
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


def read_any_key_file(path: str | Path, kind: str = "inference") -> str | None:
    """A key from either kind of key file: TorchServe's key_file.json (JSON) or the door's api_keys (newest line)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("{"):
        return find_token(kind, path)
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    return keys[-1] if keys else None


def call_with_fresh_key(
    call: Callable[[str | None], T],
    token: str | None,
    is_auth_error: Callable[[Exception], bool],
    kind: str = "inference",
    find: Callable[[], str | None] | None = None,
) -> T:
    """`call(key)`; when it fails for authentication and the key came from a key file, re-read and retry once.

    TorchServe's keys expire and are renewed by the supervisor (or `make rotate-keys`), which rewrites
    the key file: a client holding the old key gets one refusal, then goes on with the new one. A key
    the caller passed explicitly is used as given. `find` reads the key (default: TorchServe's, `find_token`).
    """
    find = find or (lambda: find_token(kind))
    key = token if token is not None else find()
    try:
        return call(key)
    except Exception as err:
        if token is not None or not is_auth_error(err):
            raise
        fresh = find()
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
