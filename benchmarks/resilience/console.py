"""The Prometheus console during a real run: docs/deploy/console.png (docs/OPERATIONS.md, "The console").

    python -m benchmarks.resilience.console [--seconds 200] [--kill-at 50] [--clients 8] [--out PNG]

Starts `make up REPLICAS=2` (Prometheus beside it) and runs the 2-kill run of benchmarks.resilience.replicas
on it (--clients palindrome clients through the door, one replica killed at --kill-at s and started again
5 s later), while one more client asks for samples and interpolations and, once a second, one request comes
without a key (the door's own 401). Then it waits for Prometheus's next scrapes and has headless Chromium
draw /consoles/digitlab.html into --out. Bounded: it stops by itself; `make down` at the end (--keep: not).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import requests

from benchmarks.resilience import replicas
from deploy import compose, image
from ops import door as ops_door

ROOT = Path(__file__).resolve().parents[2]
WINDOW = "1400,2300"  # the console's tables and its eight graphs, whole
SCRAPES_S = 15.0  # after the load: Prometheus scrapes every 5 s, the recording rules evaluate every 5 s
HEAVY = [
    ("sample", {"n": 16}),
    ("sample", {"n": 4, "digit": 7}),
    ("interpolate", {"start": {"digit": 1}, "end": {"digit": 8}, "steps": 16}),
]


def heavy_and_keyless(url: str, key: str, stop: threading.Event, seen: Counter) -> None:
    """Samples and interpolations with the key, back to back; once a second a palindrome without one."""
    headers = {"Authorization": f"Bearer {key}"}
    last_keyless = 0.0
    with requests.Session() as session:
        while not stop.is_set():
            for model, body in HEAVY:
                try:
                    status = session.post(
                        f"{url}/predictions/{model}", json=body, headers=headers, timeout=30
                    ).status_code
                except requests.RequestException as err:
                    status = type(err).__name__
                seen[f"{model} {status}"] += 1
            if time.monotonic() - last_keyless >= 1.0:
                last_keyless = time.monotonic()
                seen[f"no key {session.post(f'{url}/predictions/palindrome', json={}, timeout=30).status_code}"] += 1


def screenshot(page: str, out: Path) -> None:
    """Headless Chromium's picture of `page`, once its graphs have drawn (a virtual-time budget)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            "--virtual-time-budget=15000",
            f"--screenshot={out.resolve()}",
            page,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=200, help="length of the run")
    p.add_argument("--kill-at", type=float, default=50.0, help="when one replica is killed")
    p.add_argument("--clients", type=int, default=8, help="palindrome clients through the door")
    p.add_argument("--key-file", type=Path, default=ops_door.RUNTIME / ops_door.CLIENT_KEY_FILE)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "deploy" / "console.png")
    p.add_argument("--keep", action="store_true", help="leave the deployment up (default: make down)")
    args = p.parse_args(argv)
    key = replicas.prepare(args.key_file)
    settings = compose.Up()
    run_args = argparse.Namespace(
        host=settings.host,
        port=settings.port,
        grpc_port=settings.grpc_port,
        key_file=args.key_file,
        base_image=image.IMAGE,
        clients=args.clients,
        seconds=args.seconds,
        kill_at=args.kill_at,
    )
    compose.up(2, args.key_file, settings)  # up before the side client starts: the run's own `up` is then a no-op
    stop, seen = threading.Event(), Counter()
    side = threading.Thread(target=heavy_and_keyless, args=(f"http://{settings.host}:{settings.port}", key, stop, seen))
    side.start()
    try:
        result = replicas.run(2, run_args, key, "kill")
        stop.set()
        side.join()
        time.sleep(SCRAPES_S)
        # The graphs over the run alone: the console's time control reads its range from the page's hash
        # (prom_console.js, "#pctc" + JSON; 1 h without one), in seconds, ending now (endTime 0).
        window = {"duration": (int(args.seconds + SCRAPES_S) // 60 + 2) * 60, "endTime": 0}
        page = f"{compose.prometheus_url(settings)}/consoles/digitlab.html#pctc{quote(json.dumps(window))}"
        screenshot(page, args.out)
    finally:
        stop.set()
        if not args.keep:
            compose.compose("down")
    print(replicas.describe(result))
    print(f"palindromes: {result['answered']:,} answered 200, {result['failed']} failed; others: {dict(seen)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
