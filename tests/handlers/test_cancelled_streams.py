"""A stream whose client cancelled it stops: what the handler reads (the frontend's cancelled-streams log), and
the log4j2.xml it relies on (tests/e2e/test_cancelled_stream.py runs it all on a real TorchServe)."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import ts

from digitlab.schemas import Frame
from handlers.common import CANCELLED_STREAMS_LOG, CLIENT_CLOSED, CancelledStreams
from handlers.interpolate_handler import InterpolateHandler
from tests.handlers.context import GRPC_HEADERS, make_context, start_batch

ROOT = Path(__file__).resolve().parents[2]
LOG4J = ROOT / "log4j2.xml"
FRONTEND_JAR = Path(os.path.dirname(ts.__file__)) / "frontend" / "model-server.jar"
GRPC_JOB = "org/pytorch/serve/job/GRPCJob.class"
STEPS = 8


def frame(k: int) -> Frame:
    return Frame(index=k, of=STEPS, png="", digit=0, confidence=1.0, generated_at=0.0)


class Frontend:
    """Stands in for TorchServe's frontend: takes the handler's intermediate replies and, from the reply
    `cancel_at` on, logs each as undeliverable, as GRPCJob does once the client has cancelled."""

    def __init__(self, log: Path, cancel_at: int | None) -> None:
        self.log, self.cancel_at = log, cancel_at
        self.sent: list[dict] = []

    def __call__(self, ret, req_id_map, message, code, context) -> None:
        self.sent.append(json.loads(ret[0]))
        if self.cancel_at is not None and len(self.sent) > self.cancel_at:
            with self.log.open("a") as f:
                f.write(f"2026-01-01T00:00:00,000 {req_id_map[0]}\n")


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / CANCELLED_STREAMS_LOG).write_text("2025-12-31T23:59:59,000 an-earlier-request\n")
    monkeypatch.setenv("LOG_LOCATION", str(logs))
    return logs


def stream(tmp_path, monkeypatch, log_dir, cancel_at: int | None):
    """One gRPC stream of STEPS frames through the handler -> (its last message, the frontend, frames made)."""
    context = make_context(tmp_path, "generator.pt")
    start_batch(context, 1, [GRPC_HEADERS])
    frontend = Frontend(log_dir / CANCELLED_STREAMS_LOG, cancel_at)
    monkeypatch.setattr("handlers.common.send_intermediate_predict_response", frontend)
    made = []

    def frames():
        for k in range(STEPS):
            made.append(k)
            yield frame(k)

    last = InterpolateHandler().stream(frames(), 0, context)
    return last, frontend, made, context


def test_a_stream_stops_after_the_first_reply_the_frontend_could_not_deliver(tmp_path, monkeypatch, log_dir):
    last, frontend, made, context = stream(tmp_path, monkeypatch, log_dir, cancel_at=1)
    # frame 0 delivered, frame 1 logged as undeliverable: frame 2 is never generated
    assert [f["index"] for f in frontend.sent] == [0, 1] and made == [0, 1]
    answer = json.loads(last)
    assert answer["code"] == CLIENT_CLOSED and answer["type"] == "Cancelled" and "after 2 frame" in answer["message"]
    assert context.get_response_status(0)[0] == CLIENT_CLOSED


def test_a_stream_nobody_cancelled_runs_to_its_last_frame(tmp_path, monkeypatch, log_dir):
    last, frontend, made, _ = stream(tmp_path, monkeypatch, log_dir, cancel_at=None)
    assert made == list(range(STEPS)) and len(frontend.sent) == STEPS - 1
    assert json.loads(last)["index"] == STEPS - 1


def test_another_requests_cancel_does_not_stop_a_stream(tmp_path, monkeypatch, log_dir):
    context = make_context(tmp_path, "generator.pt")
    start_batch(context, 1, [GRPC_HEADERS])
    sent = []

    def frontend(ret, req_id_map, message, code, context):
        sent.append(ret[0])
        with (log_dir / CANCELLED_STREAMS_LOG).open("a") as f:
            f.write("2026-01-01T00:00:00,000 some-other-request\n")

    monkeypatch.setattr("handlers.common.send_intermediate_predict_response", frontend)
    last = InterpolateHandler().stream(iter([frame(k) for k in range(STEPS)]), 0, context)
    assert len(sent) == STEPS - 1 and json.loads(last)["index"] == STEPS - 1


def test_without_the_file_streams_run_to_their_end(tmp_path, monkeypatch, log_dir):
    (log_dir / CANCELLED_STREAMS_LOG).unlink()
    monkeypatch.setenv("LOG_LOCATION", str(tmp_path / "nowhere"))
    last, frontend, made, _ = stream(tmp_path, monkeypatch, log_dir, cancel_at=None)
    assert made == list(range(STEPS)) and json.loads(last)["index"] == STEPS - 1


def test_the_watcher_reads_only_whole_new_lines_and_follows_a_roll_over(tmp_path):
    log = tmp_path / CANCELLED_STREAMS_LOG
    log.write_text("t old-request\n")
    watch = CancelledStreams(log)
    watch.skip()
    assert not watch.cancelled("old-request")  # lines written before the stream began are not read
    with log.open("a") as f:
        f.write("t req-")  # a line being written
    assert not watch.cancelled("req-7")
    with log.open("a") as f:
        f.write("7\n")
    assert watch.cancelled("req-7")
    assert not watch.cancelled("req-7")  # each line is read once
    log.rename(tmp_path / "cancelled_streams.1.log")  # log4j2 rolls over: a new, shorter file
    log.write_text("t req-8\n")
    assert watch.cancelled("req-8")
    assert not CancelledStreams(None).cancelled("req-8")


# -- log4j2.xml: the signal's other end, and every log bounded --------------------------------------------


def log4j() -> tuple[ET.Element, dict[str, str]]:
    root = ET.parse(LOG4J).getroot()
    props = {p.get("name"): p.text for p in root.iter("Property")}
    return root, props


def expand(value: str, props: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: props[m.group(1)], value)


def test_log4j_writes_the_undelivered_replies_ids_where_the_handler_reads_them():
    root, props = log4j()
    appender = next(a for a in root.iter("RollingFile") if a.get("name") == "cancelled_streams")
    assert expand(appender.get("fileName"), props) == f"{props['dir']}/{CANCELLED_STREAMS_LOG}"
    text = expand(appender.find("StringMatchFilter").get("text"), props)
    # the WARN that TorchServe 0.12's GRPCJob.cancelHandler writes for each reply it drops
    with zipfile.ZipFile(FRONTEND_JAR) as jar:
        assert f"{text} for requestId: {{}}".encode() in jar.read(GRPC_JOB)
    pattern = appender.find("PatternLayout").get("pattern")
    message = f"{text} for requestId: 0b9c-uuid"
    replaced = re.sub(r"^.*requestId: ", "", message)
    assert "%replace{%m}{^.*requestId: }{}" in pattern and replaced == "0b9c-uuid"
    grpc_job = next(lg for lg in root.iter("Logger") if lg.get("name") == "org.pytorch.serve.job.GRPCJob")
    assert grpc_job.get("additivity") == "false"  # those lines reach neither ts_log nor the console
    refs = {ref.get("ref"): ref for ref in grpc_job.iter("AppenderRef")}
    assert set(refs) == {"cancelled_streams", "ts_log", "STDOUT"}
    for name in ("ts_log", "STDOUT"):
        deny = refs[name].find("StringMatchFilter")
        assert expand(deny.get("text"), props) == text and deny.get("onMatch") == "DENY"


def test_every_log_file_rolls_by_size_and_keeps_few_copies():
    root, props = log4j()
    appenders = root.find("Appenders")
    assert {a.tag for a in appenders} == {"Console", "RollingFile"}  # no plain File, no unbounded appender
    for appender in appenders.iter("RollingFile"):
        size = expand(appender.find("SizeBasedTriggeringPolicy").get("size"), props)
        keep = int(expand(appender.find("DefaultRolloverStrategy").get("max"), props))
        assert re.fullmatch(r"\d+ MB", size) and int(size.split()[0]) <= 10 and keep <= 3, appender.get("name")
        assert "%i" in appender.get("filePattern") and "%d" not in appender.get("filePattern")
    assert appenders.find("Console").find("Filters/BurstFilter") is not None  # the console: warnings rate-limited
