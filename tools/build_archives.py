"""Build the self-contained .mar archives in model_store/ from the shipped weights.

    python -m tools.build_archives [NAME ...]

Each archive holds its handler, the `digitlab` core package, the `handlers` package, its checkpoint
and its model config, so it runs under any TorchServe (or KServe's TorchServe runtime) without
installing this repository.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from digitlab import catalog
from digitlab.catalog import ServedModel
from digitlab.options import OptionsError, parse_options

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "model_store"
VERSION_TEXT = re.compile(r"[A-Za-z0-9._-]{1,32}")
VERSION = "1.0"  # the shipped archives' model version; --version (make MODEL_VERSION=...) sets another


PACKAGES = ("digitlab", "handlers")  # copied whole into every archive


def build(
    name: str, spec: ServedModel, store: Path = STORE, overrides: dict[str, Any] | None = None, version: str = VERSION
) -> Path:
    """Archive `name` into `store` as model `version` (answers carry it: X-Model-Version); `overrides`
    replace top-level keys of its model config (benchmarks).

    The model config's `handler:` options are checked against the model kind's schema first: a misspelt or
    ill-typed option stops the build (OptionsError names it and the file) before any worker meets it.
    """
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = ROOT / spec.config
        merged = {**spec.model_config(), **(overrides or {})}
        options = parse_options(
            spec.kind, merged.get("handler"), spec.config + (" (with overrides)" if overrides else "")
        )
        if overrides:
            config = Path(tmp) / config.name
            config.write_text(yaml.safe_dump(merged))
        # torch-model-archiver copies a directory's *contents* into the archive root, so the
        # packages are staged one level down to keep `import digitlab` working inside the archive.
        stage = Path(tmp) / "stage"
        for pkg in PACKAGES:
            shutil.copytree(ROOT / pkg, stage / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for extra in options.files():  # the files the options name, beside the checkpoint
            shutil.copy2(ROOT / catalog.WEIGHTS / extra, stage)
        cmd = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name",
            name,
            "--version",
            version,
            "--serialized-file",
            str(ROOT / spec.weights),
            "--handler",
            str(ROOT / spec.handler),
            "--extra-files",
            str(stage),
            "--config-file",
            str(config),
            "--export-path",
            str(store),
            "--force",
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return store / f"{name}.mar"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"archives to build, of {', '.join(catalog.NAMES)} (default: all)")
    p.add_argument("--version", default=VERSION, help="the archives' model version (default %(default)s)")
    args = p.parse_args(argv)
    if not VERSION_TEXT.fullmatch(args.version):
        p.error(f"a version is 1 to 32 characters from A-Z a-z 0-9 . _ -, got {args.version!r}")
    if unknown := set(args.names) - set(catalog.NAMES):
        p.error(f"unknown archive(s) {', '.join(sorted(unknown))}; choose from {', '.join(catalog.NAMES)}")
    for name in args.names or catalog.NAMES:  # one .mar per served model, named after it
        try:
            built = build(name, catalog.model(name), version=args.version)
        except OptionsError as err:
            p.exit(2, f"{p.prog}: {name}: {err}\n")
        print(f"built {built.relative_to(ROOT)} (version {args.version})")


if __name__ == "__main__":
    main()
