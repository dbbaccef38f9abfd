"""The engine's ceiling: a TorchServe handler that parses each request's JSON and answers a fixed digit.

Served beside the shipped `palindrome` in the same TorchServe, with the same model config (batching,
workers, threads), by `benchmarks.peers.run` and the engine studies: the gap between the two is what our
handler costs. It imports neither torch nor the project, so what it measures is TorchServe's frontend and
worker protocol alone. torch-model-archiver copies this file into the archive by its path
(`benchmarks.shared.servers.NOOP_HANDLER`).
"""

from __future__ import annotations

import json
import os

ANSWER = '{"digit":1}'


class NoopHandler:
    def initialize(self, context) -> None:
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"  # raw bytes, as the shipped handlers ask for
        self.initialized = True

    def handle(self, batch: list[dict], context) -> list[str]:
        answers = []
        for row in batch:
            json.loads(row.get("body") or row.get("data") or b"{}")
            answers.append(ANSWER)
        return answers
