"""Project hygiene that a fresh clone depends on."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVER_SIDE = {
    "torch",
    "torchvision",
    "torchserve",
    "torch-model-archiver",
    "numpy",
    "scipy",
    "matplotlib",
    "tqdm",
    "locust",
    "fastapi",
    "uvicorn",
    "pyyaml",
}


def pins(requirements: list[str]) -> dict[str, str]:
    """["Name==1.0  # why", ...] -> {"name": "1.0"}, names normalised (PEP 503); every entry is pinned."""
    out = {}
    for line in requirements:
        name, version = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
        out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_every_pinned_dependency_is_in_the_lock_file_at_its_version():
    lock_text = (ROOT / "requirements.txt").read_text()
    lock = pins([line.strip() for line in lock_text.splitlines() if "==" in line and not line.startswith("#")])
    project = PROJECT["project"]
    for requirements in [project["dependencies"], *project["optional-dependencies"].values()]:
        for name, version in pins(requirements).items():
            assert lock.get(name) == version, f"{name}=={version} (lock: {lock.get(name)}): run `make lock`"
    assert "make lock" in lock_text.split("\n\n")[0], "the lock's header says how to regenerate it"


def test_the_client_installs_without_the_server_side():
    project = PROJECT["project"]
    base = pins(project["dependencies"])
    assert not set(base) & SERVER_SIDE, "the client (the base dependencies) must stay torch-free"
    assert pins(project["optional-dependencies"]["client"]) == base
    assert project["scripts"]["digitlab"] == "digitlab.clients.__main__:main"


def test_only_the_digitlab_namespace_is_installed():
    setuptools = PROJECT["tool"]["setuptools"]
    assert all(p == "digitlab" or p.startswith("digitlab.") for p in setuptools["packages"])
    assert setuptools["package-dir"] == {"digitlab.clients": "clients"}


def test_clients_import_each_other_relatively():
    """clients/ is `clients` in the checkout and `digitlab.clients` when installed: no absolute self-imports,
    and from the core only what is torch-free."""
    torch_free_core = {"digitlab.schemas", "digitlab.digits", "digitlab.constants"}
    for path in (ROOT / "clients").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for name in names:
                assert name.split(".")[0] not in {"clients", "handlers", "tools", "training", "torch", "numpy"}, (
                    f"{path.name}: {name}"
                )
                assert not name.startswith("digitlab") or name in torch_free_core, f"{path.name}: {name}"


def test_generated_and_built_files_are_not_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:  # not a git checkout (e.g. an sdist): nothing to check
        return
    assert not [
        f
        for f in tracked
        if f.endswith((".mar", "_pb2.py", "_pb2_grpc.py", ".proto"))
        or f == "key_file.json"
        or f.startswith(".gateway/")
    ]


def test_the_images_supervisor_runs_on_the_files_the_dockerfile_copies(tmp_path):
    """The serving image holds tools/ and a few files of clients/ beside TorchServe's venv, not the
    checkout: the supervisor and the health check must import from exactly those, with the standard
    library only (-S: no site-packages). A clients/ file the Dockerfile forgot broke the image once."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    [line] = [line for line in dockerfile.splitlines() if line.startswith("COPY clients/")]
    app = tmp_path / "app"
    (app / "clients").mkdir(parents=True)
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    for source in line.split()[1:-1]:
        assert f"!{source}" in allowed, f"{source} is copied by the Dockerfile but left out of the build context"
        (app / source).write_bytes((ROOT / source).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "tools"), str(app)], check=True)
    run = subprocess.run(
        [sys.executable, "-S", "-c", "import tools.supervisor, tools.ready"], cwd=app, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
