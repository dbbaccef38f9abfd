# The door's image: Debian's nginx, and the follower that keeps its upstreams to the ready replicas. Its
# configuration comes from outside, rendered from ops/nginx.conf.template: `make up` mounts
# build/compose/door/ as its prefix and runs `python3 -m ops.follow` (deploy/compose.yaml); Kubernetes
# mounts the ConfigMap and the key Secret and runs nginx alone, behind a Service that already sends only
# to ready pods (deploy/k8s/base/door.yaml).
#
#   make door-image     (built on the same bootstrapped Debian base as the serving image)
ARG BASE=digitlab-base:bookworm
FROM ${BASE}
# nginx-light: HTTP/2 and gRPC proxying. libnginx-mod-stream: the layer in front of them that caps connections
# per address before a request is read (ops/nginx.conf.template loads it). python3: the follower (stdlib only).
# No libnginx-mod-http-js: njs reads TorchServe's key per request, and the replicas behind this image run without
# token authorization (deploy/config.image.properties), so the rendered config loads no njs.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends nginx-light libnginx-mod-stream python3 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /door/logs /door/tmp \
 && chown -R www-data:www-data /door
# The build context is staged by deploy/image.py (build_door): web/, ops/ and the one core module the
# runtime needs (digitlab/keyfiles.py, digitlab/errors.py); the wheelhouse and everything else stay out.
# The try-it page, served at / without a key (door.CONTAINER_WEB_ROOT); outside the mounted prefix.
COPY web/ /srv/web/
COPY ops/ /app/ops/
COPY digitlab/ /app/digitlab/
ENV PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1
USER www-data
EXPOSE 8090 7090
# The template's paths are relative to the prefix; what nginx says before it has read its config goes to the
# container's log (-e stderr), everything after to the telemetry socket (ops/door_logs.py). The prefix outlives a
# container that was killed (a pod's emptyDir, compose's mount), and so would the unix sockets between the
# door's two layers, over which nginx will not bind: they are removed first. (Compose runs ops.follow instead,
# which does the same.)
ENTRYPOINT ["sh", "-c", "rm -f /door/door-*.sock && exec nginx -p /door/ -c nginx.conf -e stderr -g 'daemon off;'"]
