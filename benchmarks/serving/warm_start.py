"""The first calls after /ready says ready, against the warm median: is the first user served like the rest?

    python -m benchmarks.serving.warm_start [--repeats 3] [--warm 10]

Each repeat starts a fresh TorchServe under its supervisor (`ops.server.serving`, the shipped config) and,
the moment it is ready, times: the first REST request of each model, then the first gRPC interpolation
stream (32 frames, "stream": true) to its first frame; then `--warm` more of each, whose median is the
warm time. Prints a Markdown table of medians over the repeats and the ratio first / warm; writes
runs/warm_start.json. The supervisor's warm-up (ops/state.py, `warm_ups`) is what keeps the ratios near 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import requests

from benchmarks.shared.pages import markdown_table
from clients.ts_grpc import inference_pb2, inference_pb2_grpc
from digitlab import catalog
from ops import server as ops_server

STREAM = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 32, "stream": True}


def rest_ms(server: ops_server.RunningServer, model: str) -> float:
    began = time.perf_counter()
    answer = requests.post(
        f"{server.endpoints.inference}/predictions/{model}",
        json=catalog.model(model).canary,
        headers={"Authorization": f"Bearer {server.key()}"},
        timeout=60,
    )
    answer.raise_for_status()
    return (time.perf_counter() - began) * 1000


def first_frame_ms(stub: inference_pb2_grpc.InferenceAPIsServiceStub, key: str) -> float:
    request = inference_pb2.PredictionsRequest(model_name="interpolate", input={"data": json.dumps(STREAM).encode()})
    began = time.perf_counter()
    replies = stub.StreamPredictions(request, metadata=[("authorization", f"Bearer {key}")], timeout=60)
    next(replies)
    first = (time.perf_counter() - began) * 1000
    for _ in replies:  # the rest of the stream, so the next call meets an idle worker
        pass
    return first


def one_run(warm: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as workdir, ops_server.serving(Path(workdir)) as server:
        out: dict[str, dict[str, float]] = {}
        for model in server.models:  # first REST request of each model, right after ready
            out[f"REST {model}"] = {"first": rest_ms(server, model)}
        with grpc.insecure_channel(server.endpoints.grpc_inference) as channel:
            # Connected first: the client's own TCP and HTTP/2 set-up is not the server's warmth.
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
            out["gRPC interpolate stream, first frame"] = {"first": first_frame_ms(stub, server.key())}
            for name, row in out.items():
                if name.startswith("REST "):
                    times = [rest_ms(server, name.removeprefix("REST ")) for _ in range(warm)]
                else:
                    times = [first_frame_ms(stub, server.key()) for _ in range(warm)]
                row["warm"] = statistics.median(times)
        return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fresh servers, one after the other")
    p.add_argument("--warm", type=int, default=10, help="calls after the first, whose median is the warm time")
    p.add_argument("--out", type=Path, default=Path("runs/warm_start.json"))
    args = p.parse_args(argv)
    runs = [one_run(args.warm) for _ in range(args.repeats)]
    table = {name: {k: statistics.median(run[name][k] for run in runs) for k in ("first", "warm")} for name in runs[0]}
    cells = [
        [name, f"{r['first']:.1f}", f"{r['warm']:.1f}", f"{r['first'] / r['warm']:.2f}"] for name, r in table.items()
    ]
    print(markdown_table(["call", "first after ready, ms", "warm median, ms", "first / warm"], cells, "lrrr"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repeats": runs, "medians": table}, indent=2))
    return table


if __name__ == "__main__":
    main()
