"""Project hygiene that a fresh clone depends on."""

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_pinned_dependency_is_in_the_lock_file():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = {line.split("==")[0].lower().replace("_", "-"): line.strip()
            for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    for pin in pins:
        name, version = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", pin).groups()
        assert lock.get(name.lower().replace("_", "-"), "").lower() == f"{name}=={version}".lower(), pin


def test_generated_and_built_files_are_not_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:  # not a git checkout (e.g. an sdist): nothing to check
        return
    assert not [f for f in tracked if f.endswith((".mar", "_pb2.py", "_pb2_grpc.py", ".proto")) or f == "key_file.json"
                or f.startswith(".gateway/")]
