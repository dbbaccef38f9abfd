"""The Kubernetes side of the door: its nginx config for the ConfigMap, and the key Secret.

    python -m deploy.manifests render    # deploy/k8s/base/door/nginx.conf from ops/nginx.conf.template
    python -m deploy.manifests secret    # a Secret manifest holding the client keys, for `kubectl apply -f -`

The door in the cluster is the same template as `make door` and `make up`, pointed at the
digitlab-torchserve Service (deploy/k8s/base/torchserve.yaml), whose ports are the image's.
The keys come from $DIGITLAB_API_KEY or the key file (ops.door), never from this repository. The per-client
limits are the door's, changed by the same environment variables as `make door` (DIGITLAB_LIMIT_<NAME>,
DIGITLAB_LIMITS=off) when rendering; the committed ConfigMap holds the shipped ones.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import yaml

from deploy.image import image_config
from digitlab import catalog
from digitlab.keyfiles import API_KEY_ENV
from ops import door

ROOT = Path(__file__).resolve().parent.parent
DOOR_CONFIG = ROOT / "deploy" / "k8s" / "base" / "door" / "nginx.conf"
SERVICE = "digitlab-torchserve"  # the TorchServe Service's name in deploy/k8s/base/torchserve.yaml
SECRET = "digitlab-door-keys"  # the Secret deploy/k8s/base/door.yaml mounts as keys.conf
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


def render(client_keys: list[str]) -> tuple[str, str]:
    """(nginx.conf, keys.conf) of the door in the cluster; TorchServe there runs without token auth."""
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
        )
    )


def door_config() -> str:
    return render([NO_CLIENT_KEY])[0]


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
    p.add_argument("action", choices=["render", "secret"])
    door.add_client_key_file_option(p)
    args = p.parse_args(argv)
    if args.action == "render":
        DOOR_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        DOOR_CONFIG.write_text(door_config())
        print(f"wrote {DOOR_CONFIG.relative_to(ROOT)}")
    else:
        print(secret_manifest(args.key_file), end="")


if __name__ == "__main__":
    main()
