"""The two key files, read in one place: TorchServe's `key_file.json` and the door's `api_keys`.

Torch-free and stdlib-only: the client SDK (which sends the keys) and the runtime (the supervisor renews
TorchServe's keys, the door accepts client keys and sends TorchServe's upstream) both import it.

- `key_file.json` is TorchServe's: {"management": {"key", "expiration time"}, "inference": ..., "API": ...}.
  TorchServe rewrites it in place when a key is renewed, so a read can catch it empty or half-written.
- `api_keys` is the door's: one client key per line, oldest first, each line `<key>` or `<id> <key>` (the
  id names the client in the door's limits, logs and metrics; ops/door_keys.py checks and hashes ids). During
  a rotation both the old and the new key are accepted, and clients already send the newest (last) key.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TORCHSERVE_KEY_FILE = "key_file.json"  # written by TorchServe into its working directory
CLIENT_KEY_FILE = "api_keys"  # the door's, in its runtime directory (mode 0600)
API_KEY_ENV = "DIGITLAB_API_KEY"  # one more door key, from the environment (compose, Kubernetes secrets)
KEY_FILE_READS = 5  # attempts at a key_file.json caught mid-rewrite
KEY_FILE_RETRY_S = 0.05


def read_key_file(path: str | Path) -> dict[str, dict]:
    """TorchServe's key_file.json -> {"management": {"key", "expiration time"}, "inference": ..., "API": ...}."""
    path = Path(path)
    for attempt in range(KEY_FILE_READS):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            if attempt == KEY_FILE_READS - 1:
                raise
            time.sleep(KEY_FILE_RETRY_S)
    raise AssertionError("unreachable")


def torchserve_keys(path: str | Path) -> dict[str, str]:
    """{"management": key, "inference": key, "API": key}; empty when there is no key file (auth off)."""
    try:
        return {kind: entry["key"] for kind, entry in read_key_file(path).items()}
    except FileNotFoundError:
        return {}


def line_key(line: str) -> str:
    """The key of a door key-file line, `<key>` or `<id> <key>`: its last field."""
    return line.split()[-1]


def read_client_keys(path: str | Path) -> list[str]:
    """Every non-empty line of a door key file, oldest first, without repeats; [] when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))


def accepted_client_keys(path: str | Path) -> list[str]:
    """What a door accepts: $DIGITLAB_API_KEY, then every key of `path`."""
    env = [os.environ[API_KEY_ENV]] if os.environ.get(API_KEY_ENV) else []
    return list(dict.fromkeys(env + read_client_keys(path)))


def newest_client_key(path: str | Path | None) -> str | None:
    """The key a client of the door sends: the last line of `path`, else $DIGITLAB_API_KEY, else None."""
    lines = read_client_keys(path) if path is not None else []
    return line_key(lines[-1]) if lines else (os.environ.get(API_KEY_ENV) or None)


def read_any_key(path: str | Path, kind: str = "inference") -> str | None:
    """A key from either kind of file: TorchServe's key_file.json (by its JSON) or the door's api_keys."""
    if Path(path).read_text().lstrip().startswith("{"):
        return read_key_file(path)[kind]["key"]
    lines = read_client_keys(path)
    return line_key(lines[-1]) if lines else None
