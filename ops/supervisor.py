"""Run TorchServe and keep it honest: a real readiness signal, stalled-worker recovery, key renewal.

    python -m ops.supervisor --workdir .ts --config config.properties --model-store model_store

`python -m ops.server start` runs this in the background; a container runs it as its entry point. It
1. writes the instance's TorchServe config into the workdir (the hardening that needs absolute paths:
   see `instance_properties`) and starts TorchServe as its child, in a process group of its own;
2. serves, without a key, on `ready_address`: GET /ready -> 200 when every worker of every model is READY
   and each model answers, else 503 (at once when TorchServe's frontend is gone); GET /live -> 200 while
   TorchServe runs or is being started again; GET /events -> what it did. TorchServe's own /ping says
   Healthy before any worker has loaded and while a stalled worker is still listed as READY;
3. watches every model with canaries (its smallest valid request), sent when the model has been idle for
   IDLE_PROBE_S or as soon as new requests arrive for it (at most one per CANARY_GAP_S). A canary left
   unanswered for STALL_AFTER_S, while the model's workers neither completed a request nor used any
   CPU, means a stalled model -- a unary gRPC call that streamed, a dead worker TorchServe still lists as
   READY -- and its workers are scaled to 0 and back. A model busy with real traffic burns CPU, so it is
   never taken for stalled however long its queue (TorchServe's latency metrics count REST only).
   Faster signals restart a model without waiting for a canary: TorchServe's console reporting that a
   model's worker thread failed (`relay_console`), and workers that stay not READY while idle
   (`judge_unready`); a restart whose new workers sit idle is tried again;
4. treats any end of TorchServe it did not ask for (a killed JVM exits the launcher with 0) as a failure:
   the event is recorded and TorchServe started again in place, a few times, then it exits 1 so that the
   orchestrator restarts it (compose's restart: on-failure, Kubernetes);
5. renews TorchServe's inference and management keys before they expire (TorchServe never does; its
   clients re-read the key file and retry once, see clients/base.py), and then reloads every door that
   registered with this instance by running the command it registered (ops/instance.py, `register_door`).

This module is the command and its wiring; the work is done in
    ops.watch      the watch loop and its checks (readiness, canaries, warm-ups, restarts, keys)
    ops.state      what is known of each model, and how each is probed (from digitlab.catalog)
    ops.api        TorchServe's management, metrics and inference APIs, as a client
    ops.workers    worker processes (psutil) and scaling them
    ops.renewal    key renewal, and the registered doors' reloads and logs
    ops.readiness  the /ready, /live and /events endpoint
    ops.launcher   TorchServe started, relayed, stopped and started again
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ops import logs
from ops.instance import (
    DEFAULT_CONFIG,
    DEFAULT_WORKDIR,
    INSTANCE_CONFIG,
    MODEL_STORE,
    instance_properties,
    read_properties,
    write_properties,
)
from ops.launcher import STOP_GRACE_S, run_torchserve
from ops.readiness import serve_readiness
from ops.watch import DRAIN_TIMEOUT_S, Settings, Supervisor

__all__ = ["DRAIN_TIMEOUT_S", "STOP_GRACE_S", "Settings", "Supervisor", "main"]


@dataclass(frozen=True)
class Arguments:
    workdir: Path  # TorchServe's working directory (keys, logs, temp), resolved
    config: Path  # the base TorchServe config
    model_store: Path  # resolved
    log_file: Path | None  # None: JSON lines on stdout (containers); else a file rolled by size (make serve)


def parse_arguments(argv: list[str] | None = None) -> Arguments:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="TorchServe's working directory (keys, logs, temp)"
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the base TorchServe config")
    p.add_argument("--model-store", type=Path, default=MODEL_STORE)
    p.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="write the supervisor's and TorchServe's console lines here, rolled at 10 MB, 2 kept "
        "(default: stdout, as containers log)",
    )
    args = p.parse_args(argv)
    return Arguments(args.workdir.resolve(), args.config, args.model_store.resolve(), args.log_file)


def prepare(arguments: Arguments) -> Settings:
    """The instance's config (the base plus the hardening that needs absolute paths) written into the
    workdir, where TorchServe reads it; -> the supervisor's settings, read from it."""
    arguments.workdir.mkdir(parents=True, exist_ok=True)
    props = instance_properties(read_properties(arguments.config), arguments.workdir, arguments.model_store)
    write_properties(arguments.workdir / INSTANCE_CONFIG, props)
    return Settings.from_properties(arguments.workdir, props)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logs.configure(arguments.log_file)
    settings = prepare(arguments)
    supervisor = Supervisor(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve_readiness(supervisor, settings.ready_address)  # serves from its own thread
    threading.Thread(target=supervisor.watch, args=(stop,), name="watch", daemon=True).start()
    code = run_torchserve(supervisor, settings.workdir, arguments.model_store, stop)
    # No waiting for the pool's threads (a canary may sit in a dead server's socket until its timeout).
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
