# The door's image: Debian's nginx, nothing else. Its configuration comes from outside, rendered
# from ops/nginx.conf.template: `make up` mounts build/compose/door/ as its prefix; Kubernetes
# mounts the ConfigMap and the key Secret (deploy/k8s/base/door.yaml).
#
#   make door-image     (built on the same bootstrapped Debian base as the serving image)
ARG BASE=digitlab-base:bookworm
FROM ${BASE}
# nginx-light: HTTP/2 and gRPC proxying are all the door needs.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /door/logs /door/tmp \
 && chown -R www-data:www-data /door
# The try-it page, served at / without a key (door.CONTAINER_WEB_ROOT); outside the mounted prefix.
# The build context is web/ itself (deploy/image.py, build_door).
COPY . /srv/web/
USER www-data
EXPOSE 8090 7090
# The template's paths are relative to the prefix; errors go to the container's log.
ENTRYPOINT ["nginx", "-p", "/door/", "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]
