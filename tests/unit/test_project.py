"""Project hygiene that a fresh clone depends on."""

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
    """["Name==1.0  # why", "name[extra]==2.0", ...] -> {"name": "1.0", ...}, names normalised (PEP 503);
    every entry is pinned."""
    out = {}
    for line in requirements:
        name, version = re.match(r"([A-Za-z0-9_.-]+)(?:\[[\w,-]+\])?==(\S+)", line).groups()
        out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


# Extras outside the default install, each with a lock of its own (compiled against the main one).
SEPARATE_LOCKS = {"peers": "requirements-peers.txt"}


def lock_pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    assert "make lock" in text.split("\n\n")[0], f"{name}'s header says how to regenerate it"
    return pins([line.strip() for line in text.splitlines() if "==" in line and not line.startswith("#")])


def test_every_pinned_dependency_is_in_the_lock_file_at_its_version():
    lock = lock_pins("requirements.txt")
    project = PROJECT["project"]
    extras = project["optional-dependencies"]
    assert set(SEPARATE_LOCKS) <= set(extras)
    for extra, requirements in [("", project["dependencies"]), *extras.items()]:
        own = lock_pins(SEPARATE_LOCKS[extra]) if extra in SEPARATE_LOCKS else lock
        for name, version in pins(requirements).items():
            assert own.get(name) == version, f"{name}=={version} (lock: {own.get(name)}): run `make lock`"
    for name in SEPARATE_LOCKS.values():  # compiled against the main lock: never another version of its packages
        assert all(lock.get(package, version) == version for package, version in lock_pins(name).items()), name


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
    torch_free_core = {
        "digitlab.schemas",
        "digitlab.digits",
        "digitlab.constants",
        "digitlab.keyfiles",
        "digitlab.catalog",
        "digitlab.errors",
    }
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
                assert name.split(".")[0] not in {
                    "clients",
                    "handlers",
                    "ops",
                    "tools",
                    "training",
                    "torch",
                    "numpy",
                }, f"{path.name}: {name}"
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
        or f.startswith((".door/", ".gateway/", ".ts/"))
    ]


# The supervisor: the command (`python -m ops.supervisor`) and the rooms it is built from.
SUPERVISOR_MODULES = (
    "ops.supervisor",
    "ops.watch",
    "ops.state",
    "ops.api",
    "ops.workers",
    "ops.renewal",
    "ops.readiness",
    "ops.launcher",
)
# What the runtime's processes all stand on: the instance's facts, the one probe, metrics and JSON logs.
RUNTIME_GROUND = {"ops.instance", "ops.probe", "ops.metrics", "ops.logs"}
# Run by the image's venv Python in /app: which modules it loads, and from which files.
LOADED = """
import json, sys
before = set(sys.modules)
import ops.supervisor, ops.ready
print(json.dumps({name: getattr(sys.modules[name], "__file__", None) for name in set(sys.modules) - before}))
"""


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    """The distributions the serving image installs: deploy/image-requirements.in and everything they require
    (read from this venv's metadata: the same lock), names normalised."""
    lines = (ROOT / "deploy" / "image-requirements.in").read_text().splitlines()
    todo = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    found: set[str] = set()
    while todo:
        name = normalised(re.match(r"[A-Za-z0-9_.-]+", todo.pop()).group())
        if name in found:
            continue
        found.add(name)
        try:
            todo += [r for r in metadata.requires(name) or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            continue
    return found


def test_the_images_supervisor_runs_on_the_files_the_dockerfile_copies(tmp_path):
    """The serving image holds the runtime (ops/) and the core modules it needs beside TorchServe's venv, not
    the checkout: the supervisor and the health check must import the project's modules from exactly the files
    the Dockerfile copies, and anything else from the packages the image installs. A file the Dockerfile forgot
    broke the image once."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copies = [line.split()[1:] for line in dockerfile.splitlines() if re.match(r"COPY (ops|digitlab)/", line)]
    assert copies, "the Dockerfile copies the runtime"
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    app = tmp_path / "app"
    for *sources, target in copies:
        assert target.startswith("/app/"), target
        for source in sources:
            assert f"!{source}" in allowed, f"{source} is copied by the Dockerfile but left out of the build context"
            destination = app / target.removeprefix("/app/")
            destination.mkdir(parents=True, exist_ok=True)
            # COPY dir/ copies the directory's contents; COPY file copies the file into the target directory.
            copied = f"{ROOT / source}/." if source.endswith("/") else str(ROOT / source)
            subprocess.run(["cp", "-r", copied, str(destination)], check=True)
    assert not (app / "clients").exists(), "the serving image needs no client files"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-s", "-c", LOADED], cwd=app, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    loaded = {name: f for name, f in json.loads(run.stdout).items() if f and name.split(".")[0] in PACKAGES}
    # This venv has the checkout installed (editable): a module missing from /app would be found there.
    outside = [f for f in loaded.values() if not Path(f).is_relative_to(app)]
    assert outside == [], "the Dockerfile does not copy these"
    # What those modules import themselves (a package's own optional imports are its business), beyond the
    # standard library and the project, must be installed in the image.
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for f in loaded.values()
        if f.endswith(".py")
        for node in ast.walk(ast.parse(Path(f).read_text()))
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level)
        for alias in node.names
    }
    third_party = imported - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}
    distributions, installed = metadata.packages_distributions(), image_packages()
    missing = [m for m in third_party if not {normalised(d) for d in distributions.get(m, [])} & installed]
    assert missing == [], "imported by the image's supervisor, not installed by deploy/image-requirements.in"


# -- the house plan: who imports whom ------------------------------------------------------------------

GENERATED = ("clients.ts_grpc",)  # stubs made by make stubs: not the project's own code
PACKAGES = ("digitlab", "handlers", "training", "clients", "ops", "tools", "deploy", "benchmarks", "loadtests")
# What each floor may import from the project (itself included). A lower floor never imports a higher one:
# the core nothing, the runtime the core only, the clients the core's torch-free modules only.
MAY_IMPORT = {
    "digitlab": {"digitlab"},
    "handlers": {"digitlab", "handlers"},
    "clients": {"digitlab", "clients"},
    "ops": {"digitlab", "ops"},
    "training": {"digitlab", "training"},
    "tools": {"digitlab", "tools"},
    "deploy": {"digitlab", "ops", "tools", "deploy"},
    "loadtests": {"digitlab", "clients", "loadtests"},
    "benchmarks": set(PACKAGES),
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """{"ops.door": path, "ops": path to ops/__init__.py, ...} for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "ts_grpc" in path.parts:  # generated stubs
                continue
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def project_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its text (inside functions too: a lazy import
    is an import). `from pkg import name` counts as importing pkg.name when that is a module."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith(GENERATED):
                    continue
                while target and target not in modules:  # a.b.c (a function or class) -> a.b
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle_through_a_lazy_import(tmp_path):
    """The check below can fail: a lazy import inside a function closing a loop of three is found."""
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "__init__.py").write_text("")
    (tmp_path / "ops" / "a.py").write_text("from ops import b\n")
    (tmp_path / "ops" / "b.py").write_text("from ops.c import thing\n")
    (tmp_path / "ops" / "c.py").write_text("def thing():\n    from ops import a\n")
    (tmp_path / "ops" / "d.py").write_text("from . import a\n")
    assert circles(project_imports(tmp_path)) == [["ops.a", "ops.b", "ops.c"]]


def test_no_module_imports_itself_back_through_others():
    assert circles(project_imports()) == []


def test_lower_floors_never_import_higher_ones():
    wrong = [
        f"{module} imports {target}"
        for module, targets in project_imports().items()
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    ]
    assert wrong == []


def test_the_supervisor_knows_no_door_and_no_server():
    """The supervisor reloads a door by the command the door registered; it imports the ground only."""
    graph = project_imports()
    # The supervisor is the command (ops.supervisor) and its rooms; they stand on the ground and the catalog.
    supervisor = set(SUPERVISOR_MODULES)
    ground = RUNTIME_GROUND | {"digitlab.keyfiles", "digitlab.catalog"}
    for module in supervisor:
        assert graph[module] <= ground | supervisor, (module, graph[module] - ground - supervisor)
    # The door (its face ops.door and its rooms ops.door_*) stands on the same ground, and no room imports the face.
    door = {module for module in graph if module == "ops.door" or module.startswith("ops.door_")}
    assert {"ops.door_settings", "ops.door_keys", "ops.door_render", "ops.door_nginx"} <= door
    for module in door:
        assert graph[module] <= {"ops", *RUNTIME_GROUND, "digitlab.keyfiles", "digitlab.errors", *door}, module
        assert module == "ops.door" or "ops.door" not in graph[module], module


MAX_MODULE_LINES = 450  # a module longer than this does several jobs: cut it along them


def test_no_product_module_outgrows_one_job():
    product = ("digitlab", "handlers", "ops", "clients", "tools", "deploy", "training", "loadtests")
    long = {
        str(path.relative_to(ROOT)): n
        for module, path in project_modules().items()
        if module.split(".")[0] in product and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long
