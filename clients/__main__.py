"""Command line for the served models. Only this module prints; the library raises.

    python -m clients palindrome 1 2 3 2            # REST
    python -m clients palindrome 1232 --grpc        # gRPC
    python -m clients token                         # the inference key, for curl
"""

from __future__ import annotations

import argparse
import sys

from clients import grpc as grpc_client
from clients import rest
from clients.auth import find_token
from clients.errors import ServerError


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=rest.DEFAULT_URL, help="REST inference address")
    p.add_argument("--target", default=grpc_client.DEFAULT_TARGET, help="gRPC inference address")
    p.add_argument("--grpc", action="store_true", help="call over gRPC instead of REST")
    p.add_argument("--token", help="inference key (default: $TORCHSERVE_TOKEN or .ts/key_file.json)")
    p.add_argument("--timeout", type=float, default=rest.DEFAULT_TIMEOUT, help="seconds per call")


def predict(args: argparse.Namespace, model: str, payload: dict) -> dict:
    if args.grpc:
        return grpc_client.predict(model, payload, target=args.target, token=args.token, timeout=args.timeout)
    return rest.predict(model, payload, url=args.url, token=args.token, timeout=args.timeout)


def cmd_palindrome(args: argparse.Namespace) -> None:
    digits = "".join(args.digits)
    answer = predict(args, args.model, {"digits": digits})
    confidence = answer["probabilities"][answer["digit"]]
    print(f"{digits} -> {answer['digit']}   ({answer['model']}, p={confidence:.4f}, T={answer['length']})")


def cmd_token(args: argparse.Namespace) -> None:
    token = find_token(args.kind)
    if token is None:
        raise ServerError("no key", "no key_file.json found: is the server running (make serve)?")
    print(token)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clients", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    pal = sub.add_parser("palindrome", help="complete a palindrome", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pal.add_argument("digits", nargs="+", help="the first T digits, as '1 2 3 2' or '1232'")
    pal.add_argument("--model", default="palindrome", choices=["palindrome", "palindrome_rnn"])
    add_connection_args(pal)
    pal.set_defaults(run=cmd_palindrome)

    tok = sub.add_parser("token", help="print an API key from the server's key file")
    tok.add_argument("--kind", default="inference", choices=["inference", "management"])
    tok.set_defaults(run=cmd_token)

    args = p.parse_args(argv)
    try:
        args.run(args)
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
