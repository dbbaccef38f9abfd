"""The door's keys: the client keys it accepts and the TorchServe key it sends upstream.

The files' formats are digitlab.keyfiles'; this module adds what the door needs on top: every key goes
verbatim into nginx's config, so it is checked first, and a first start writes a fresh client key.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from digitlab.keyfiles import API_KEY_ENV, accepted_client_keys, newest_client_key, torchserve_keys

# Keys go verbatim into the config: only characters that cannot end a quoted nginx string.
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_CLIENT_KEY_LENGTH = 16  # a client key is a password facing the network; TorchServe's own are 8 long
MAX_KEY_LENGTH = 100  # "Bearer " + key must fit the template's map_hash_bucket_size (128)


def checked_key(key: str, min_length: int = MIN_CLIENT_KEY_LENGTH) -> str:
    if not KEY_CHARACTERS.fullmatch(key) or not min_length <= len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"a key is {min_length} to {MAX_KEY_LENGTH} characters from A-Z a-z 0-9 . _ ~ + / = -")
    return key


def read_client_keys(key_file: Path) -> list[str]:
    """$DIGITLAB_API_KEY, then every non-empty line of `key_file` (oldest first, newest last), each checked."""
    return [checked_key(k) for k in accepted_client_keys(key_file)]


def ensure_client_key(key_file: Path) -> None:
    """Write `key_file` (mode 0600) with one fresh key when neither it nor $DIGITLAB_API_KEY exists."""
    if os.environ.get(API_KEY_ENV) or key_file.exists():
        return
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


def client_key(key_file: Path) -> str:
    """The key a client should send: the key file's last line, else $DIGITLAB_API_KEY (as the clients read it)."""
    key = newest_client_key(key_file)
    if key is None:
        raise SystemExit(f"no client key: set ${API_KEY_ENV} or start the door (make door) to create {key_file}")
    return key


def torchserve_key(key_file: str | None) -> str | None:
    """TorchServe's inference key, which the door sends upstream; None when TorchServe runs without auth."""
    return torchserve_keys(key_file)["inference"] if key_file else None
