"""TLS for the clients: which addresses ask for it, which CA they trust, and failures said in a line.

- REST: an `https://` URL is TLS, `http://` plain.
- gRPC: `grpcs://host:port` (or `https://host:port`) is TLS, `host:port` plaintext as before (so is
  `grpc://` or `http://`); `tls=True` asks for TLS on a target without a scheme (`dns:///host:443`, ...).
- The CA that signed the server's certificate: `ca=` (the command's `--ca`), else $DIGITLAB_CA, else, for a
  server on this machine (127.0.0.1, localhost, ::1), the door's own CA `.door/tls/ca.pem` when it exists
  (`make door TLS=1` makes it; looked for in the working directory, then in the checkout this module lives
  in), else the transport's default roots (requests': certifi's bundle or $REQUESTS_CA_BUNDLE; grpcio's:
  its bundled roots or $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).

Verification is never turned off, hostname checking included: a certificate that does not chain to the CA,
or that names another host, fails the call with `ServerError("tls", ...)`, which is not retried.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ServerError

CA_ENV = "DIGITLAB_CA"  # path to a PEM file of CA certificates
DOOR_CA = Path(".door") / "tls" / "ca.pem"  # the door's local CA, relative to a checkout
# Relative to the working directory, then the checkout this module lives in (an installed package has no
# .door/ beside it: harmless). Only for servers on this machine: the door's CA vouches for no one else.
DEFAULT_CA_FILES = (DOOR_CA, Path(__file__).resolve().parent.parent / DOOR_CA)
TLS_SCHEMES = {"https", "grpcs"}
PLAIN_SCHEMES = {"http", "grpc"}
FLAGS = "ca=, --ca or $" + CA_ENV  # where a user gives the CA

__all__ = ["CA_ENV", "DEFAULT_CA_FILES", "find_ca", "grpc_target", "host_of", "is_local", "rest_url"]


def is_local(host: str | None) -> bool:
    """Whether `host` names this machine: localhost or a loopback address."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(address: str) -> str | None:
    """ "host:port", "[::1]:7090" or "https://host:port/..." -> the host; None when there is none."""
    try:
        return urlsplit(address if "//" in address else f"//{address}").hostname
    except ValueError:
        return None


def find_ca(host: str | None, ca: str | Path | None = None) -> Path | None:
    """The CA file to verify `host`'s certificate against, or None for the transport's default roots.

    `ca`, else $DIGITLAB_CA, else (for a server on this machine) the first of `DEFAULT_CA_FILES` that
    exists. A CA that was named (argument or environment) but is not a file raises FileNotFoundError.
    """
    if ca is not None:
        named, source = Path(ca), "ca"
    elif os.environ.get(CA_ENV):
        named, source = Path(os.environ[CA_ENV]), f"${CA_ENV}"
    elif is_local(host):
        return next((path for path in DEFAULT_CA_FILES if path.is_file()), None)
    else:
        return None
    if not named.is_file():
        raise FileNotFoundError(f"{source}: no CA file at {named}")
    return named


def rest_url(url: str) -> tuple[str, bool]:
    """A REST base URL -> (the URL without a trailing slash, whether it is TLS)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in {"http", "https"}:
        raise ValueError(f"{url!r}: a REST address is http://host:port or https://host:port")
    return url.rstrip("/"), scheme == "https"


def grpc_target(target: str, tls: bool | None = None) -> tuple[str, bool]:
    """A gRPC target as given -> (the address for grpcio, whether it is TLS).

    "grpcs://h:p" and "https://h:p" are TLS, "grpc://h:p" and "http://h:p" plaintext; anything else is
    grpcio's own target syntax ("h:p", "dns:///h:p", "unix:path"), plaintext unless `tls` is True.
    """
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in TLS_SCHEMES | PLAIN_SCHEMES:
        address, scheme_tls = rest.rstrip("/"), scheme.lower() in TLS_SCHEMES
        if not address or "/" in address:
            raise ValueError(f"{target!r}: a gRPC address is host:port, grpcs://host:port or grpc://host:port")
        if tls is not None and tls != scheme_tls:
            raise ValueError(f"{target!r} and tls={tls} disagree: the scheme says whether it is TLS")
        return address, scheme_tls
    return target, bool(tls)


def trusted(ca: Path | None) -> str:
    return f"the CA in {ca}" if ca else "the default trusted roots"


def verify_failed(where: str, reason: str, ca: Path | None) -> ServerError:
    """The certificate did not chain to the trusted CA, or named another host."""
    return ServerError(
        "tls",
        f"the certificate of {where} could not be verified against {trusted(ca)} ({reason}): "
        f"give the CA that signed it ({FLAGS})",
    )


def handshake_failed(where: str, reason: str) -> ServerError:
    """No TLS session at all: most often a plain port addressed as a TLS one."""
    return ServerError("tls", f"no TLS handshake with {where} ({reason}): is it a TLS port?")


def grpc_tls_failure(details: str, where: str, ca: Path | None) -> ServerError | None:
    """The one-line error for a TLS failure told in grpcio's `details` (BoringSSL's words); else None."""
    refused = re.search(r"CERTIFICATE_VERIFY_FAILED:\s*([^:]+)", details)
    if refused:
        return verify_failed(where, refused[1].strip(), ca)
    if re.search(r"Hostname Verification Check failed|Peer name \S+ is not in peer certificate", details, re.I):
        return verify_failed(where, f"host name mismatch, the certificate is not valid for {host_of(where)}", ca)
    if "handshake failed" in details.lower():
        short = re.search(r"OPENSSL_internal:([A-Z_]+)", details)
        return handshake_failed(where, short[1] if short else details)
    return None
