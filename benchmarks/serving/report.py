"""Medians, ratios, machine facts, the markdown report and the chart of a `make bench` run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: the chart is only ever written to a file
import matplotlib.pyplot as plt  # noqa: E402
import psutil  # noqa: E402

from benchmarks.shared.locust_run import LoadResult  # noqa: E402
from benchmarks.shared.pages import markdown_table, rebase_links  # noqa: E402
from digitlab.workload import FIRST_FRAME, LAST_FRAME  # noqa: E402

LABELS = {
    "inprocess": "(a) in-process, batched",
    "torchserve": "(b) TorchServe, project config",
    "naive": "(c) TorchServe, naive",
    "fastapi": "(d) FastAPI + uvicorn",
}
TARGET_NOTES = {
    "inprocess": "the serving layer (`digitlab/serving.py`) called in the benchmark process, batched at the shipped "
    "batchSize, with the shipped handler threads: parse, one `answer` per batch, JSON answer; no HTTP, "
    "no queue. Latency = its batch's time.",
    "torchserve": "`config.properties` and `model_config/*.yaml` as shipped, every archive served, "
    "as `make serve` does.",
    "naive": "the same archives with batchSize 1, one worker per model, handler threads and OMP_NUM_THREADS = "
    "torch's default (one per core).",
    "fastapi": "`benchmarks/serving/fastapi_server.py`: one uvicorn process, plain `def` endpoints calling the same "
    "serving layer, 1 torch thread (as a shipped worker), no token check, no batching; palindrome and sample.",
}
AIMS = {"rps": 2000, "p99_ms": 25, "vs_naive": 4.0, "vs_fastapi": 1.5}  # the serving benchmark's aims, for palindrome
LATENCIES = ("p50_ms", "p95_ms", "p99_ms")  # the LoadResult fields a table shows
PACKAGES = ("torch", "torchserve", "locust", "fastapi", "uvicorn", "grpcio")
# Ratio table columns: (title, endpoint, metric).
RATIO_COLUMNS = (
    ("palindrome req/s", "palindrome", "rps"),
    ("palindrome p99", "palindrome", "p99_ms"),
    ("sample req/s", "sample", "rps"),
    ("sample p99", "sample", "p99_ms"),
    ("first frame p50", FIRST_FRAME, "p50_ms"),
    ("last frame p50", LAST_FRAME, "p50_ms"),
)


@dataclass(frozen=True)
class CpuShare:
    """CPU per request during one locust run: the server's (all its processes) and the load generator's."""

    server_ms: float
    client_ms: float


@dataclass
class Runs:
    """Every repetition's numbers for one target; the report gives their medians (errors: their sum)."""

    loads: dict[str, list[LoadResult]] = field(default_factory=dict)
    cold_start_s: list[float] = field(default_factory=list)
    workers_mb: list[float] = field(default_factory=list)
    total_mb: list[float] = field(default_factory=list)
    cpu: dict[str, list[CpuShare]] = field(default_factory=dict)

    def add(
        self,
        loads: dict[str, LoadResult],
        start_s: float | None = None,
        memory_mb: tuple[float, float] | None = None,
        cpu: dict[str, CpuShare] | None = None,
    ) -> None:
        for name, result in loads.items():
            self.loads.setdefault(name, []).append(result)
        for name, share in (cpu or {}).items():
            self.cpu.setdefault(name, []).append(share)
        if start_s is not None:
            self.cold_start_s.append(start_s)
        if memory_mb is not None:
            self.workers_mb.append(memory_mb[0])
            self.total_mb.append(memory_mb[1])

    def median(self, endpoint: str, metric: str) -> float | None:
        results = self.loads.get(endpoint)
        return statistics.median(getattr(r, metric) for r in results) if results else None

    def errors(self, endpoint: str) -> int | None:
        results = self.loads.get(endpoint)
        return sum(r.failures for r in results) if results else None


@dataclass
class Record:
    """What one run measured, and where: enough to write its report again later (`--report-only`)."""

    runs: dict[str, Runs]
    settings: dict[str, str]
    facts: dict[str, str]
    command: str

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> Record:
        data = json.loads(path.read_text())
        runs = {}
        for target, r in data["runs"].items():
            loads = {name: [LoadResult(**x) for x in results] for name, results in r["loads"].items()}
            cpu = {name: [CpuShare(**x) for x in shares] for name, shares in r["cpu"].items()}
            runs[target] = Runs(**{**r, "loads": loads, "cpu": cpu})
        return cls(runs, data["settings"], data["facts"], data["command"])


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(models, platform.processor())


def machine_facts() -> dict[str, str]:
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return {
        "CPU": f"{os.cpu_count()} logical cores, {cpu_model()}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "Java": java[0] if java else "?",
        **{name: importlib.metadata.version(name) for name in PACKAGES},
    }


def load_table(runs: dict[str, Runs], endpoint: str) -> list[list[str]]:
    return [
        [
            LABELS[target],
            fmt(r.median(endpoint, "rps")),
            *(fmt(r.median(endpoint, m), 1) for m in LATENCIES),
            str(r.errors(endpoint)),
        ]
        for target, r in runs.items()
        if endpoint in r.loads
    ]


LOAD_HEADER = ("target", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")


def stream_table(runs: dict[str, Runs]) -> list[list[str]]:
    return [
        [
            LABELS[target],
            *(fmt(r.median(name, m), 1) for name in (FIRST_FRAME, LAST_FRAME) for m in ("p50_ms", "p95_ms")),
            str(r.errors(LAST_FRAME)),
        ]
        for target, r in runs.items()
        if FIRST_FRAME in r.loads
    ]


STREAM_HEADER = (
    "target",
    "first frame p50 ms",
    "first frame p95 ms",
    "last frame p50 ms",
    "last frame p95 ms",
    "errors",
)


def start_table(runs: dict[str, Runs]) -> list[list[str]]:
    return [
        [
            LABELS[target],
            fmt(statistics.median(r.cold_start_s), 1),
            fmt(statistics.median(r.workers_mb)),
            fmt(statistics.median(r.total_mb)),
            fmt(r.median("ping", "rps")),
        ]
        for target, r in runs.items()
        if r.cold_start_s
    ]


START_HEADER = (
    "target",
    "cold start to all workers READY, s",
    "model workers RSS, MiB",
    "whole server RSS, MiB",
    "load generator ceiling (GET /ping), req/s",
)


def cpu_table(runs: dict[str, Runs], cores: int) -> list[list[str]]:
    """Where the CPU goes per request, and the req/s that would use every core: no server can beat that ceiling."""
    rows = []
    for target, r in runs.items():
        for endpoint, shares in r.cpu.items():
            server = statistics.median(s.server_ms for s in shares)
            client = statistics.median(s.client_ms for s in shares)
            rows.append(
                [
                    LABELS[target],
                    endpoint,
                    f"{server:.2f}",
                    f"{client:.2f}",
                    fmt(cores * 1000 / (server + client)),
                    fmt(r.median(endpoint, "rps")),
                ]
            )
    return rows


def cpu_header(cores: int) -> tuple[str, ...]:
    return (
        "target",
        "endpoint",
        "server CPU ms/request",
        "load generator CPU ms/request",
        f"ceiling on {cores} cores, req/s",
        "measured req/s",
    )


def ratio_table(runs: dict[str, Runs]) -> list[list[str]]:
    b = runs["torchserve"]
    return [
        [
            f"(b) / {LABELS[other].split()[0]}",
            *(ratio(b.median(e, m), runs[other].median(e, m)) for _, e, m in RATIO_COLUMNS),
        ]
        for other in ("naive", "fastapi", "inprocess")
    ]


RATIO_HEADER = ("ratio", *(c[0] for c in RATIO_COLUMNS))


def aims(runs: dict[str, Runs]) -> list[str]:
    b, c, d = runs["torchserve"], runs["naive"], runs["fastapi"]
    rps, p99 = b.median("palindrome", "rps") or 0, b.median("palindrome", "p99_ms") or float("inf")
    vs_c = rps / (c.median("palindrome", "rps") or float("inf"))
    vs_d = rps / (d.median("palindrome", "rps") or float("inf"))

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    return [
        f"- palindrome ≥ {AIMS['rps']:,} req/s with p99 ≤ {AIMS['p99_ms']} ms: {rps:,.0f} req/s, "
        f"p99 {p99:.0f} ms — {met(rps >= AIMS['rps'] and p99 <= AIMS['p99_ms'])}",
        f"- ≥ {AIMS['vs_naive']}× the naive configuration: {vs_c:.2f}× — {met(vs_c >= AIMS['vs_naive'])}",
        f"- ≥ {AIMS['vs_fastapi']}× the FastAPI server: {vs_d:.2f}× — {met(vs_d >= AIMS['vs_fastapi'])}",
    ]


def chart(runs: dict[str, Runs], path: Path, title: str, sample_n: str) -> Path:
    """Grouped bars, one colour per target: throughput, p99 latency, and the interpolation stream."""
    panels: tuple[tuple[str, Callable[[Runs], list[float | None]], list[str]], ...] = (
        ("palindrome, req/s", lambda r: [r.median("palindrome", "rps")], [""]),
        (f"sample (n={sample_n}), req/s", lambda r: [r.median("sample", "rps")], [""]),
        (
            "p99 latency, ms",
            lambda r: [r.median("palindrome", "p99_ms"), r.median("sample", "p99_ms")],
            ["palindrome", "sample"],
        ),
        (
            "gRPC interpolation stream, p50 ms",
            lambda r: [r.median(FIRST_FRAME, "p50_ms"), r.median(LAST_FRAME, "p50_ms")],
            ["first frame", "last frame"],
        ),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    width = 0.8 / len(runs)
    for ax, (name, values, groups) in zip(axes, panels):
        for i, (target, r) in enumerate(runs.items()):
            heights = values(r)
            bars = ax.bar(
                [g + i * width for g in range(len(groups))], [v or 0 for v in heights], width, label=LABELS[target]
            )
            ax.bar_label(bars, [fmt(v) for v in heights], fontsize="x-small")  # "—": not measured for this target
        ax.set_xticks([g + width * (len(runs) - 1) / 2 for g in range(len(groups))], groups)
        ax.set_title(name)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(title: str, header: tuple[str, ...], rows: list[list[str]], align: str) -> list[str]:
    """A titled table, or nothing when no target has a row (an endpoint left out of the run)."""
    return [f"## {title}", "", markdown_table(header, rows, align), ""] if rows else []


def markdown(record: Record, chart_path: Path, doc: Path, appendices: tuple[Path, ...] = ()) -> str:
    """The whole report; `appendices` (markdown files that exist) are added at its end, their links rebased
    from their own folder to the report's."""
    runs, settings = record.runs, record.settings
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/serving/run.py` from one run; do not edit by hand (rerun it).",
        "",
        f"Command: `{record.command}`",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in record.facts.items()),
        "",
        "Run: " + "; ".join(f"{k} {v}" for k, v in settings.items()),
        "",
        "Targets, measured side by side with the same locust users and the same request mix, drawn by "
        "`digitlab/workload.py` for locust and the in-process target alike (repetitions alternate the targets, "
        "so drift on a shared machine hits all alike; numbers are medians, errors are summed):",
        "",
        *(f"- **{LABELS[t]}**: {why}" for t, why in TARGET_NOTES.items()),
        "",
        f"![chart]({os.path.relpath(chart_path, doc.parent)})",
        "",
        *section("palindrome (REST)", LOAD_HEADER, load_table(runs, "palindrome"), "lrrrrr"),
        *section(f"sample, n={settings['sample n']} (REST)", LOAD_HEADER, load_table(runs, "sample"), "lrrrrr"),
        *section(
            f"interpolate over gRPC StreamPredictions ({settings['interpolation frames']} frames)",
            STREAM_HEADER,
            stream_table(runs),
            "lrrrrr",
        ),
        *section("Start and memory", START_HEADER, start_table(runs), "lrrrr"),
        *section(
            "CPU per request (all processes share the same cores)",
            cpu_header(int(settings["cores"])),
            cpu_table(runs, int(settings["cores"])),
            "llrrrr",
        ),
        *section("Ratios", RATIO_HEADER, ratio_table(runs), "l" + "r" * len(RATIO_COLUMNS)),
        "## Aims (palindrome)",
        "",
        *aims(runs),
        "",
    ]
    lines += [
        rebase_links(appendix.read_text().rstrip(), appendix.parent, doc.parent) + "\n"
        for appendix in appendices
        if appendix.exists()
    ]
    return "\n".join(lines)


def write(record: Record, doc: Path, chart_path: Path, appendices: tuple[Path, ...] = ()) -> None:
    s = record.settings
    title = f"{s['locust users']} users, {s['seconds per run']} s runs, medians of {s['repetitions']}"
    chart(record.runs, chart_path, title, s["sample n"])
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(record, chart_path, doc, appendices))
