"""The product's runtime: what runs while models are served, on a laptop (`make serve`, `make door`) and in
a container alike.

    instance    the ground: one TorchServe instance's facts (config, endpoints, key and pid files, doors)
    supervisor  runs TorchServe, serves /ready /live /events, restarts stalled models, renews keys
    server      start / wait / stop an instance (make serve, make stop, the tests' fixture)
    ready       the readiness probe (the image's HEALTHCHECK, compose healthchecks)
    door        nginx in front of one or more instances: client keys, safe routes, per-client limits
    follow      a door whose replicas come and go (compose): only the ready ones are its upstreams

Every module imports `instance`; none imports a module above it (the supervisor reloads a door by running
the command the door registered, see `instance.register_door`). Build steps live in tools/, deployment
renderers in deploy/.
"""
