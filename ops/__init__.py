"""The product's runtime: what runs while models are served, on a laptop (`make serve`, `make door`) and in
a container alike.

    instance     the ground: one TorchServe instance's facts (config, endpoints, key and pid files, doors)
    properties   TorchServe's .properties files, read and written so that they round-trip
    probe        one way to ask an HTTP endpoint: an answer, a refusal, or silence
    supervisor   the command that runs TorchServe and keeps it honest, wiring the modules below:
      launcher     starts, watches and stops TorchServe's process group; relays its console
      api          TorchServe's management, metrics and inference APIs as a client
      state        what is known of each model, and the checks that decide what to do about it
      workers      the workers' processes and CPU (psutil)
      watch        the watch loop: canaries, warm-ups, restarts of stalled models, drain
      renewal      TorchServe's keys renewed before they expire; registered doors reloaded and capped
      readiness    /ready, /live and /events
    server       start / wait / stop an instance (make serve, make stop, the tests' fixture)
    ready        the readiness probe (the image's HEALTHCHECK, compose healthchecks)
    door         nginx in front of one or more instances: client keys, safe routes, per-client limits
      door_settings, door_keys, door_render, door_nginx: its typed settings, keys, configs, process
    follow       a door whose replicas come and go (compose): only the ready ones are its upstreams

Every module imports `instance`; none imports a module above it (the supervisor reloads a door by running
the command the door registered, see `instance.register_door`). Build steps live in tools/, deployment
renderers in deploy/.
"""
