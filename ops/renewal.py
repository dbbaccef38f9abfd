"""TorchServe's keys renewed before they expire, and the doors that hold the inference key kept in step.

TorchServe never renews its keys itself; its clients re-read the key file and retry once (clients/base.py).
The inference key is renewed first, and the doors that registered with the instance are told at once, by
running the command each registered (ops/instance.py, `register_door`), before the management key: clients wait
on the inference key, nothing does on the management key. A door that reads the key per request (ops/door.py)
needs nothing and its command only checks that it still runs; a door that holds the key in its config reloads.
The supervisor knows no door's code.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from ops.api import TorchServeAPI, expires_at
from ops.instance import cap_logs, forget_doors, registered_doors

log = logging.getLogger("supervisor")

RENEW_AT_FRACTION = 0.25  # renew a key when less than this share of its lifetime is left
DOOR_RELOAD_TIMEOUT_S = 30.0  # a door's reload command waits for its old nginx workers (at most 10 s)


def renew_keys(
    api: TorchServeAPI, lifetime_s: float, force: bool = False, events: list[dict] | None = None
) -> list[str]:
    """Regenerate the inference / management key when little of its `lifetime_s` is left (or now, `force`),
    note it in `events`; the inference key first, and the doors told as soon as it is new; -> the kinds renewed."""
    keys = api.keys()
    if "API" not in keys:
        return []  # token authorization is off
    renewed = []
    for kind in ("inference", "management"):  # the order matters: the doors follow the inference key at once
        expiry = expires_at(keys.get(kind, {}))
        if force or (expiry is not None and expiry - time.time() < RENEW_AT_FRACTION * lifetime_s):
            status, body = api.renew_key(kind, keys["API"]["key"])
            if status == 200:
                renewed.append(kind)
                if kind == "inference":
                    reload_doors(api.workdir)
            else:
                log.error("renewing the %s key failed: %s %s", kind, status, body[:200])
    if renewed:
        if events is not None:
            events.append({"event": "keys renewed", "kinds": renewed, "at": time.time()})
        log.warning("renewed TorchServe keys: %s", ", ".join(renewed))
    return renewed


def reload_doors(workdir: Path) -> None:
    """Tell every registered door that the inference key is new by running the command it registered (a door that
    holds the key reloads; one that reads it per request checks it still runs); a door whose command fails (it
    was stopped) is forgotten."""
    doors = registered_doors(workdir)
    if not doors:
        return
    alive = []
    for door in doors:
        shown = " ".join(door["command"])
        try:
            done = subprocess.run(
                door["command"], cwd=door["cwd"], capture_output=True, text=True, timeout=DOOR_RELOAD_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("door not reloaded (%s): %s", shown, err)
            continue
        if done.returncode == 0:
            alive.append(door)
        else:
            log.warning("door not reloaded (%s): %s", shown, done.stderr.strip()[-300:])
    forget_doors(workdir, alive)


def cap_door_logs(workdir: Path) -> None:
    """Roll the registered doors' logs past instance.LOG_CAP_BYTES: a door logs only what is not a 200, but a
    flood of refused requests is a line each, in nginx files nothing else rotates."""
    for door in registered_doors(workdir):
        if "logs" not in door:
            continue
        try:
            pid = int(Path(door["pid_file"]).read_text())
        except (OSError, ValueError):
            continue  # stopped: reload_doors forgets it
        if rolled := cap_logs(Path(door["logs"]), [pid]):
            log.info("rolled door logs in %s: %s", door["logs"], ", ".join(rolled))
