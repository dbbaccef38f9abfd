"""Build the serving image from nothing but Debian's packages and this host's pip: `make image`.

    python -m deploy.image docker       # install docker.io / start dockerd where missing (root, apt)
    python -m deploy.image base         # digitlab-base:bookworm, bootstrapped with debootstrap, unless present
    python -m deploy.image wheelhouse   # build/wheelhouse: every wheel the image installs
    python -m deploy.image build [--variant cpu|cuda] [--tag digitlab:latest]   # all of the above, then the image
    python -m deploy.image door         # digitlab-door:latest, the door's nginx (same base)
    python -m deploy.image prometheus   # digitlab-prometheus:latest, Debian's Prometheus for make up (same base)

No image registry is assumed: the base is Debian bookworm bootstrapped here and imported, and the
image installs its Python packages from a wheelhouse pip made on this host (honouring its pip
configuration: indexes, certificates, local wheels), so the build itself needs no package index.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ops.instance import read_properties, write_properties

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
WHEELHOUSE = BUILD / "wheelhouse"
IMAGE_CONFIG = BUILD / "image" / "config.properties"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOOR_DOCKERFILE = ROOT / "deploy" / "door.Dockerfile"
PROMETHEUS_DOCKERFILE = ROOT / "deploy" / "prometheus.Dockerfile"
IMAGE_PACKAGES = ROOT / "deploy" / "image-requirements.in"
CONFIG_OVERRIDES = ROOT / "deploy" / "config.image.properties"
LOCK = ROOT / "requirements.txt"

IMAGE = "digitlab:latest"
DOOR_IMAGE = "digitlab-door:latest"
PROMETHEUS_IMAGE = "digitlab-prometheus:latest"  # make up's Prometheus; $PROMETHEUS_IMAGE names another (official)
BASE_IMAGE = "digitlab-base:bookworm"
SUITE = "bookworm"  # Python 3.11 and Java 17 in its main archive: what TorchServe 0.12 and our lock need
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DOCKERD_WAIT_S = 60.0


class NoDocker(RuntimeError):
    """No Docker daemon here, and none could be installed or started."""


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NoDocker(f"{', '.join(packages)} missing and this is not a root shell with apt-get: install them")
    subprocess.run(
        ["apt-get", "install", "--yes", "--no-install-recommends", *packages],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def ensure_docker() -> None:
    """A Docker daemon that answers: installs docker.io and starts dockerd when missing and possible."""
    if docker_answers():
        return
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    if os.geteuid() != 0:
        raise NoDocker("no Docker daemon answers and only root can start one: start dockerd")
    BUILD.mkdir(exist_ok=True)
    # No firewall (NAT) rules: build machines and sandboxes often cannot let the daemon write them. Builds use
    # the host's network; compose's bridge network works without them, its published ports through Docker's
    # userland proxy (docs/DEPLOY.md).
    with open(BUILD / "dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd", "--iptables=false"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + DOCKERD_WAIT_S
    while not docker_answers():
        if time.monotonic() > deadline:
            raise NoDocker(f"dockerd did not answer within {DOCKERD_WAIT_S:.0f}s; see {BUILD / 'dockerd.log'}")
        time.sleep(1)


def image_exists(name: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode
        == 0
    )


def debian_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))) -> str:
    """The Debian mirror this host's apt uses (it is reachable from here), else deb.debian.org."""
    for source in sources:
        files = sorted(source.glob("*")) if source.is_dir() else [source] if source.exists() else []
        for f in files:
            if m := re.search(r"(https?://\S+/debian)/?(?=\s)", f.read_text()):
                return m.group(1)
    return DEFAULT_MIRROR


def base_image(name: str = BASE_IMAGE) -> None:
    """Debian bookworm (minbase) from debootstrap, imported as `name`; kept when it already exists."""
    if image_exists(name):
        return
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    rootfs = BUILD / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    mirror = debian_mirror()
    subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror], check=True)
    # Security and point-release updates too, not just the release as it shipped.
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
        f"deb {mirror.removesuffix('/debian')}/debian-security {SUITE}-security main\n"
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", name], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
    if tar.wait() != 0:
        raise RuntimeError("tar of the bootstrapped root failed")
    shutil.rmtree(rootfs)


def wheelhouse() -> None:
    """Every wheel the image installs, resolved against the lock, into build/wheelhouse."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(WHEELHOUSE),
            "--requirement",
            str(IMAGE_PACKAGES),
            "--constraint",
            str(LOCK),
        ],
        check=True,
    )


def image_config() -> dict[str, str]:
    """config.properties with the image's overrides on top (listeners, auth)."""
    return {**read_properties(ROOT / "config.properties"), **read_properties(CONFIG_OVERRIDES)}


def docker_build(dockerfile: Path, tag: str, context: Path, **build_args: str) -> None:
    # The classic builder: Debian's docker.io has no buildx, and these Dockerfiles need nothing newer.
    # Host networking: apt inside the build reaches the mirror without NAT rules.
    args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
    subprocess.run(
        ["docker", "build", "--network", "host", "--file", str(dockerfile), "--tag", tag, *args, str(context)],
        check=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def build(tag: str = IMAGE, variant: str = "cpu", base: str = BASE_IMAGE) -> float:
    """Everything `make image` does; returns the seconds `docker build` took."""
    ensure_docker()
    base_image(base)
    wheelhouse()
    IMAGE_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    write_properties(IMAGE_CONFIG, image_config())
    began = time.monotonic()
    docker_build(DOCKERFILE, tag, ROOT, BASE=base, VARIANT=variant)
    return time.monotonic() - began


def door_context(to: Path = BUILD / "door-context") -> Path:
    """The door image's build context: the try-it page, the runtime (the follower and the door it renders
    with) the stdlib-only key-file reader, error body and log format; nothing else (the wheelhouse stays out)."""
    shutil.rmtree(to, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "web", to / "web", ignore=skip)
    shutil.copytree(ROOT / "ops", to / "ops", ignore=skip)
    (to / "digitlab").mkdir()
    # The door's own refusals are the one error body, its follower logs the one line format.
    for name in ("__init__.py", "keyfiles.py", "errors.py", "jsonlog.py"):
        shutil.copy2(ROOT / "digitlab" / name, to / "digitlab" / name)
    return to


def build_door(tag: str = DOOR_IMAGE, base: str = BASE_IMAGE) -> None:
    """The door's image (nginx and the follower), from door_context()."""
    ensure_docker()
    base_image(base)
    docker_build(DOOR_DOCKERFILE, tag, door_context(), BASE=base)


def build_prometheus(tag: str = PROMETHEUS_IMAGE, base: str = BASE_IMAGE) -> None:
    """Prometheus for make up: Debian's package on the same base. Its config is mounted by compose (deploy/monitoring/),
    so its build context is an empty folder."""
    ensure_docker()
    base_image(base)
    context = BUILD / "prometheus-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    docker_build(PROMETHEUS_DOCKERFILE, tag, context, BASE=base)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["docker", "base", "wheelhouse", "build", "door", "prometheus"])
    p.add_argument(
        "--tag", help=f"the image's name (default {IMAGE}; door: {DOOR_IMAGE}; prometheus: {PROMETHEUS_IMAGE})"
    )
    p.add_argument("--variant", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--base", default=BASE_IMAGE, help="the base image's name (bootstrapped when missing)")
    args = p.parse_args(argv)
    try:
        if args.step == "docker":
            ensure_docker()
        elif args.step == "base":
            ensure_docker()
            base_image(args.base)
        elif args.step == "wheelhouse":
            wheelhouse()
        elif args.step == "door":
            build_door(args.tag or DOOR_IMAGE, args.base)
        elif args.step == "prometheus":
            build_prometheus(args.tag or PROMETHEUS_IMAGE, args.base)
        else:
            tag = args.tag or IMAGE
            print(f"built {tag} ({args.variant}) in {build(tag, args.variant, args.base):.0f}s")
    except NoDocker as err:
        raise SystemExit(f"no Docker: {err}") from err


if __name__ == "__main__":
    main()
