"""Bytes of log written per answered request, every log together, at the shipped settings.

    python -m benchmarks.log_budget [--seconds 60] [--clients 32]

Starts a TorchServe under its supervisor (the shipped config, its console in console.log as `make serve`
writes it) and a door in front of it (shipped logging; per-client limits off, so that the load is not
refused), then drives `ab -k` at palindromes through the door for `--seconds`. Measures the growth of every
file in TorchServe's working directory (its logs/, console.log) and the door's logs/, and divides by the
requests answered. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.peers import Target, ab
from ops import door as ops_door
from ops import server as ops_server


def sizes(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ops_server.serving(Path(tmp) / "ts") as server:
        runtime, key_file = Path(tmp) / "door", Path(tmp) / "api_keys"
        key = "log-budget-client-key-000001"
        key_file.write_text(key + "\n")
        port, grpc_port = ops_server.free_ports(2)
        door = ops_door.Door(
            host="127.0.0.1",
            port=port,
            grpc_port=grpc_port,
            replicas=[ops_door.replica(server.endpoints)],
            models=server.models,
            torchserve_key_file=str(server.key_file),
            client_key_file=str(key_file),
            max_body_bytes=65536,
            limits=ops_door.Limits(per_client=False),
        )
        ops_door.start(runtime, door)
        try:
            folders = (server.workdir, runtime / "logs")
            before = sizes(*folders)
            target = Target(f"http://127.0.0.1:{port}/predictions/palindrome", {"Authorization": f"Bearer {key}"})
            result = ab(target, args.seconds, args.clients)
            after = sizes(*folders)
        finally:
            ops_door.stop(runtime)
    answered = result.rps * args.seconds
    growth = {
        Path(name).relative_to(tmp).as_posix(): after[name] - before.get(name, 0)
        for name in after
        if name.endswith((".log", ".gz")) or "/logs/" in name
    }
    print(f"{answered:,.0f} requests answered in {args.seconds:.0f} s ({result.rps:,.0f}/s, {result.failed} failed)")
    print("| file | bytes written | bytes per request |\n|---|---:|---:|")
    per_request = {}
    for name, grew in sorted(growth.items(), key=lambda kv: -kv[1]):
        if grew:
            per_request[name] = grew / answered
            print(f"| {name} | {grew:,} | {grew / answered:.1f} |")
    print(f"| **all logs** | {sum(growth.values()):,} | **{sum(growth.values()) / answered:.1f}** |")
    return per_request


if __name__ == "__main__":
    main()
