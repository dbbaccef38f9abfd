"""Command line for the served models (`digitlab` when installed, `python -m clients` in the repository).
Only this module prints; the library raises.

    digitlab palindrome 1 2 3 2                      # REST
    digitlab palindrome 1232 --grpc                  # gRPC
    digitlab sample --n 16 --seed 7 -o grid.png
    digitlab sample --n 16 --digit 3 --grpc          # only images the classifier reads as a 3
    digitlab interpolate --from digit:9 --to digit:3 --steps 24 --grpc -o nine_to_three.gif
    digitlab token                                   # the inference key, for curl

Through the door (make door): --url http://127.0.0.1:8090 --target 127.0.0.1:7090 with the
door's key from --key-file .door/api_keys or $DIGITLAB_API_KEY. Over TLS (make door TLS=1):
--url https://127.0.0.1:8090 --target grpcs://127.0.0.1:7090, verified against --ca PATH or $DIGITLAB_CA
(for a door on this machine, .door/tls/ca.pem is found by itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from digitlab.catalog import MODELS

from .auth import find_api_key, find_token
from .base import DEFAULT_TARGET, DEFAULT_TIMEOUT, DEFAULT_URL, Client
from .errors import ServerError
from .images import frames_file
from .tls import CA_ENV, DOOR_CA


class UsageError(Exception):
    """Options that cannot make a client (a CA for a plain address, a CA file that is not there)."""


def ca_file(value: str) -> Path:
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"no CA file at {value}")
    return Path(value)


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help="REST inference address (https://... for TLS)")
    p.add_argument(
        "--target", default=DEFAULT_TARGET, help="gRPC inference address: host:port, or grpcs://host:port for TLS"
    )
    p.add_argument("--grpc", action="store_true", help="call over gRPC instead of REST")
    p.add_argument(
        "--token",
        help="key to send (default: the door's key from --key-file or $DIGITLAB_API_KEY, "
        "else TorchServe's from $TORCHSERVE_TOKEN or .ts/key_file.json)",
    )
    p.add_argument(
        "--key-file",
        type=Path,
        help="a key file: the door's (.door/api_keys, newest line) "
        "or TorchServe's key_file.json; re-read when a key is refused",
    )
    p.add_argument(
        "--ca",
        type=ca_file,
        metavar="PATH",
        help=f"CA certificate(s), PEM, to verify an https:// or grpcs:// server against (default: ${CA_ENV}, "
        f"else {DOOR_CA} for a server on this machine, else the default trusted roots)",
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per call")


def add_truncation_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--truncation",
        type=float,
        metavar="PSI",
        help="0 < PSI <= 1: latents pulled toward the mean, cleaner and less varied digits (default: off)",
    )


def client(args: argparse.Namespace) -> Client:
    """The client the options describe. Key: --token, else --key-file (re-read after a refusal), else
    $DIGITLAB_API_KEY, else TorchServe's ($TORCHSERVE_TOKEN, $TORCHSERVE_KEY_FILE, .ts/key_file.json).
    TLS: the address's scheme (https://, grpcs://); the CA: --ca, else the SDK's search (clients/tls.py)."""
    token = args.token or (None if args.key_file else find_api_key())
    options = {"token": token, "key_file": args.key_file, "timeout": args.timeout, "ca": args.ca}
    try:
        if args.grpc:
            from .grpc import GrpcClient

            return GrpcClient(args.target, **options)
        from .rest import RestClient

        return RestClient(args.url, **options)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None


class Progress:
    """A one-line frame counter on stderr, for terminals only."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.count = total, 0
        self.on = not quiet and sys.stderr.isatty()

    def update(self, digit: int) -> None:
        self.count += 1
        if self.on:
            print(f"\rframes {self.count}/{self.total} (digit {digit})", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.on:
            print(file=sys.stderr)


def point(spec: str) -> dict:
    """ "digit:9", "digit:9:SEED" or "id:SEED:INDEX" -> a request point."""
    kind, *numbers = spec.split(":")
    try:
        values = [int(n) for n in numbers]
        if kind == "digit" and len(values) in (1, 2):
            return {"digit": values[0], **({"seed": values[1]} if len(values) == 2 else {})}
        if kind == "id" and len(values) == 2:
            return {"seed": values[0], "index": values[1]}
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{spec!r}: use digit:D, digit:D:SEED or id:SEED:INDEX")


def cmd_palindrome(args: argparse.Namespace) -> None:
    digits = "".join(args.digits)
    with client(args) as c:
        answer = c.palindrome(digits, model=args.model)
    confidence = answer.probabilities[answer.digit]
    print(f"{digits} -> {answer.digit}   ({answer.model}, p={confidence:.4f}, T={answer.length})")


def cmd_sample(args: argparse.Namespace) -> None:
    with client(args) as c:
        if args.output:
            args.output.write_bytes(c.sample_grid(args.n, args.seed, args.digit, args.truncation))
            print(f"wrote {args.n} samples as a grid to {args.output}")
            return
        answer = c.sample(args.n, args.seed, args.digit, truncation=args.truncation)
    ids = ", ".join(f"{im.id.seed}:{im.id.index}" for im in answer.images if im.id)
    what = "samples" if args.digit is None else f"samples read as {args.digit}"
    print(f"{len(answer.images)} {what} from seed {answer.seed} (ids {ids}); use -o FILE.png to save a grid")


def cmd_interpolate(args: argparse.Namespace) -> None:
    frames, progress = [], Progress(args.steps, args.quiet)
    try:
        with client(args) as c:
            # Frames as they are rendered.
            for frame in c.interpolate_stream(args.start, args.end, args.steps, args.method, args.truncation):
                frames.append(frame)
                progress.update(frame.digit)
    finally:
        progress.close()
    print("digits read along the path: " + " ".join(str(f.digit) for f in frames))
    if args.output:
        args.output.write_bytes(frames_file(frames, gif=args.output.suffix.lower() == ".gif"))
        print(f"wrote {len(frames)} frames to {args.output}")


def cmd_token(args: argparse.Namespace) -> None:
    token = find_token(args.kind)
    if token is None:
        raise ServerError("no key", "no key_file.json found: is the server running (make serve)?")
    print(token)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digitlab" if __package__ == "digitlab.clients" else "python -m clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter

    pal = sub.add_parser("palindrome", help="complete a palindrome", formatter_class=defaults)
    pal.add_argument("digits", nargs="+", help="the first T digits, as '1 2 3 2' or '1232'")
    pal.add_argument("--model", default="palindrome", choices=[m.name for m in MODELS if m.kind == "palindrome"])
    pal.set_defaults(run=cmd_palindrome)

    smp = sub.add_parser("sample", help="random digits from the GAN", formatter_class=defaults)
    smp.add_argument("--n", type=int, default=16, help="how many images")
    smp.add_argument("--seed", type=int, help="same seed, same images (default: the server picks one)")
    smp.add_argument(
        "--digit",
        type=int,
        help="only images the server's classifier reads as this digit, 0-9 "
        "(a bounded search: 422 when the seed has too few)",
    )
    smp.add_argument("-o", "--output", type=Path, help="write the images as one PNG grid")
    add_truncation_arg(smp)
    smp.set_defaults(run=cmd_sample)

    itp = sub.add_parser("interpolate", help="frames between two digits, streamed", formatter_class=defaults)
    itp.add_argument("--from", dest="start", type=point, default="digit:9", help="digit:D[:SEED] or id:SEED:INDEX")
    itp.add_argument("--to", dest="end", type=point, default="digit:3", help="digit:D[:SEED] or id:SEED:INDEX")
    itp.add_argument("--steps", type=int, default=24)
    itp.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
    itp.add_argument("-o", "--output", type=Path, help="write a .gif animation or a .png strip")
    itp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_truncation_arg(itp)
    itp.set_defaults(run=cmd_interpolate)

    for command in (pal, smp, itp):
        add_connection_args(command)

    tok = sub.add_parser("token", help="print an API key from the server's key file")
    tok.add_argument("--kind", default="inference", choices=["inference", "management"])
    tok.set_defaults(run=cmd_token)
    return p


def main(argv: list[str] | None = None) -> int:
    # grpcio's own log lines (a refused TLS handshake is logged at INFO) would break the one-line errors.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
