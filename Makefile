# The two commands a user needs:   make serve   (install, build, start, wait)   and   make test.
# Everything else is a step of those, or a way to retrain / measure.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STUBS  := clients/ts_grpc/inference_pb2_grpc.py
WEIGHTS  := $(wildcard weights/*.pt)
SOURCES  := $(wildcard digitlab/*.py handlers/*.py model_config/*.yaml) tools/build_archives.py
ARCHIVES := model_store/.built
# MNIST for training: torchvision downloads it here when missing; DATA_DIR=/path/to/copy uses yours.
DATA_DIR ?= data
GAN_ARGS := --data-dir $(DATA_DIR) --seed 0 --betas 0.5 0.999 --sample-every 1000 --score-every 1000

.PHONY: help install stubs archives serve stop test test-fast clean weights-palindrome experiments weights-classifier weights-gan gan-experiments load bench

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@command -v java >/dev/null 2>&1 || { echo "TorchServe's frontend needs Java 17+: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) and re-run make."; exit 1; }
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement requirements.txt
	touch $@

install: $(STAMP)  ## create .venv with the pinned packages

$(STUBS): $(STAMP) tools/build_protos.py
	$(PY) -m tools.build_protos

stubs: $(STUBS)  ## extract TorchServe's .proto files from the wheel and generate gRPC stubs

$(ARCHIVES): $(STAMP) $(WEIGHTS) $(SOURCES)
	$(PY) -m tools.build_archives
	touch $@

archives: $(ARCHIVES)  ## build model_store/*.mar from weights/, digitlab/ and handlers/

serve: $(ARCHIVES) $(STUBS)  ## start TorchServe on 127.0.0.1 and wait until every worker is READY
	$(PY) -m tools.server start

stop:  ## stop the server started by make serve
	$(PY) -m tools.server stop

test: $(ARCHIVES) $(STUBS)  ## the whole suite: pure functions, handlers, training smoke runs, real TorchServe end to end
	$(PY) -m pytest

test-fast: $(STAMP) $(STUBS)  ## everything but the tests that start TorchServe
	$(PY) -m pytest -m "not server"

weights-palindrome: $(STAMP)  ## retrain the shipped palindrome LSTM (T 3..100) and RNN (T 3..15) (about 12 min)
	$(PY) -m training.palindrome --model lstm --min-length 3 --max-length 100 --encoding onehot --lr-schedule cosine \
		--steps 6000 --curriculum-steps 3000 --eval-every 500 --threads 1 --out weights/palindrome_lstm.pt
	$(PY) -m training.palindrome --model rnn --min-length 3 --max-length 15 --steps 6000 --lr-schedule cosine \
		--out weights/palindrome_rnn.pt

experiments: $(STAMP)  ## Part I grid, long memory to T = 200, training speed -> docs/palindrome/ (50 min on 1 core to T = 100, more for 200)
	$(PY) -m training.experiments --out-dir docs/palindrome --seeds 0 1 2 --steps 5000 --threads 1
	$(PY) -m training.long_memory --lengths 20 30 50 100 200 --steps 6000 --threads 1 --per-length-every 10
	$(PY) -m benchmarks.train_speed --lengths 15 50 --steps 50 --repeats 5 --threads 1

weights-classifier: $(STAMP)  ## retrain the MNIST classifier that scores generators and finds digits (about 6 min)
	$(PY) -m training.classifier --data-dir $(DATA_DIR) --epochs 6 --seed 0 --out weights/classifier.pt

weights-gan: $(STAMP)  ## retrain the shipped generator: 1:1 for 30k iterations, 30k more with a weight average (about 50 min)
	$(PY) -m training.gan --schedule 1:1 --steps 30000 $(GAN_ARGS) --out-dir runs/gan-1-1
	$(PY) -m training.gan --schedule 1:1 --steps 60000 --resume --ema 0.999 $(GAN_ARGS) --out-dir runs/gan-1-1
	cp runs/gan-1-1/generator.pt weights/generator.pt
	$(PY) -m training.score_gan weights/generator.pt --n 10000 --data-dir $(DATA_DIR) --record

gan-experiments: weights-gan  ## the 5:2 schedule for comparison, then the figures in docs/gan/ (about 35 min more)
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

bench: $(STAMP) $(STUBS)  ## TorchServe vs naive vs FastAPI vs in-process, side by side (about 12 min) -> docs/BENCHMARKS.md
	$(PY) -m benchmarks.run

clean:  ## remove built files (archives, stubs, protos); keeps .venv and weights
	rm -rf model_store/*.mar $(ARCHIVES) clients/ts_grpc protos/*.proto build
