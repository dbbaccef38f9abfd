"""The runtime's logs: one JSON object per line, to stdout in containers or to a file capped by size.

Every line is `{"time", "level", "logger", "message", ...}` plus the fields a caller passes in `extra` (`model`,
`request_id`, `event`, ...), so `docker logs`, `kubectl logs` and any log shipper read fields, not prose.
A file (`make serve`'s .ts/console.log) rolls at MAX_BYTES and keeps BACKUPS older files: it can never grow past
(BACKUPS + 1) x MAX_BYTES, however fast lines come. The line format is digitlab.jsonlog's, which the
handlers write too. Standard library only (the serving image's supervisor).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from digitlab.jsonlog import JsonLines

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 2


def configure(log_file: Path | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send every logger's lines, as JSON, to `log_file` (rolled by size) or, without one, to stdout."""
    if log_file is None:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler
