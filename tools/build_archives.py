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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "model_store"
VERSION_TEXT = re.compile(r"[A-Za-z0-9._-]{1,32}")
VERSION = "1.0"  # the shipped archives' model version; --version (make MODEL_VERSION=...) sets another


@dataclass(frozen=True)
class Archive:
    weights: str
    handler: str
    config: str
    extra: tuple[str, ...] = ()  # more files for the archive root (e.g. a second checkpoint)

    @property
    def kind(self) -> str:
        """The served model kind (digitlab.serving.SERVICES): one handler file per kind, named after it."""
        return Path(self.handler).stem.removesuffix("_handler")

    def model_config(self) -> dict[str, Any]:
        """The shipped model config (model_config/*.yaml)."""
        return yaml.safe_load((ROOT / self.config).read_text())


ARCHIVES = {
    "palindrome": Archive(
        "weights/palindrome_lstm.pt", "handlers/palindrome_handler.py", "model_config/palindrome.yaml"
    ),
    "palindrome_rnn": Archive(
        "weights/palindrome_rnn.pt", "handlers/palindrome_handler.py", "model_config/palindrome.yaml"
    ),
    "sample": Archive(
        "weights/generator.pt",
        "handlers/sample_handler.py",
        "model_config/sample.yaml",
        extra=("weights/classifier.pt",),
    ),
    "interpolate": Archive(
        "weights/generator.pt",
        "handlers/interpolate_handler.py",
        "model_config/interpolate.yaml",
        extra=("weights/classifier.pt",),
    ),
}
PACKAGES = ("digitlab", "handlers")  # copied whole into every archive


def build(
    name: str, spec: Archive, store: Path = STORE, overrides: dict[str, Any] | None = None, version: str = VERSION
) -> Path:
    """Archive `name` into `store` as model `version` (answers carry it: X-Model-Version); `overrides`
    replace top-level keys of its model config (benchmarks)."""
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = ROOT / spec.config
        if overrides:
            merged = {**spec.model_config(), **overrides}
            config = Path(tmp) / config.name
            config.write_text(yaml.safe_dump(merged))
        # torch-model-archiver copies a directory's *contents* into the archive root, so the
        # packages are staged one level down to keep `import digitlab` working inside the archive.
        stage = Path(tmp) / "stage"
        for pkg in PACKAGES:
            shutil.copytree(ROOT / pkg, stage / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for extra in spec.extra:
            shutil.copy2(ROOT / extra, stage)
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
    p.add_argument("names", nargs="*", help=f"archives to build, of {', '.join(ARCHIVES)} (default: all)")
    p.add_argument("--version", default=VERSION, help="the archives' model version (default %(default)s)")
    args = p.parse_args(argv)
    if not VERSION_TEXT.fullmatch(args.version):
        p.error(f"a version is 1 to 32 characters from A-Z a-z 0-9 . _ -, got {args.version!r}")
    if unknown := set(args.names) - set(ARCHIVES):
        p.error(f"unknown archive(s) {', '.join(sorted(unknown))}; choose from {', '.join(ARCHIVES)}")
    for name in args.names or ARCHIVES:
        print(f"built {build(name, ARCHIVES[name], version=args.version).relative_to(ROOT)} (version {args.version})")


if __name__ == "__main__":
    main()
