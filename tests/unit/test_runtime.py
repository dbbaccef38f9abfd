"""ops.server, ops.instance and the supervisor's modules without a server: what they write and whom they signal."""

import os
import subprocess
import sys

from ops import server as ops_server
from ops.api import ARRIVAL_METRIC, PROGRESS_METRICS, counter, expires_at
from ops.instance import (
    BACKEND_THREADS,
    cap_logs,
    instance_properties,
    read_properties,
    with_ports,
    write_properties,
)
from ops.launcher import WORKER_THREAD_FAILED, torchserve_environment
from ops.workers import worker_cpu, worker_processes


def test_stop_never_signals_a_process_that_is_not_its_own_supervisor(tmp_path):
    """A stale PID file naming someone else's process (here: a sleeping child) must not get it killed."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ops_server.SUPERVISOR_PID_FILE).write_text(str(stranger.pid))
        assert not ops_server.owned(stranger.pid, tmp_path)
        assert ops_server.stop(tmp_path, grace=1) is False
        assert stranger.poll() is None  # still running
        assert not (tmp_path / ops_server.SUPERVISOR_PID_FILE).exists()  # and the stale file is gone
    finally:
        stranger.kill()
        stranger.wait()
    assert ops_server.stop(tmp_path) is False  # no PID file: nothing to do


def test_its_own_supervisor_is_recognised_however_long_its_command_line(tmp_path):
    """ps cuts lines at 80 columns when it finds no terminal (as under pytest) unless told not to."""
    workdir = tmp_path / ("w" * 100)
    workdir.mkdir()
    lookalike = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", ops_server.SUPERVISOR_MODULE, "--workdir", str(workdir)]
    )
    try:
        assert ops_server.owned(lookalike.pid, workdir)
    finally:
        lookalike.kill()
        lookalike.wait()


def test_instance_config_closes_every_url_but_the_model_store(tmp_path):
    base = {
        "inference_address": "http://127.0.0.1:8080",
        "enable_model_api": "true",
        "allowed_urls": "file://.*|http(s)?://.*",
    }
    props = instance_properties(base, tmp_path / "w", tmp_path / "store.v1")
    assert props["enable_model_api"] == "false"
    assert props["workflow_store"] == str(tmp_path / "w" / "workflows") and not os.listdir(props["workflow_store"])
    write_properties(tmp_path / "c.properties", props)
    # Java reads "\\." as "\." : the dot of "store.v1" must stay a literal dot in the regex.
    assert "store\\\\.v1/[A-Za-z0-9_]+[.]mar" in (tmp_path / "c.properties").read_text()
    assert read_properties(tmp_path / "c.properties")["ready_address"] == "http://127.0.0.1:8083"
    # Many backend netty threads, so that one blocked by a streamed unary call holds one model's channel.
    assert props["netty_client_threads"] == str(BACKEND_THREADS)
    more = str(2 * BACKEND_THREADS)
    assert (
        instance_properties({**base, "netty_client_threads": more}, tmp_path / "w", tmp_path)["netty_client_threads"]
        == more
    )


def test_with_ports_moves_every_listener(tmp_path):
    props = with_ports(read_properties(ops_server.ROOT / "config.properties"), [1, 2, 3, 4, 5, 6])
    assert [props[k] for k in ("inference_address", "management_address", "metrics_address", "ready_address")] == [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
        "http://127.0.0.1:4",
    ]
    assert (props["grpc_inference_port"], props["grpc_management_port"]) == ("5", "6")


def test_progress_reads_completed_work_per_model_from_prometheus_text():
    text = (
        "# TYPE ts_inference_latency_microseconds counter\n"
        'ts_inference_latency_microseconds{model_name="palindrome",model_version="default",hostname="vm",} 71110.5\n'
        'ts_inference_requests_total{model_name="palindrome",model_version="default",hostname="vm",} 3.0\n'
        'ts_inference_latency_microseconds{model_name="sample",model_version="default",hostname="vm",} 1.0E7\n'
    )
    assert counter(text, PROGRESS_METRICS[1]) == {"palindrome": 71110.5, "sample": 1.0e7}
    assert counter(text, ARRIVAL_METRIC) == {"palindrome": 3.0}


def test_key_expiry_is_read_from_torchserves_format():
    assert expires_at({"key": "k", "expiration time": "2026-11-30T10:00:00Z"}) == 1796032800.0
    assert expires_at({"key": "k"}) is None


def test_worker_cpu_reads_this_process_and_notices_a_dead_one():
    busy = worker_cpu([os.getpid()])
    sum(i * i for i in range(2_000_000))  # burn some CPU
    assert worker_cpu([os.getpid()]) > busy
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert worker_cpu([os.getpid(), dead.pid]) is None


def test_a_failed_worker_thread_is_recognised_in_torchserves_console():
    line = (
        b"2026-11-30T12:40:52,008 [ERROR] W-9000-palindrome_rnn_1.0 org.pytorch.serve.wlm.WorkerThread"
        b" - IllegalStateException error\n"
    )
    assert WORKER_THREAD_FAILED.search(line)["model"] == b"palindrome_rnn"
    assert WORKER_THREAD_FAILED.search(line.replace(b"[ERROR]", b"[INFO ]")) is None
    assert WORKER_THREAD_FAILED.search(line.replace(b"IllegalState", b"Interrupted")) is None


def test_worker_processes_are_found_by_their_socket_before_torchserve_knows_their_pid(tmp_path):
    socket = str(tmp_path / ".ts.sock.9001")
    worker = subprocess.Popen(
        [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)", "--sock-name", socket],
        stdout=subprocess.PIPE,
    )
    try:
        # Until it has exec'd, the child's command line is still pytest's (a loaded machine showed it).
        assert worker.stdout.readline() == b"started\n"
        assert worker_processes({socket}) == [worker.pid]
        assert worker_processes({socket + "0", str(tmp_path / ".ts.sock.9002")}) == []
    finally:
        worker.kill()
        worker.wait()
    assert worker_processes({socket}) == []


def test_torchserve_and_its_workers_never_inherit_the_supervisors_pythonpath(tmp_path):
    """The image runs the supervisor with PYTHONPATH=/app, whose digitlab/ is the key-file reader alone:
    inherited, it shadowed the archives' own digitlab and every worker died at import (no model loaded)."""
    env = torchserve_environment(tmp_path, {"PYTHONPATH": "/app", "PATH": "/opt/venv/bin", "OMP_NUM_THREADS": "8"})
    assert "PYTHONPATH" not in env and env["PATH"] == "/opt/venv/bin"
    assert env["OMP_NUM_THREADS"] == "1" and env["TMPDIR"] == env["TEMP"] == str(tmp_path / "tmp")


def test_cap_logs_rolls_only_logs_over_the_cap_and_asks_the_writer_to_reopen(tmp_path):
    """The door's nginx logs every refused request: nothing else rotates them (docs/OPERATIONS.md, "Logs")."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log").write_bytes(b"x" * 2000)
    (logs / "error.log").write_bytes(b"y" * 10)
    (logs / "access.log.1").write_bytes(b"older")
    reopened = tmp_path / "reopened"
    # A writer that, like nginx, reopens its logs on SIGUSR1 (here: notes that it was asked).
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGUSR1, lambda *a: (pathlib.Path({str(reopened)!r}).touch(), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout.readline() == b"ready\n"
        assert cap_logs(logs, [writer.pid], cap=1000) == ["access.log"]
        assert writer.wait(timeout=10) == 0 and reopened.exists()
    finally:
        writer.kill()
    assert sorted(p.name for p in logs.iterdir()) == ["access.log.1", "error.log"]
    assert (logs / "access.log.1").read_bytes() == b"x" * 2000  # one generation: the older roll is gone
    assert cap_logs(logs, [writer.pid], cap=1000) == []  # nothing over the cap: nobody is signalled
