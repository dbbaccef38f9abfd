"""A minimal FastAPI + uvicorn server for `palindrome` and `sample`: what a user would write instead of TorchServe.

    python -m benchmarks.serving.fastapi_server --port 8000

Baseline (d) of `make bench`. It calls the serving layer the handlers call (digitlab.serving: the same
request schemas and limits, the same answers), in one process, one request per `answer`, without
batching, worker processes or token auth. It answers on TorchServe's paths, so the same locust users
run against both.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import Body, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from benchmarks.shared.shipped import service
from digitlab.schemas import InvalidRequest, PalindromeResponse, SampleResponse
from digitlab.serving import Answer, Binary, Service


def reply(answer: Answer) -> BaseModel | Response:
    """The serving layer's answer as FastAPI sends it: a model as JSON, `Binary` as its media type."""
    if isinstance(answer, InvalidRequest):
        raise answer
    if isinstance(answer, Binary):
        return Response(answer.data, media_type=answer.media_type, headers=answer.headers)
    return answer


def answer_one(served: Service, body: Any, request: Request) -> BaseModel | Response:
    return reply(served.answer([served.parse(body, request.headers.get("accept", ""))])[0])


def create_app() -> FastAPI:
    palindrome_service, sample_service = service("palindrome"), service("sample")
    app = FastAPI(title="digitlab on FastAPI (benchmark baseline)")

    @app.exception_handler(InvalidRequest)
    def refuse(_, err: InvalidRequest) -> JSONResponse:
        return JSONResponse(err.to_json(), status_code=err.status)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "Healthy"}

    # Plain `def` endpoints: FastAPI runs blocking work (torch) in its thread pool, as its docs advise.
    @app.post("/predictions/palindrome", response_model=PalindromeResponse)
    def palindrome(body: Annotated[Any, Body()], request: Request) -> Any:
        return answer_one(palindrome_service, body, request)

    @app.post("/predictions/sample", response_model=SampleResponse)
    def sample(body: Annotated[Any, Body()], request: Request) -> Any:
        return answer_one(sample_service, body, request)

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads: as a TorchServe worker's handler.threads, so only the server differs",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
