"""Tune the served configuration by measurement: palindrome req/s and latency per setting, sample n=64 latency.

    python -m benchmarks.serving.tune [--users 4 32 --seconds 6 --repeats 3]   # about 16 minutes on 2 cores

Each variant is a private TorchServe serving only the model under test, its archive built from this
checkout with model-config overrides (and config.properties overrides for frontend settings); every
variant is measured at each user count with the same locust users as `make bench`. Repetitions
alternate the variants. `sample` is timed one request at a time against the generator called in this
process. Writes docs/bench/tuning.md, which the next `make bench` includes in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.serving import targets
from benchmarks.serving.report import LATENCIES
from benchmarks.shared.locust_run import LoadResult, run_locust
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.shipped import service
from benchmarks.shared.stats import percentile
from digitlab import catalog
from digitlab.generation import generate
from digitlab.latent import sample_latents
from digitlab.workload import FIRST_FRAME, LAST_FRAME
from ops import server as ops_server
from tools.build_archives import ROOT

OUT = ROOT / "docs" / "bench" / "tuning.md"
SAMPLE_N = 64  # the aim: a 64-image sample within 1.3x of the in-process generator time
STEPS = 32  # frames per interpolation, as in `make bench`


@dataclass(frozen=True)
class Variant:
    name: str
    model: dict[str, Any] = field(default_factory=dict)  # model-config overrides (top-level keys; `handler` whole)
    properties: dict[str, str] = field(default_factory=dict)  # config.properties overrides (frontend)


def handler(name: str, **options: Any) -> dict[str, Any]:
    """The shipped `handler:` section of `name` with `options` changed (overrides replace it whole)."""
    return {"handler": {**catalog.model(name).model_config()["handler"], **options}}


PALINDROME = (
    Variant("shipped"),
    Variant("batchSize 1", {"batchSize": 1}),
    Variant("batchSize 8, maxBatchDelay 2", {"batchSize": 8, "maxBatchDelay": 2}),
    Variant("maxBatchDelay 1", {"maxBatchDelay": 1}),
    Variant("batchSize 32", {"batchSize": 32}),
    Variant("2 workers", {"minWorkers": 2, "maxWorkers": 2}),
    Variant("handler threads 2", handler("palindrome", threads=2)),
    Variant(
        "netty threads 1 + client threads 1", properties={"number_of_netty_threads": "1", "netty_client_threads": "1"}
    ),
    Variant("async_logging", properties={"async_logging": "true"}),
)
INTERPOLATE = (
    Variant("shipped"),
    Variant("batchSize 1", {"batchSize": 1}),
    Variant("batchSize 1, 2 workers", {"batchSize": 1, "minWorkers": 2, "maxWorkers": 2}),
)
SAMPLE = (
    Variant("shipped"),
    Variant("batchSize 1", {"batchSize": 1}),
    Variant("handler threads 2", handler("sample", threads=2)),
    Variant("batchSize 1, handler threads 2", {"batchSize": 1, **handler("sample", threads=2)}),
)


@dataclass(frozen=True)
class Experiment:
    model: str  # the one archive served
    variants: tuple[Variant, ...]
    users: tuple[int, ...]  # concurrent locust users, each measured on the same server
    locust: tuple[str, ...]  # locust user class and options
    rows: tuple[str, ...]  # the entries of locust's statistics kept


def base_config(variant: Variant, path: Path) -> Path:
    ops_server.write_properties(path, {**ops_server.read_properties(ROOT / "config.properties"), **variant.properties})
    return path


Results = dict[tuple[str, int], list[dict[str, LoadResult]]]  # (variant, users) -> kept rows, one dict per repetition


def measure(experiment: Experiment, seconds: int, repeats: int, workdir: Path) -> Results:
    """{(variant, users): the kept rows of each repetition} for the experiment's model under each variant."""
    model = experiment.model
    stores = {
        v.name: targets.build_store(workdir / f"store-{model}-{i}", [model], lambda _, v=v: v.model)
        for i, v in enumerate(experiment.variants)
    }
    results = {(v.name, u): [] for v in experiment.variants for u in experiment.users}
    for rep in range(repeats):
        for i, variant in enumerate(experiment.variants):
            here = workdir / f"{model}-{i}-{rep}"
            here.mkdir()
            with targets.torchserve(here, stores[variant.name], base_config(variant, here / "base.properties")) as live:
                for n in experiment.users:
                    user, *options = experiment.locust
                    stats = run_locust(
                        live.http,
                        n,
                        seconds,
                        here / f"locust-{n}",
                        [user],
                        live.token,
                        extra_args=(*options, "--grpc-target", live.grpc),
                    )
                    results[(variant.name, n)].append({row: stats[row] for row in experiment.rows})
                    shown = ", ".join(
                        f"{r.name} {r.rps:.0f} req/s p50 {r.p50_ms:.0f} ms p99 {r.p99_ms:.0f} ms ({r.failures} err)"
                        for r in results[(variant.name, n)][-1].values()
                    )
                    print(f"[{rep + 1}/{repeats}] {variant.name}, {n} users: {shown}", flush=True)
    return results


def p50_ms(run, seconds: float) -> float:
    """The p50 wall time of `run()` over `seconds` of back-to-back calls (after one warm-up call), ms."""
    run()
    times, began = [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return percentile(times, 50) * 1000


def inprocess_sample(threads: int, seconds: float) -> tuple[float, float]:
    """(generator alone, the handler's whole work) for one n=64 request, p50 ms, with `threads` torch threads."""
    torch.set_num_threads(threads)
    sample = service("sample")
    request = sample.parse({"n": SAMPLE_N})
    generator_only = p50_ms(lambda: generate(sample.generator, sample_latents(0, SAMPLE_N)), seconds)
    whole = p50_ms(lambda: sample.answer([request])[0].model_dump_json(), seconds)
    return generator_only, whole


def med(runs: list[dict[str, LoadResult]], row: str, metric: str) -> float:
    return statistics.median(getattr(r[row], metric) for r in runs)


def load_table(experiment: Experiment, results: Results) -> str:
    cells = [
        [
            name,
            users,
            row,
            f"{med(runs, row, 'rps'):,.0f}",
            *(f"{med(runs, row, m):.0f}" for m in LATENCIES),
            sum(r[row].failures for r in runs),
        ]
        for (name, users), runs in results.items()
        for row in experiment.rows
    ]
    header = ["variant", "users", "measured", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    return markdown_table(header, cells, "lrlrrrrr")


def threads_of(variant: Variant) -> int:
    return variant.model.get("handler", catalog.model("sample").model_config()["handler"])["threads"]


def sample_table(results: Results, seconds: float) -> str:
    """Served p50 of one n=64 request against the same work in this process, with the variant's threads."""
    inprocess = {t: inprocess_sample(t, seconds) for t in sorted({threads_of(v) for v in SAMPLE})}
    cells = []
    for variant in SAMPLE:
        served = med(results[(variant.name, 1)], "sample", "p50_ms")
        generator_ms, whole_ms = inprocess[threads_of(variant)]
        cells.append(
            [
                variant.name,
                f"{served:.0f}",
                f"{generator_ms:.1f}",
                f"{whole_ms:.1f}",
                f"{served / generator_ms:.2f}×",
                f"{served / whole_ms:.2f}×",
            ]
        )
    header = ["variant", "served p50 ms", "in-process generator p50 ms", "in-process whole work p50 ms"]
    return markdown_table([*header, "served / generator", "served / whole work"], cells, "lrrrrr")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--users", type=int, nargs="+", default=[4, 32], help="palindrome: concurrent locust users, each measured"
    )
    p.add_argument("--stream-users", type=int, default=2, help="concurrent gRPC interpolation streams")
    p.add_argument("--seconds", type=int, default=6, help="length of each locust run")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; tables give medians")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    experiments = {
        "palindrome (REST)": Experiment(
            "palindrome", PALINDROME, tuple(args.users), ("PalindromeUser",), ("palindrome",)
        ),
        # One request at a time: the time a user waits for 64 images, against the same work in-process.
        f"sample, n={SAMPLE_N}, one request at a time": Experiment(
            "sample", SAMPLE, (1,), ("SampleUser", "--sample-n", str(SAMPLE_N)), ("sample",)
        ),
        # Concurrent streams: a batch streams its requests one after another, so batching delays first frames.
        f"interpolate, {args.stream_users} concurrent gRPC streams of {STEPS} frames": Experiment(
            "interpolate",
            INTERPOLATE,
            (args.stream_users,),
            ("GrpcUser", "--tags", "interpolate", "--interpolate-steps", str(STEPS)),
            (FIRST_FRAME, LAST_FRAME),
        ),
    }
    command = "python -m benchmarks.serving.tune " + shlex.join(argv if argv is not None else sys.argv[1:])
    sections: list[str] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
        for title, experiment in experiments.items():
            results = measure(experiment, args.seconds, args.repeats, Path(tmp))
            sections += [f"### {title}", "", load_table(experiment, results), ""]
            if experiment.model == "sample":
                sections += [
                    f"### sample, n={SAMPLE_N}: served against in-process",
                    "",
                    sample_table(results, args.seconds),
                    "",
                ]
            # Written after every experiment, so an interrupted run keeps what it measured.
            write(args.out, command.strip(), args.seconds, args.repeats, time.monotonic() - began, sections)
    print(f"wrote {args.out}")


def write(out: Path, command: str, seconds: int, repeats: int, wall_s: float, sections: list[str]) -> None:
    lines = [
        "## Tuning (benchmarks/serving/tune.py)",
        "",
        f"Command: `{command}`; {seconds} s per locust run, medians of {repeats}, wall time {wall_s:.0f} s. "
        "Each variant changes one thing from the shipped configuration and serves only the model under test.",
        "",
        *sections,
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
