"""Exit 0 when the readiness endpoint of a TorchServe configuration answers 200, else 1.

    python -m ops.ready [--config /app/config.properties]

The image's HEALTHCHECK and the compose replicas' healthchecks run it inside the container, so each
asks the address its own server was configured with (compose replicas differ only in ports).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops import probe
from ops.instance import DEFAULT_CONFIG, DEFAULT_READY_ADDRESS, READY_PATH, read_properties

PROBE_TIMEOUT_S = 4.0


def ready_url(props: dict[str, str]) -> str:
    """The readiness URL to ask from the same machine: a wildcard listener is reached on loopback."""
    return props.get("ready_address", DEFAULT_READY_ADDRESS).replace("//0.0.0.0:", "//127.0.0.1:") + READY_PATH


def is_ready(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """200 within `timeout`: ready; 503, nothing listening or silence: not."""
    return probe.answers_ok(url, timeout)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = p.parse_args(argv)
    sys.exit(0 if is_ready(ready_url(read_properties(args.config))) else 1)


if __name__ == "__main__":
    main()
