# The door's image: Debian's nginx, and the follower that keeps its upstreams to the ready replicas. Its
# configuration comes from outside, rendered from ops/nginx.conf.template: `make up` mounts
# build/compose/door/ as its prefix and runs `python3 -m ops.follow` (deploy/compose.yaml); Kubernetes
# mounts the ConfigMap and the key Secret and runs nginx alone, behind a Service that already sends only
# to ready pods (deploy/k8s/base/door.yaml).
#
#   make door-image     (built on the same bootstrapped Debian base as the serving image)
ARG BASE=digitlab-base:bookworm
FROM ${BASE}
# nginx-light: HTTP/2 and gRPC proxying are all the door needs. python3: the follower (stdlib only).
RUN apt-get update \
 && apt-get install --yes --no-install-recommends nginx-light python3 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /door/logs /door/tmp \
 && chown -R www-data:www-data /door
# The build context is staged by deploy/image.py (build_door): web/, ops/ and the one core module the
# runtime needs (digitlab/keyfiles.py); the wheelhouse and everything else stay out.
# The try-it page, served at / without a key (door.CONTAINER_WEB_ROOT); outside the mounted prefix.
COPY web/ /srv/web/
COPY ops/ /app/ops/
COPY digitlab/ /app/digitlab/
ENV PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1
USER www-data
EXPOSE 8090 7090
# The template's paths are relative to the prefix; errors go to the container's log.
ENTRYPOINT ["nginx", "-p", "/door/", "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]
