"""The supervisor's own endpoint, without a key: GET /ready, /live, /events and /metrics (ops.ready is its probe).

/ready: 200 when every worker of every model is READY and each model answers, else 503 (at once when
TorchServe's frontend is gone or a stop was asked for). /live: 200 while TorchServe runs or is being started
again in place, 503 once the supervisor gave up. /events: what it did, the newest 100. /metrics: the same
facts as numbers for Prometheus (ops.watch: readiness, TorchServe's restarts, repaired workers, canary latency).

Load balancers, doors and orchestrators ask it every second or so, several at once, each on a new connection:
the listen backlog is REQUEST_BACKLOG, not http.server's 5, so a burst of probes queues instead of being
refused (a refused probe reads as "not ready").
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ops.instance import EVENTS_PATH, LIVE_PATH, READY_PATH
from ops.metrics import CONTENT_TYPE
from ops.watch import Supervisor

METRICS_PATH = "/metrics"
REQUEST_BACKLOG = 128  # connections the kernel queues for the server (socket.listen's backlog)


class ProbeServer(ThreadingHTTPServer):
    request_queue_size = REQUEST_BACKLOG
    daemon_threads = True


def serve_readiness(supervisor: Supervisor, address: str) -> ThreadingHTTPServer:
    """Serve on `address` (http://host:port) from a thread of its own; -> the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == READY_PATH:
                ok, detail = supervisor.ready()
                self.answer(200 if ok else 503, {"status": "ready" if ok else "not ready", "models": detail})
            elif self.path == LIVE_PATH:  # alive while TorchServe runs or is being started again in place
                if supervisor.frontend_alive():
                    self.answer(200, {"status": "live"})
                else:
                    dead = supervisor.gave_up
                    self.answer(503 if dead else 200, {"status": "dead" if dead else "restarting"})
            elif self.path == EVENTS_PATH:
                self.answer(200, {"events": supervisor.events[-100:]})
            elif self.path == METRICS_PATH:
                self.answer(200, supervisor.metrics.render().encode(), CONTENT_TYPE)
            else:
                paths = [READY_PATH, LIVE_PATH, EVENTS_PATH, METRICS_PATH]
                self.answer(404, {"status": "not found", "paths": paths})

        def answer(self, code: int, payload: dict | bytes, content_type: str = "application/json") -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every second would flood the console
            pass

    url = urlsplit(address)
    server = ProbeServer((url.hostname, url.port), Handler)
    threading.Thread(target=server.serve_forever, name="readiness", daemon=True).start()
    return server
