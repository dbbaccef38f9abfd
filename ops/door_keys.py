"""The door's keys: the client keys it accepts, each with an id, and where TorchServe's key is read from.

The files' formats are digitlab.keyfiles'; this module adds what the door needs on top: a key file line is
`<key>` or `<id> <key>` (the id names the client in the door's logs and counts its budget; without one, a short
hash of the key), every key and id goes verbatim into nginx's config, so each is checked first, and a first
start writes a fresh client key.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from digitlab.keyfiles import API_KEY_ENV, accepted_client_keys, torchserve_keys
from digitlab.keyfiles import read_client_keys as key_file_lines

# Keys go verbatim into the config: only characters that cannot end a quoted nginx string.
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_CLIENT_KEY_LENGTH = 16  # a client key is a password facing the network; TorchServe's own are 8 long
MAX_KEY_LENGTH = 100  # "Bearer " + key must fit the template's map_hash_bucket_size (128)
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")  # a client's name in the logs and its budget's key
HASH_ID_CHARS = 12  # an id made from the key: "k-" + the first 12 hex digits of its SHA-256 (48 bits)


class ClientKey(NamedTuple):
    """One accepted client key and the id that names its client (logs, per-client budgets)."""

    id: str
    key: str


def checked_key(key: str, min_length: int = MIN_CLIENT_KEY_LENGTH) -> str:
    if not KEY_CHARACTERS.fullmatch(key) or not min_length <= len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"a key is {min_length} to {MAX_KEY_LENGTH} characters from A-Z a-z 0-9 . _ ~ + / = -")
    return key


def key_id(key: str) -> str:
    """The id of a key given without one: a short hash of it, which names the client and reveals nothing usable."""
    return "k-" + hashlib.sha256(key.encode()).hexdigest()[:HASH_ID_CHARS]


def client_key_entry(line: str | ClientKey) -> ClientKey:
    """A key file line, `<key>` or `<id> <key>`, as a checked ClientKey (a ClientKey is checked as it is)."""
    if isinstance(line, ClientKey):
        given_id, key = line
    else:
        fields = line.split()
        if len(fields) not in (1, 2):
            raise ValueError("a client key line is `<key>` or `<id> <key>`")
        given_id, key = (None, fields[0]) if len(fields) == 1 else fields
    checked_key(key)
    if given_id is None:
        return ClientKey(key_id(key), key)
    if not KEY_ID.fullmatch(given_id):
        raise ValueError(f"a client key's id is 1 to 32 characters from A-Z a-z 0-9 . _ -, got {given_id!r}")
    return ClientKey(given_id, key)


def checked_client_keys(lines) -> list[ClientKey]:
    """Lines or ClientKeys -> checked ClientKeys, each key once (its first line wins), ids unique."""
    entries: dict[str, ClientKey] = {}
    for line in lines:
        entry = client_key_entry(line)
        entries.setdefault(entry.key, entry)
    ids = [entry.id for entry in entries.values()]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"two client keys have the same id: {', '.join(duplicates)}")
    return list(entries.values())


def read_client_keys(key_file: Path) -> list[ClientKey]:
    """$DIGITLAB_API_KEY, then every non-empty line of `key_file` (oldest first, newest last), each checked."""
    return checked_client_keys(accepted_client_keys(key_file))


def ensure_client_key(key_file: Path) -> None:
    """Write `key_file` (mode 0600) with one fresh key when neither it nor $DIGITLAB_API_KEY exists."""
    if os.environ.get(API_KEY_ENV) or key_file.exists():
        return
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


def client_key(key_file: Path) -> str:
    """The key a client should send: the key file's last line (its key, without an id), else $DIGITLAB_API_KEY."""
    lines = key_file_lines(key_file)
    newest = lines[-1] if lines else os.environ.get(API_KEY_ENV)
    if not newest:
        raise SystemExit(f"no client key: set ${API_KEY_ENV} or start the door (make door) to create {key_file}")
    return client_key_entry(newest).key


def torchserve_key(key_file: str | None) -> str | None:
    """TorchServe's inference key (the door itself reads it per request, in nginx); None when TorchServe runs
    without auth."""
    return torchserve_keys(key_file)["inference"] if key_file else None


def key_pattern(key: str) -> str:
    """The regex that matches exactly "Bearer <key>" in an Authorization header: the scheme's case is free (RFC 9110,
    11.1: auth-scheme is case-insensitive), the key's never. nginx's map compares plain strings without regard to
    case, so a key is a case-sensitive regex (`~`), its two regex characters (`.`, `+`) escaped."""
    return "~^(?i:bearer) +" + key.replace(".", r"\.").replace("+", r"\+") + "$"


def keys_include(client_keys: Iterable[ClientKey]) -> str:
    """keys.conf, the door's include of its accepted keys: one map entry per key, to the id that names its client."""
    return "".join(f'    "{key_pattern(entry.key)}" {entry.id};\n' for entry in client_keys)
