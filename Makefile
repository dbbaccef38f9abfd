# The two commands a user needs:   make serve   (install, build, start, wait)   and   make test.
# Everything else is a step of those, or a way to retrain / measure.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STUBS  := clients/ts_grpc/inference_pb2_grpc.py
CLI    := $(VENV)/bin/digitlab
WEIGHTS  := $(wildcard weights/*.pt)
SOURCES  := $(wildcard digitlab/*.py handlers/*.py model_config/*.yaml) tools/build_archives.py
ARCHIVES := model_store/.built
# MNIST for training: torchvision downloads it here when missing; DATA_DIR=/path/to/copy uses yours.
DATA_DIR ?= data
GAN_ARGS := --data-dir $(DATA_DIR) --seed 0 --betas 0.5 0.999 --sample-every 1000 --score-every 1000

.PHONY: help install cli lock api client-wheel lint stubs archives serve stop test test-fast clean weights-palindrome experiments weights-classifier weights-gan weights-digits gan-experiments load bench bench-peers rotate-keys soak test-recovery image door-image image-test up rollout down logs k8s-config FORCE

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@command -v java >/dev/null 2>&1 || { echo "TorchServe's frontend needs Java 17+: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) and re-run make."; exit 1; }
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement requirements.txt
	touch $@

install: $(STAMP)  ## create .venv with the pinned packages (the lock, requirements.txt); make cli adds the `digitlab` command

# requirements.txt is compiled from pyproject.toml's pinned extras by pip-tools; never edited by hand.
lock: $(STAMP)  ## re-compile requirements.txt from pyproject.toml (pip-compile; after changing a pin)
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra serve --extra train --extra bench --extra dev --output-file requirements.txt pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra peers --constraint requirements.txt --output-file requirements-peers.txt pyproject.toml

api: $(STAMP)  ## regenerate docs/api/openapi.json (the REST contract) from digitlab/schemas.py
	$(PY) -m tools.openapi

client-wheel: $(STUBS)  ## dist/digitlab-*.whl: the torch-free client (digitlab + digitlab.clients, stubs included)
	$(PY) -m pip wheel --no-deps --wheel-dir dist .

LINT_PATHS ?= .
lint: $(STAMP)  ## ruff: lint and format check (LINT_PATHS, default the whole repository); `ruff format .` fixes the format
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

$(STUBS): $(STAMP) tools/build_protos.py
	$(PY) -m tools.build_protos

stubs: $(STUBS)  ## extract TorchServe's .proto files from the wheel and generate gRPC stubs

# The `digitlab` command in .venv: this checkout installed in editable mode (its packages need the stubs).
$(CLI): $(STAMP) $(STUBS) pyproject.toml
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

cli: $(CLI)  ## the `digitlab` command in .venv/bin (an editable install of this checkout)

# The archives' model version (answers carry it in X-Model-Version): `make image IMAGE=digitlab:v2
# MODEL_VERSION=2.0` builds an image to roll out. The stamp changes only when the version does.
MODEL_VERSION ?= 1.0
VERSION_STAMP := build/model-version

$(VERSION_STAMP): FORCE
	@mkdir -p build && (echo '$(MODEL_VERSION)' | cmp -s - $@ || echo '$(MODEL_VERSION)' > $@)

FORCE:

$(ARCHIVES): $(STAMP) $(WEIGHTS) $(SOURCES) $(VERSION_STAMP)
	$(PY) -m tools.build_archives --version $(MODEL_VERSION)
	touch $@

archives: $(ARCHIVES)  ## build model_store/*.mar from weights/, digitlab/ and handlers/

serve: $(ARCHIVES) $(STUBS) $(CLI)  ## start TorchServe on 127.0.0.1 and wait until every worker is READY
	$(PY) -m ops.server start

stop:  ## stop the server started by make serve
	$(PY) -m ops.server stop

rotate-keys: $(STAMP)  ## give make serve's TorchServe new inference and management keys now (clients follow)
	$(PY) -m ops.server rotate-keys

test: $(ARCHIVES) $(STUBS) $(CLI)  ## the whole suite: pure functions, handlers, training smoke runs, real TorchServe end to end, recovery
	$(PY) -m pytest -m "not image"

test-recovery: $(ARCHIVES) $(STUBS)  ## only the recovery tests (stalled and killed workers, key expiry), printing their times (about 4 min)
	$(PY) -m pytest -s -m recovery

test-fast: $(STAMP) $(STUBS)  ## everything but the tests that start TorchServe
	$(PY) -m pytest -m "not server and not image and not recovery"

weights-palindrome: $(STAMP)  ## retrain the shipped palindrome LSTM (T 3..200) and RNN (T 3..15) (about 2 h, 1 thread)
	$(PY) -m training.palindrome --model lstm --min-length 3 --max-length 200 --encoding onehot --lr-schedule cosine \
		--steps 10000 --curriculum-steps 5000 --eval-every 500 --threads 1 --out weights/palindrome_lstm.pt
	$(PY) -m training.palindrome --model rnn --min-length 3 --max-length 15 --steps 6000 --lr-schedule cosine \
		--out weights/palindrome_rnn.pt

experiments: $(STAMP)  ## Part I grid, long memory to T = 200 (the LSTM's T = 200 run is the served checkpoint), training speed -> docs/palindrome/
	$(PY) -m training.experiments --out-dir docs/palindrome --seeds 0 1 2 --steps 5000 --threads 1
	$(PY) -m training.long_memory --lengths 20 30 50 100 200 --steps 6000 --threads 1 --per-length-every 10 \
		--adopt weights/palindrome_lstm.pt
	$(PY) -m benchmarks.models.train_speed --lengths 15 50 --steps 50 --repeats 5 --threads 1

weights-classifier: $(STAMP)  ## retrain the MNIST classifier that scores generators and finds digits (about 6 min)
	$(PY) -m training.classifier --data-dir $(DATA_DIR) --epochs 6 --seed 0 --out weights/classifier.pt

weights-gan: $(STAMP)  ## retrain the shipped generator: 1:1, R1 penalty, weight average, the checkpoint meeting every target with the best IS (about 45 min, 1 thread)
	$(PY) -m training.gan --schedule 1:1 --steps 100000 --ema 0.999 --r1 1 --score-n 5000 --keep-scored $(GAN_ARGS) \
		--sample-every 2000 --score-every 2000 --threads 1 --out-dir runs/gan-shipped
	$(PY) -m training.select_gan runs/gan-shipped --out weights/generator.pt
	$(PY) -m training.score_gan weights/generator.pt --n 10000 --data-dir $(DATA_DIR) --record
	$(PY) -m training.gan_figures --runs runs/gan-shipped --generator weights/generator.pt --out-dir docs/gan/shipped
	$(PY) -m training.truncation weights/generator.pt --n 10000 --data-dir $(DATA_DIR) --out-dir docs/gan/truncation

weights-digits: $(STAMP)  ## retrain the digit generator (AC-GAN, 60,000 iterations, about 25 min, 1 thread) and the judge that measures it -> docs/gan/digits/
	$(PY) -m training.judge --data-dir $(DATA_DIR) --epochs 10 --seed 1 --threads 1 --out weights/judge.pt
	$(PY) -m training.gan --conditional --schedule 1:1 --steps 60000 --ema 0.999 --r1 1 --score-n 5000 --keep-scored \
		$(GAN_ARGS) --sample-every 3000 --score-every 3000 --threads 1 --out-dir runs/gan-conditional
	cp runs/gan-conditional/best.pt weights/digit_generator.pt
	$(PY) -m training.fidelity --per-digit 32 --seeds 1 2 3 4 --threads 1 --out-dir docs/gan/digits

gan-experiments: $(STAMP)  ## the report's study: 1:1 and 5:2, 30k iterations each, plain -> docs/gan/ (about 60 min)
	$(PY) -m training.gan --schedule 1:1 --steps 30000 $(GAN_ARGS) --out-dir runs/gan-1-1
	$(PY) -m training.gan --schedule 5:2 --steps 30000 $(GAN_ARGS) --out-dir runs/gan-5-2
	$(PY) -m training.gan_figures --runs runs/gan-1-1 runs/gan-5-2 --generator weights/generator.pt --out-dir docs/gan

# `make load`: a bounded headless locust run against `make serve`; CSV + HTML report in $(LOAD_OUT)/.
USERS    ?= 10
RATE     ?= 5
DURATION ?= 30s
SCENARIO ?= MixedUser GrpcUser
LOAD_OUT ?= runs/load

load: $(STAMP) $(STUBS)  ## locust against make serve (USERS, RATE, DURATION, SCENARIO); stops by itself
	mkdir -p $(LOAD_OUT)
	PYTHONPATH=. $(VENV)/bin/locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 \
		-u $(USERS) -r $(RATE) -t $(DURATION) --stop-timeout 10 \
		--csv $(LOAD_OUT)/locust --html $(LOAD_OUT)/locust.html $(SCENARIO)

# The peers' own packages (LitServe, Ray Serve), pinned in requirements-peers.txt; Apache Bench from the distribution.
PEERS_STAMP := $(VENV)/.peers-installed
$(PEERS_STAMP): $(STAMP) requirements-peers.txt
	$(PY) -m pip install --quiet --requirement requirements-peers.txt
	touch $@

bench-peers: $(PEERS_STAMP) $(STUBS)  ## ab against TorchServe, its no-op ceiling, the door, LitServe, Ray Serve, in-process (about 6 min) -> docs/bench/peers.md
	@command -v ab >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get install -y -qq apache2-utils >/dev/null; } \
		|| { echo "ab not found: apt-get install apache2-utils"; exit 1; }
	$(PY) -m benchmarks.peers.run

bench: $(STAMP) $(STUBS)  ## TorchServe vs naive vs FastAPI vs in-process, side by side (about 20 min) -> docs/BENCHMARKS.md
	$(PY) -m benchmarks.serving.run

SOAK_MINUTES ?= 10
soak: $(STAMP) $(STUBS)  ## 10 min of mixed good and hostile traffic against make serve -> docs/soak/ (SOAK_MINUTES)
	$(PY) -m benchmarks.resilience.soak --minutes $(SOAK_MINUTES)

clean:  ## remove built files (archives, stubs, protos); keeps .venv and weights
	rm -rf model_store/*.mar $(ARCHIVES) clients/ts_grpc protos/*.proto build dist

# -- The door -------------------------------------------------------------------------------------
# nginx in front of `make serve` (ops/nginx.conf.template, ops/door.py): one client key, only the safe
# routes, per-client limits. Runtime files (config, keys, logs) in .door/. Where nginx is missing,
# ops.door says how to install it.
DOOR_HOST      ?= $(or $(GATEWAY_HOST),127.0.0.1)
DOOR_PORT      ?= $(or $(GATEWAY_PORT),8090)
DOOR_GRPC_PORT ?= $(or $(GATEWAY_GRPC_PORT),7090)
# TLS=1: both ports speak TLS (HTTPS, HTTP/1.1 and HTTP/2; gRPC over TLS), with $$DIGITLAB_TLS_CERT and
# $$DIGITLAB_TLS_KEY, else a local CA made on first start (.door/tls/ca.pem; docs/OPERATIONS.md, "TLS").
TLS ?=
TLS_FLAG := $(if $(filter 1 yes true on,$(TLS)),--tls)

.PHONY: door door-stop door-reload gateway gateway-stop gateway-reload

door: $(STAMP)  ## start the door (nginx) on DOOR_HOST:DOOR_PORT (REST) and DOOR_GRPC_PORT (gRPC), after make serve (TLS=1: over TLS); prints the try-it page's link
	$(PY) -m ops.door start --host $(DOOR_HOST) --port $(DOOR_PORT) --grpc-port $(DOOR_GRPC_PORT) $(TLS_FLAG)

door-reload: $(STAMP)  ## re-read the door's client keys and its TLS certificate, no restart (key or certificate rotation)
	$(PY) -m ops.door reload

door-stop: $(STAMP)  ## stop the door
	$(PY) -m ops.door stop

# The door's old name, kept for one release: the same targets (and GATEWAY_* variables, read above).
gateway: door
gateway-reload: door-reload
gateway-stop: door-stop

# -- Beyond one machine (docs/DEPLOY.md): the image, N replicas behind the door, Kubernetes ------
# Docker targets need a Docker daemon; run as root on a fresh Debian machine they install docker.io,
# start dockerd and bootstrap the Debian base image themselves (deploy/image.py).
IMAGE    ?= digitlab:latest
VARIANT  ?= cpu
REPLICAS ?= 2

image: $(ARCHIVES)  ## the serving image (VARIANT=cpu|cuda, IMAGE=name): Debian base, wheelhouse, archives, config
	$(PY) -m deploy.image build --tag $(IMAGE) --variant $(VARIANT)

door-image: $(STAMP)  ## the door's image (Debian's nginx), for make up and Kubernetes
	$(PY) -m deploy.image door

image-test: $(ARCHIVES) $(STUBS) $(CLI)  ## both images from scratch, then make up's compose under kills, scaling and a rollout (needs Docker; about 10 min)
	$(PY) -m pytest -m image -s tests/e2e/test_image.py tests/e2e/test_compose.py

up: door-image  ## REPLICAS TorchServe containers on a bridge network behind the door, published on DOOR_HOST:DOOR_PORT/DOOR_GRPC_PORT (after make image; TLS=1: over TLS)
	$(PY) -m deploy.compose up --replicas $(REPLICAS) --image $(IMAGE) --host $(DOOR_HOST) --port $(DOOR_PORT) --grpc-port $(DOOR_GRPC_PORT) $(TLS_FLAG)

rollout: $(STAMP)  ## replace make up's replicas one at a time with IMAGE, each new one serving once ready
	$(PY) -m deploy.compose rollout --image $(IMAGE)

down:  ## stop and remove what make up started
	$(PY) -m deploy.compose down

logs:  ## the last 100 log lines of make up's containers (SERVICE=door, replica or prometheus: of that one), JSON objects
	$(PY) -m deploy.compose logs $(SERVICE)

k8s-config: $(STAMP)  ## re-render deploy/k8s/base/door/nginx.conf from ops/nginx.conf.template
	$(PY) -m deploy.manifests render

# -- Monitoring (docs/OPERATIONS.md, "Metrics, alerts and the console"): Prometheus beside make up's replicas,
# published on 127.0.0.1:PROMETHEUS_PORT (9090), console at /consoles/digitlab.html. PROMETHEUS_IMAGE=an official
# image (quay.io/prometheus/prometheus:v2.53.3) instead of the one built here.
.PHONY: prometheus-image monitoring-check k8s-monitoring

prometheus-image: $(STAMP)  ## Prometheus's image for make up: Debian's prometheus on the same base (make up builds it when missing)
	$(PY) -m deploy.image prometheus

monitoring-check: $(STAMP)  ## promtool: both Prometheus configs, the rules and their tests (deploy/monitoring/; needs Debian's prometheus)
	$(PY) -m deploy.monitoring check

k8s-monitoring: $(STAMP)  ## re-render deploy/k8s/base/prometheus/ (the ConfigMap digitlab-prometheus) from deploy/monitoring/
	$(PY) -m deploy.monitoring render
