"""Where a client finds its key, the way a user's shell would: TorchServe's key file, the door's, or the
environment. Only the discovery lives here (which variable, which default file); reading the files is
`digitlab.keyfiles`'s, and re-reading a refused key is `Client._call`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from digitlab.keyfiles import API_KEY_ENV, newest_client_key, read_key_file

KEY_FILE_ENV = "TORCHSERVE_KEY_FILE"  # path to a key_file.json
TOKEN_ENV = "TORCHSERVE_TOKEN"  # an inference key, e.g. for a remote server
# Relative to the working directory (a checkout running `make serve`); the second is the checkout this
# module lives in, when it is run from one (an installed package has no .ts/ beside it: harmless).
DEFAULT_KEY_FILES = (Path(".ts/key_file.json"), Path(__file__).resolve().parent.parent / ".ts" / "key_file.json")

__all__ = ["API_KEY_ENV", "DEFAULT_KEY_FILES", "KEY_FILE_ENV", "TOKEN_ENV", "find_api_key", "find_token"]


def find_token(kind: str = "inference", key_file: str | Path | None = None) -> str | None:
    """TorchServe's key for `kind` ("inference" or "management"), or None when the server runs without auth.

    Order: explicit `key_file`, $TORCHSERVE_TOKEN (inference only), $TORCHSERVE_KEY_FILE, then the
    key file `make serve` writes (.ts/key_file.json). Read on every call: keys rotate.
    """
    if key_file is None and kind == "inference" and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if key_file:
        candidates = [Path(key_file)]
    else:
        candidates = [Path(p) for p in filter(None, [os.environ.get(KEY_FILE_ENV)])] + list(DEFAULT_KEY_FILES)
    for path in candidates:
        if path.is_file():
            return read_key_file(path)[kind]["key"]
    return None


def find_api_key(key_file: str | Path | None = None) -> str | None:
    """A key of the door: the newest (last) line of `key_file`, else $DIGITLAB_API_KEY, else None."""
    return newest_client_key(key_file)
