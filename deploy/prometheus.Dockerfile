# Prometheus for `make up` (deploy/compose.yaml): Debian's prometheus package on the same bootstrapped base as
# the serving image, so that no registry is needed.
#
#   make prometheus-image      (python -m deploy.image prometheus; `make up` builds it when missing)
#
# Its configuration comes from outside: compose mounts deploy/monitoring/ (prometheus.compose.yml, rules.yml,
# consoles/) and names them on the command line. Users who pull the official image instead set
# PROMETHEUS_IMAGE=quay.io/prometheus/prometheus:v2.53.3 (or prom/prometheus): same command line, same paths.
#
# Debian's build has no Kubernetes service discovery (kubernetes_sd_configs): the Kubernetes manifests run the
# official image (deploy/k8s/base/prometheus.yaml).
ARG BASE=digitlab-base:bookworm
FROM ${BASE}
# Its own `prometheus` user (the package's). No service is started during the build (policy-rc.d, where the
# base has none). The console libraries (prom.lib, menu.lib) ship as examples in Debian's package; they go
# where the official image keeps them, so that one --web.console.libraries serves both.
RUN own_policy="" \
 && if [ ! -e /usr/sbin/policy-rc.d ]; then \
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1; fi \
 && apt-get update \
 && apt-get install --yes --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi \
 && mkdir -p /usr/share/prometheus/console_libraries /usr/share/prometheus/consoles /prometheus \
 && cp /usr/share/doc/prometheus/examples/console_libraries/prom.lib \
       /usr/share/doc/prometheus/examples/console_libraries/menu.lib /usr/share/prometheus/console_libraries/ \
 && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
# The official image's defaults; compose gives its own (deploy/compose.yaml).
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", \
     "--web.console.libraries=/usr/share/prometheus/console_libraries", \
     "--web.console.templates=/usr/share/prometheus/consoles"]
