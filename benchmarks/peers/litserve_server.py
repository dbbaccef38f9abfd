"""The serving layer under LitServe: a peer of TorchServe in `benchmarks.peers.run`, same model, same batching.

    python -m benchmarks.peers.litserve_server --port 8000        (needs the peers extra: make bench-peers)

`POST /predict` with a palindrome body answers what `POST /predictions/palindrome` answers: LitServe's
decode / predict / encode call `digitlab.serving` (parse, one `answer` per batch, the response model), with
the shipped model config's batch size and delay and one worker, as TorchServe runs it.
"""

# No `from __future__ import annotations`: LitServe builds its endpoint from decode_request's annotation at
# run time, and a string annotation makes FastAPI look for a query parameter instead of the JSON body.
import argparse
from typing import Any

import litserve as ls
import torch

from benchmarks.shared.shipped import service
from digitlab import catalog
from digitlab.schemas import PalindromeRequest

CONFIG = catalog.model("palindrome").model_config()


class PalindromeAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        torch.set_num_threads(CONFIG["handler"]["threads"])
        self.service = service("palindrome")

    def decode_request(self, request: dict[str, Any]) -> PalindromeRequest:
        return self.service.parse(request)

    def batch(self, inputs: list[PalindromeRequest]) -> list[PalindromeRequest]:
        return inputs

    def predict(self, batch: list[PalindromeRequest]) -> list[Any]:
        return self.service.answer(batch)

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: Any) -> dict[str, Any]:
        return output.model_dump()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    server = ls.LitServer(
        PalindromeAPI(),
        accelerator="cpu",
        workers_per_device=CONFIG["minWorkers"],
        max_batch_size=CONFIG["batchSize"],
        batch_timeout=CONFIG["maxBatchDelay"] / 1000,
    )
    # Access logs off, as TorchServe's per-request INFO lines are in the shipped config.
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
