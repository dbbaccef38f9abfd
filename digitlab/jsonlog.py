"""One log line format for every process of the product: a JSON object per line.

`{"time", "level", "logger", "message", ...}` plus the fields a caller passes in `extra` (`request_id`,
`model`, `event`, ...), so that log shippers read fields, not prose, and one request's lines are found by its
`request_id` in the door's, the supervisor's and the workers' logs alike. Standard library only: the runtime
(ops/logs.py) and the handlers inside the archives both use it.
"""

from __future__ import annotations

import json
import logging
import sys
import time

# LogRecord's own attributes: everything else on a record came from `extra=` and is written as a field.
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {k: v for k, v in vars(record).items() if k not in STANDARD and not k.startswith("_")}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def json_handler(stream=sys.stdout) -> logging.Handler:
    """A handler writing JsonLines to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    return handler
