"""The door's TLS: its certificate and key, the user's or made here by a local CA, and nginx's TLS settings.

`make door TLS=1` (`python -m ops.door start --tls`): with $DIGITLAB_TLS_CERT and $DIGITLAB_TLS_KEY the door
serves the user's certificate (PEM, the chain after the certificate) and key; without them it makes, on first
start, a local CA and a server certificate signed by it (the `openssl` command), and keeps them in its runtime
directory (`.door/tls/`):

- `ca.pem` (the CA's certificate: what clients trust; clients/tls.py finds it for local hosts), `ca-key.pem`;
- `cert.pem` and `key.pem`, the server's, for localhost, 127.0.0.1, ::1, this host's name and the names in
  $DIGITLAB_TLS_NAMES (comma-separated host names or addresses), and `server.pem`, both in one file, which nginx
  reads at every new TLS connection: a new certificate is served from the next handshake on, without a reload;
- private keys mode 0600. The CA is a CA (basicConstraints CA:TRUE, keyUsage keyCertSign), valid 10 years; the
  server certificate is valid 397 days (the most browsers accept), and is made anew when it has less than
  RENEW_BEFORE_DAYS left or does not name every name asked for (then `make door-reload` serves it).

The keys are ECDSA P-256: the fastest handshakes of what every client supports. A user's certificate replaces the
local files: the door removes them, so that no client goes on trusting a stale `.door/tls/ca.pem`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CERT_ENV, KEY_ENV, NAMES_ENV = "DIGITLAB_TLS_CERT", "DIGITLAB_TLS_KEY", "DIGITLAB_TLS_NAMES"
TLS_DIR = "tls"  # under the door's runtime directory
CA_CERT, CA_KEY, CERT, KEY = "ca.pem", "ca-key.pem", "cert.pem", "key.pem"
SERVER = "server.pem"  # the server's key and certificate in one file, replaced whole: what nginx reads
LOCAL_FILES = (CA_CERT, CA_KEY, CERT, KEY, SERVER, "ca.srl")
CA_DAYS, CERT_DAYS, RENEW_BEFORE_DAYS = 3650, 397, 30
CA_SUBJECT = "/O=digitlab/CN=digitlab door local CA"
# RFC 7919's ffdhe2048 group, for the DHE ciphers of Mozilla's intermediate profile (used with RSA certificates
# only): a fixed, public group, shipped beside this module (the door's image copies ops/).
DHPARAM = Path(__file__).resolve().parent / "ffdhe2048.pem"
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}$)(\*\.)?({LABEL}\.)*{LABEL}")
OPENSSL_TIMEOUT_S = 60


@dataclass(frozen=True)
class TlsFiles:
    """What nginx serves: the certificate (with its chain) and its key, as nginx sees their paths (one file may
    hold both); the local CA's certificate, which clients trust (None: the user's certificate, whose CA the user
    knows); and whether nginx reads them at every new TLS connection (`live`: a certificate replaced on disk is
    served from the next handshake on, no reload: the door's own, whose key and certificate are replaced in one
    rename, and Kubernetes' Secret, whose files the kubelet swaps at once) or at its start and reloads."""

    cert: str
    key: str
    ca: str | None = None
    live: bool = False


def openssl(*args: str) -> str:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError(
            f"openssl not found: install it (Debian/Ubuntu: apt-get install openssl) or give ${CERT_ENV} and ${KEY_ENV}"
        )
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def checked_name(name: str) -> str:
    """A host name or an address a certificate may name; anything else (a space, a comma, a URL) is refused."""
    name = name.strip()
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if not HOSTNAME.fullmatch(name):
        raise ValueError(f"{NAMES_ENV}: {name!r} is neither a host name nor an address")
    return name.lower()


def server_names(extra: Iterable[str] = (), environ: Mapping[str, str] = os.environ) -> list[str]:
    """Who the server certificate is for: localhost, 127.0.0.1, ::1, this host's name, `extra`, $DIGITLAB_TLS_NAMES."""
    from_env = [n for n in environ.get(NAMES_ENV, "").split(",") if n.strip()]
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra, *from_env]
    return list(dict.fromkeys(checked_name(n) for n in names))


def subject_alt_names(names: Iterable[str]) -> str:
    """ "DNS:localhost,IP:127.0.0.1,...": an address is an IP entry, a name a DNS entry."""
    entries = []
    for name in names:
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def private(path: Path) -> None:
    path.chmod(0o600)


def make_ca(folder: Path) -> None:
    """A local CA: a self-signed certificate that may sign others (CA:TRUE, keyCertSign), and its key (0600)."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(folder / CA_KEY), "-out", str(folder / CA_CERT), "-days", str(CA_DAYS), "-subj", CA_SUBJECT,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    private(folder / CA_KEY)


def issue_server_certificate(folder: Path, names: list[str]) -> None:
    """A new server key and certificate for `names`, signed by the CA in `folder` (the files are replaced whole:
    nginx reads them at its next reload)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        work = Path(tmp)
        extensions = work / "server.ext"
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
            f"subjectAltName={subject_alt_names(names)}\n"
        )
        openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(work / KEY), "-out", str(work / "server.csr"), "-subj", f"/O=digitlab/CN={names[0]}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(work / "server.csr"), "-CA", str(folder / CA_CERT),
            "-CAkey", str(folder / CA_KEY), "-set_serial", str(int.from_bytes(os.urandom(16), "big") >> 1),
            "-days", str(CERT_DAYS), "-sha256", "-extfile", str(extensions), "-out", str(work / CERT),
        )  # fmt: skip
        private(work / KEY)
        server = work / SERVER
        server.write_bytes((work / KEY).read_bytes() + (work / CERT).read_bytes())
        private(server)
        (work / KEY).replace(folder / KEY)
        (work / CERT).replace(folder / CERT)
        # Last, and in one rename: nginx reads this file at each new connection, and never sees a key of one
        # certificate with another.
        server.replace(folder / SERVER)


def certificate_names(cert: Path) -> set[str]:
    """The names (DNS and IP entries) of a certificate's subjectAltName."""
    text = openssl("x509", "-in", str(cert), "-noout", "-ext", "subjectAltName")
    names = set()
    for entry in re.findall(r"(?:DNS|IP Address):([^,\s]+)", text):
        try:
            names.add(str(ipaddress.ip_address(entry)))
        except ValueError:
            names.add(entry.lower())
    return names


def still_good(folder: Path, names: list[str]) -> bool:
    """Whether the server certificate in `folder` exists, is signed by the CA there, names every one of `names` and
    has more than RENEW_BEFORE_DAYS left."""
    cert = folder / CERT
    if not (cert.is_file() and (folder / KEY).is_file() and (folder / SERVER).is_file()):
        return False
    try:
        openssl("verify", "-CAfile", str(folder / CA_CERT), str(cert))
        openssl("x509", "-in", str(cert), "-noout", "-checkend", str(RENEW_BEFORE_DAYS * 86400))
        return set(names) <= certificate_names(cert)
    except RuntimeError:
        return False


def local_certificates(folder: Path, names: list[str]) -> tuple[TlsFiles, bool]:
    """The local CA and a server certificate for `names` in `folder`, made when missing (or the server's anew when
    it would not do: expiring, another CA, a name missing); -> (the files, whether anything was made)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    made = False
    if not ((folder / CA_CERT).is_file() and (folder / CA_KEY).is_file()):
        make_ca(folder)
        made = True
    if made or not still_good(folder, names):
        issue_server_certificate(folder, names)
        made = True
    server = str(folder / SERVER)
    return TlsFiles(cert=server, key=server, ca=str(folder / CA_CERT), live=True), made


def remove_local_certificates(folder: Path) -> None:
    """The local CA and certificate, gone (a user's certificate is served instead): no stale ca.pem stays."""
    for name in LOCAL_FILES:
        (folder / name).unlink(missing_ok=True)


def user_certificates(environ: Mapping[str, str] = os.environ) -> TlsFiles | None:
    """$DIGITLAB_TLS_CERT and $DIGITLAB_TLS_KEY, when given (both, or neither), as absolute paths of files."""
    cert, key = environ.get(CERT_ENV), environ.get(KEY_ENV)
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError(f"${CERT_ENV} and ${KEY_ENV} go together: the certificate and its private key")
    paths = [Path(cert).expanduser().resolve(), Path(key).expanduser().resolve()]
    for path, variable in zip(paths, (CERT_ENV, KEY_ENV), strict=True):
        if not path.is_file():
            raise ValueError(f"${variable}: no file at {path}")
    return TlsFiles(cert=str(paths[0]), key=str(paths[1]))


def door_certificates(folder: Path, extra_names: Iterable[str] = ()) -> tuple[TlsFiles, bool]:
    """The certificate a TLS door serves: the user's ($DIGITLAB_TLS_CERT/KEY; the local files in `folder` are
    removed), else the local CA's, made when needed; -> (the files, whether local ones were made)."""
    given = user_certificates()
    if given is not None:
        remove_local_certificates(folder)
        return given, False
    return local_certificates(folder, server_names(extra_names))
