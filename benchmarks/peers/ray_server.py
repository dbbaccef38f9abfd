"""The serving layer under Ray Serve: a peer of TorchServe in `benchmarks.peers.run`, same model, same batching.

    python -m benchmarks.peers.ray_server --port 8000        (needs the peers extra: make bench-peers)

`POST /predict` with a palindrome body answers what `POST /predictions/palindrome` answers: one Ray Serve
replica (one process, one CPU) calls `digitlab.serving` (parse, one `answer` per batch, the response model),
batched by `@serve.batch` with the shipped model config's batch size and delay, as TorchServe runs it.
Ray starts with this machine's cores, no dashboard and a small object store; access logs off.
"""

import argparse
import signal
import sys
import time
from typing import Any

import ray
import torch
from ray import serve
from starlette.requests import Request

from benchmarks.shared.shipped import service
from digitlab import catalog
from digitlab.schemas import PalindromeRequest

CONFIG = catalog.model("palindrome").model_config()
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's shared memory: nothing large crosses it here


@serve.deployment(
    num_replicas=CONFIG["minWorkers"],
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=64,  # above the 32 clients: requests wait in the batch queue, not in front of it
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
)
class Palindrome:
    def __init__(self) -> None:
        torch.set_num_threads(CONFIG["handler"]["threads"])
        self.service = service("palindrome")

    @serve.batch(max_batch_size=CONFIG["batchSize"], batch_wait_timeout_s=CONFIG["maxBatchDelay"] / 1000)
    async def answer(self, requests: list[PalindromeRequest]) -> list[dict[str, Any]]:
        return [a.model_dump() for a in self.service.answer(requests)]

    async def __call__(self, request: Request) -> dict[str, Any]:
        return await self.answer(self.service.parse(await request.json()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    # Loopback only: Ray's processes talk to each other on this address, never on the machine's network.
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Palindrome.bind(), name="palindrome", route_prefix="/predict")
    print(f"ray serve answering on http://127.0.0.1:{args.port}/predict", flush=True)

    def stop(signum: int, _frame: object) -> None:
        serve.shutdown()
        ray.shutdown()  # the local cluster (GCS, raylet, workers) goes with this process
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:  # serve.run returns once deployed; the peers harness stops this process (SIGTERM)
        time.sleep(3600)


if __name__ == "__main__":
    main()
