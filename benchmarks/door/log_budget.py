"""Bytes of log written per answered request, every log together, at the shipped settings.

    python -m benchmarks.door.log_budget [--seconds 60] [--clients 32]

Starts a TorchServe under its supervisor (the shipped config, its console in console.log as `make serve`
writes it) and a door in front of it (shipped logging; per-client limits off, so that the load is not
refused), then drives `ab -k` at palindromes through the door for `--seconds`. Measures the bytes written to
every log in TorchServe's working directory (its logs/, console.log) and the door's logs/, rolled files
included, and divides by the requests answered. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.shared.ab import Target, ab
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.servers import unlimited_door
from ops import server as ops_server


def sizes(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file()}


def gzip_content(path: Path) -> int:
    """The uncompressed size of a .gz file, from its trailer (ISIZE: the size mod 2^32, plenty for a 10 MB log)."""
    with open(path, "rb") as f:
        f.seek(-4, 2)
        return int.from_bytes(f.read(4), "little")


def bytes_written(before: dict[str, int], after: dict[str, int], since: float) -> dict[str, int]:
    """Bytes written per log, rolled files included: a log rolled meanwhile (log4j2.xml: at 10 MB, into a .gz)
    shrank, and what it held went into a .gz written since `since`. So per log: its growth, plus the content
    of its archives written since then (each of which held what the log had before, and what came after)."""
    written = {}
    for name, size in after.items():
        path = Path(name)
        if name.endswith(".gz"):
            if path.stat().st_mtime >= since:
                active = str(path.with_name(path.name.split(".")[0] + ".log"))
                written[active] = written.get(active, 0) + gzip_content(path)
        elif name.endswith(".log"):
            written[name] = written.get(name, 0) + size - before.get(name, 0)
    return written


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ops_server.serving(Path(tmp) / "ts") as server:
        runtime = Path(tmp) / "door"
        with unlimited_door(server, runtime) as door:
            folders = (server.workdir, runtime / "logs")
            before, began = sizes(*folders), time.time()
            result = ab(Target(f"{door.url}palindrome", door.headers), args.seconds, args.clients)
            written = bytes_written(before, sizes(*folders), began)  # while the rolled files are there
    answered = result.rps * args.seconds
    growth = {Path(name).relative_to(tmp).as_posix(): n for name, n in written.items()}
    print(f"{answered:,.0f} requests answered in {args.seconds:.0f} s ({result.rps:,.0f}/s, {result.failed} failed)")
    per_request = {name: grew / answered for name, grew in sorted(growth.items(), key=lambda kv: -kv[1]) if grew}
    cells = [[name, f"{growth[name]:,}", f"{share:.1f}"] for name, share in per_request.items()]
    cells.append(["**all logs**", f"{sum(growth.values()):,}", f"**{sum(growth.values()) / answered:.1f}**"])
    print(markdown_table(["file", "bytes written", "bytes per request"], cells, "lrr"))
    return per_request


if __name__ == "__main__":
    main()
