"""A minimal FastAPI + uvicorn server for `palindrome` and `sample`: what a user would write instead of TorchServe.

    python -m benchmarks.fastapi_server --port 8000

Baseline (d) of `make bench`. It does the work the handlers do, with the same core calls
(`benchmarks.work`: request schemas and limits, one forward per request, the same JSON answers), in one
process, without batching, worker processes or token auth. It answers on TorchServe's paths, so the
same locust users run against both.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from benchmarks.work import load_generator, load_palindrome, sample_answers
from digitlab.answers import palindrome_answers
from digitlab.schemas import (
    InvalidRequest,
    PalindromeRequest,
    PalindromeResponse,
    SampleRequest,
    SampleResponse,
    parse_request,
)


def create_app() -> FastAPI:
    palindrome_model, lengths = load_palindrome()
    generator, limits = load_generator("sample")
    app = FastAPI(title="digitlab on FastAPI (benchmark baseline)")

    @app.exception_handler(InvalidRequest)
    def refuse(_, err: InvalidRequest) -> JSONResponse:
        return JSONResponse(err.to_json(), status_code=err.status)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "Healthy"}

    # Plain `def` endpoints: FastAPI runs blocking work (torch) in its thread pool, as its docs advise.
    @app.post("/predictions/palindrome")
    def palindrome(body: Annotated[Any, Body()]) -> PalindromeResponse:
        return palindrome_answers(palindrome_model, [parse_request(PalindromeRequest, body, lengths)])[0]

    @app.post("/predictions/sample")
    def sample(body: Annotated[Any, Body()]) -> SampleResponse:
        request = parse_request(SampleRequest, body, limits)
        if request.format == "grid":
            raise InvalidRequest('this baseline answers "format": "png" or "raw" only')
        return sample_answers(generator, [request])[0]

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads: as a TorchServe worker's handler.threads, so only the server differs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
