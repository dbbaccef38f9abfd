"""Load and benchmark harnesses, one sub-package per study; they measure, they are not tests.

- serving/     `make bench`: TorchServe against naive, FastAPI and in-process (docs/BENCHMARKS.md), and the
               studies its report appends: the tuning run, the first call after ready.
- peers/       `make bench-peers`: TorchServe against its no-op ceiling, the door, LitServe, Ray Serve.
- engine/      the engine tuned by measurement: batching and workers, frontend settings, the GAN paths.
- profiles/    where a request's time goes: py-spy in the worker, Java Flight Recorder in the frontend.
- door/        the door's overhead and protection, and the bytes of log per request.
- resilience/  long runs that count failures: replicas killed and rolled out under load, the soak.
- models/      the models themselves: latency of the costliest requests, training speed.
- shared/      what several studies use: the one percentile, the one Markdown table writer, the load
               generators (locust, ab), the shipped services, the in-process target, the no-op handler.

Every entry point runs as `python -m benchmarks.<study>.<module>`. A study imports shared/, never another study.
"""
