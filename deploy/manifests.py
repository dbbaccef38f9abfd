"""The Kubernetes side of the door: its nginx config for the ConfigMap, and the key Secret.

    python -m deploy.manifests render          # deploy/k8s/base/door/nginx.conf from ops/nginx.conf.template
    python -m deploy.manifests secret          # a Secret manifest holding the client keys, for `kubectl apply -f -`
    python -m deploy.manifests render --tls    # the same door over TLS, from the TLS Secret below
    python -m deploy.manifests tls-secret      # that Secret (kubernetes.io/tls), for `kubectl apply -f -`

The door in the cluster is the same template as `make door` and `make up`, pointed at the
digitlab-torchserve Service (deploy/k8s/base/torchserve.yaml), whose ports are the image's.
The keys come from $DIGITLAB_API_KEY or the key file (ops.door), never from this repository. The per-client
limits are the door's, changed by the same environment variables as `make door` (DIGITLAB_LIMIT_<NAME>,
DIGITLAB_LIMITS=off) when rendering; the committed ConfigMap holds the shipped ones.

TLS: `render --tls` makes both of the door's ports speak TLS with the certificate of the Secret digitlab-door-tls
(type kubernetes.io/tls: tls.crt, tls.key), which deploy/k8s/base/door.yaml mounts at /door/tls (optional: a
plain door runs without it). `tls-secret` writes that Secret from $DIGITLAB_TLS_CERT and $DIGITLAB_TLS_KEY, else
from a local CA it makes in build/k8s/tls/ (ca.pem: what clients trust) for the door Service's names
(digitlab-door, .<namespace>.svc, .svc.cluster.local) and $DIGITLAB_TLS_NAMES; or create it yourself:
`kubectl create secret tls digitlab-door-tls --cert=... --key=...`. The committed ConfigMap is the plain door.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import yaml

from deploy.image import image_config
from digitlab import catalog
from digitlab.keyfiles import API_KEY_ENV
from ops import door, door_tls

ROOT = Path(__file__).resolve().parent.parent
DOOR_CONFIG = ROOT / "deploy" / "k8s" / "base" / "door" / "nginx.conf"
SERVICE = "digitlab-torchserve"  # the TorchServe Service's name in deploy/k8s/base/torchserve.yaml
SECRET = "digitlab-door-keys"  # the Secret deploy/k8s/base/door.yaml mounts as keys.conf
TLS_SECRET = "digitlab-door-tls"  # the TLS Secret it mounts at /door/tls (optional)
TLS_MOUNT = door.CONTAINER_PREFIX / door.TLS_DIR
# Read at every new TLS connection: the kubelet swaps a renewed Secret's files at once, and the door serves the new
# certificate from the next handshake on, no restart.
TLS_FILES = door.TlsFiles(cert=str(TLS_MOUNT / "tls.crt"), key=str(TLS_MOUNT / "tls.key"), live=True)
LOCAL_TLS = ROOT / "build" / "k8s" / "tls"  # tls-secret's local CA, when no certificate is given
DOOR_SERVICE = "digitlab-door"
LISTEN_HOST = "0.0.0.0"  # inside the door's pod; its Service is what clients reach
# render() wants a client key, but only its second output (keys.conf, a Secret) holds keys: the
# ConfigMap's nginx.conf is the same for every key, so it is rendered with this one and no other.
NO_CLIENT_KEY = "configmap-holds-no-client-key"
# A pod sees every core of its node: nginx's `auto` would start one worker per node core, each with its
# connections preallocated, against the pod's 256 Mi. Two workers, as on the 2-core machine the door was
# measured on (docs/OPERATIONS.md, "Capacity"); scale the Deployment's replicas for more.
POD_CAPACITY = door.Capacity(workers="2")


def service_replica() -> door.Replica:
    """The TorchServe Service as the door's one upstream: kube-proxy spreads it over the ready pods."""
    props = image_config()
    port = {key: door.host_port(props[key]).rsplit(":", 1)[1] for key in ("inference_address", "ready_address")}
    return door.Replica(
        rest=f"{SERVICE}:{port['inference_address']}",
        grpc=f"{SERVICE}:{props['grpc_inference_port']}",
        ready=f"{SERVICE}:{port['ready_address']}",
    )


def render(client_keys: list[str], tls: bool = False) -> tuple[str, str]:
    """(nginx.conf, keys.conf) of the door in the cluster; TorchServe there runs without token auth. `tls`: both
    ports over TLS with the TLS Secret's certificate."""
    return door.render(
        door.DoorSettings(
            replicas=(service_replica(),),
            models=catalog.NAMES,
            client_keys=tuple(client_keys),
            upstream_key_file=None,
            host=LISTEN_HOST,
            max_body_bytes=int(image_config()["max_request_size"]),
            limits=door.Limits.from_env(),
            web_root=door.CONTAINER_WEB_ROOT,
            # The image's prefix (an emptyDir): the layers' sockets and /health's cache; Debian's stream module.
            shared_folder=door.CONTAINER_PREFIX,
            stream_module=door.DEBIAN_STREAM_MODULE,
            capacity=POD_CAPACITY,
            tls=TLS_FILES if tls else None,
            dhparam=str(door.CONTAINER_DHPARAM),
            # The pod's `telemetry` container counts every answer and prints the log lines on its stdout: nginx
            # writes no log file (kubectl logs shows them; nothing grows on a volume).
            telemetry_socket=door.CONTAINER_PREFIX / door.TELEMETRY_SOCKET,
            stdout_logs=True,
        )
    )


def door_config(tls: bool = False) -> str:
    return render([NO_CLIENT_KEY], tls)[0]


def tls_secret_manifest(namespace: str = "default") -> str:
    """The door's TLS Secret: $DIGITLAB_TLS_CERT and $DIGITLAB_TLS_KEY, else a certificate from a local CA in
    LOCAL_TLS for the door Service's names in `namespace` (ca.pem there is what clients trust)."""
    files = door_tls.user_certificates()
    if files is None:
        names = [DOOR_SERVICE, f"{DOOR_SERVICE}.{namespace}.svc", f"{DOOR_SERVICE}.{namespace}.svc.cluster.local"]
        files, _ = door_tls.local_certificates(LOCAL_TLS, door_tls.server_names(names))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TLS_SECRET},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(Path(files.cert).read_bytes()).decode(),
            "tls.key": base64.b64encode(Path(files.key).read_bytes()).decode(),
        },
    }
    return yaml.safe_dump(secret, sort_keys=False)


def secret_manifest(key_file: Path) -> str:
    keys = door.read_client_keys(key_file)
    if not keys:
        raise SystemExit(f"no client key: set ${API_KEY_ENV} or write one per line to {key_file}")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "type": "Opaque",
        "data": {"keys.conf": base64.b64encode(render(keys)[1].encode()).decode()},
    }
    return yaml.safe_dump(secret, sort_keys=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["render", "secret", "tls-secret"])
    door.add_client_key_file_option(p)
    p.add_argument("--tls", action="store_true", help=f"render: the door over TLS, from the Secret {TLS_SECRET}")
    p.add_argument("--namespace", default="default", help="tls-secret: the namespace the door's Service is in")
    args = p.parse_args(argv)
    if args.action == "render":
        DOOR_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        DOOR_CONFIG.write_text(door_config(args.tls))
        note = f" (TLS: create the Secret {TLS_SECRET}: tls-secret)" if args.tls else ""
        print(f"wrote {DOOR_CONFIG.relative_to(ROOT)}{note}")
    elif args.action == "tls-secret":
        print(tls_secret_manifest(args.namespace), end="")
    else:
        print(secret_manifest(args.key_file), end="")


if __name__ == "__main__":
    main()
