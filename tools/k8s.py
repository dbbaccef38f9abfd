"""The Kubernetes side of the front door: its nginx config for the ConfigMap, and the key Secret.

    python -m tools.k8s render    # deploy/k8s/base/door/nginx.conf from gateway/nginx.conf.template
    python -m tools.k8s secret    # a Secret manifest holding the client keys, for `kubectl apply -f -`

The door in the cluster is the same template as `make gateway` and `make up`, pointed at the
digitlab-torchserve Service (deploy/k8s/base/torchserve.yaml), whose ports are the image's.
The keys come from $DIGITLAB_API_KEY or the key file (tools.gateway), never from this repository.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import yaml

from clients.auth import API_KEY_ENV
from tools import gateway
from tools.build_archives import ARCHIVES
from tools.image import image_config

ROOT = Path(__file__).resolve().parent.parent
DOOR_CONFIG = ROOT / "deploy" / "k8s" / "base" / "door" / "nginx.conf"
SERVICE = "digitlab-torchserve"  # the TorchServe Service's name in deploy/k8s/base/torchserve.yaml
SECRET = "digitlab-door-keys"  # the Secret deploy/k8s/base/door.yaml mounts as keys.conf
LISTEN_HOST = "0.0.0.0"  # inside the door's pod; its Service is what clients reach
# render() wants a client key, but only its second output (keys.conf, a Secret) holds keys: the
# ConfigMap's nginx.conf is the same for every key, so it is rendered with this one and no other.
NO_CLIENT_KEY = "configmap-holds-no-client-key"


def service_replica() -> gateway.Replica:
    """The TorchServe Service as the door's one upstream: kube-proxy spreads it over the ready pods."""
    props = image_config()
    port = {key: gateway.host_port(props[key]).rsplit(":", 1)[1] for key in ("inference_address", "ready_address")}
    return gateway.Replica(
        rest=f"{SERVICE}:{port['inference_address']}",
        grpc=f"{SERVICE}:{props['grpc_inference_port']}",
        ready=f"{SERVICE}:{port['ready_address']}",
    )


def render(client_keys: list[str]) -> tuple[str, str]:
    """(nginx.conf, keys.conf) of the door in the cluster; TorchServe there runs without token auth."""
    return gateway.render(
        [service_replica()],
        list(ARCHIVES),
        client_keys,
        upstream_key=None,
        host=LISTEN_HOST,
        max_body_bytes=int(image_config()["max_request_size"]),
        web_root=gateway.CONTAINER_WEB_ROOT,
    )


def door_config() -> str:
    return render([NO_CLIENT_KEY])[0]


def secret_manifest(key_file: Path) -> str:
    keys = gateway.read_client_keys(key_file)
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
    p.add_argument("action", choices=["render", "secret"])
    gateway.add_client_key_file_option(p)
    args = p.parse_args(argv)
    if args.action == "render":
        DOOR_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        DOOR_CONFIG.write_text(door_config())
        print(f"wrote {DOOR_CONFIG.relative_to(ROOT)}")
    else:
        print(secret_manifest(args.key_file), end="")


if __name__ == "__main__":
    main()
