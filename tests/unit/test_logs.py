"""The runtime's logs: JSON lines with the caller's fields, and a file that cannot outgrow its cap."""

import json
import logging

import pytest

from ops import logs


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


def test_one_json_object_per_line_with_the_callers_fields(tmp_path, restore_root_logger):
    logs.configure(tmp_path / "console.log")
    logging.getLogger("supervisor").warning("restarted %s", "sample", extra={"model": "sample", "request_id": "r-1"})
    logging.getLogger("torchserve").info('a "quoted"\tline')
    first, second = [json.loads(line) for line in (tmp_path / "console.log").read_text().splitlines()]
    assert first["message"] == "restarted sample" and first["level"] == "WARNING"
    assert first["model"] == "sample" and first["request_id"] == "r-1" and first["time"].endswith("Z")
    assert second == {**second, "logger": "torchserve", "message": 'a "quoted"\tline'}


def test_a_flood_of_lines_stays_under_the_cap(tmp_path, restore_root_logger, monkeypatch):
    monkeypatch.setattr(logs, "MAX_BYTES", 20_000)
    logs.configure(tmp_path / "console.log")
    for k in range(5_000):  # ~600 KB of lines
        logging.getLogger("torchserve").warning("x" * 100 + str(k))
    written = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert written <= (logs.BACKUPS + 1) * 20_000 and len(list(tmp_path.iterdir())) == logs.BACKUPS + 1
