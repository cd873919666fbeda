# text2image-search: `make demo` runs the whole path on loopback, `make test` runs every test.
# Everything installs into local virtual environments from the project's own requirement files.

PYTHON ?= python3
VENV := .venv
TRITON_VENV := .venv-triton
DEPLOY_VENV := .venv-deploy
ORT_GPU_VENV := .venv-ort-gpu
BIN := $(VENV)/bin
PROTO := protos/text2image/v1/text2image.proto
PROTO_OUT := protos/text2image/v1/text2image_pb2.py
# buf (lint and breaking-change checks of the proto) from the npm registry, pinned by tools/package-lock.json.
BUF := tools/node_modules/.bin/buf
PYTEST_ARGS ?=

# The extras of pyproject.toml that the development environment holds (all of them).
EXTRAS := gateway,reindex,web,export,relevance,devstack,dev

.PHONY: install protos lint-proto docs-api demo demo-shapes up test lint lint-deploy browser containers images promtool test-unit test-integration export gateway-env ort-gpu-env ort-gpu-cuda bench bench-quick bench-levers bench-floor bench-ef bench-gpu bench-store bench-scale bench-tiers bench-gateway bench-overload bench-relevance chaos clean

install: $(VENV)/.installed $(TRITON_VENV)/.installed $(DEPLOY_VENV)/.installed $(ORT_GPU_VENV)/.installed $(PROTO_OUT) tools/node_modules/.installed

# Every extra, with the exact versions of constraints.txt; the project itself is editable, and so is
# text2image-client (client/: the stubs and the typed client), which the server depends on.
$(VENV)/.installed: constraints.txt requirements-nodeps.txt pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (the Triton python-backend stub embeds 3.11); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ./client -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

$(TRITON_VENV)/.installed: requirements-triton.txt requirements-triton-nodeps.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet -r requirements-triton.txt
	$(TRITON_VENV)/bin/pip install --quiet --no-deps -r requirements-triton-nodeps.txt
	touch $@

# onnxruntime-gpu apart from the main environment's onnxruntime (the two clash): the fp16 parity check on
# CUDA of `t2i export --precision fp16`, `make bench-gpu`'s ONNX towers, and the test that holds its CPU
# embeddings to the main environment's (tests/integration/test_ort_gpu_env.py). A 256 MB wheel; about
# 35 s and 440 MB here. On a GPU host it also needs CUDA 13 and cuDNN 9: the system's, or `make ort-gpu-cuda`'s wheels.
$(ORT_GPU_VENV)/.installed: requirements-ort-gpu.txt
	$(PYTHON) -m venv $(ORT_GPU_VENV)
	$(ORT_GPU_VENV)/bin/pip install --quiet -r requirements-ort-gpu.txt
	touch $@

ort-gpu-env: $(ORT_GPU_VENV)/.installed

# CUDA 13 and cuDNN 9 as wheels into .venv-ort-gpu, for a GPU host without them (well over a GB; requirements-ort-gpu-cuda.txt).
ort-gpu-cuda: $(ORT_GPU_VENV)/.installed
	$(ORT_GPU_VENV)/bin/pip install --quiet -c requirements-ort-gpu.txt -r requirements-ort-gpu-cuda.txt

# The deploy linters (checkov, kubernetes-validate, hadolint, yamllint) apart from the main environment.
$(DEPLOY_VENV)/.installed: requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet -r requirements-deploy.txt
	touch $@

# The stubs, made the one way the image builds make them too (protos/build_stubs.py).
$(PROTO_OUT): $(PROTO) protos/build_stubs.py $(VENV)/.installed
	$(BIN)/python protos/build_stubs.py

protos: $(PROTO_OUT)

# buf at the version of tools/package-lock.json (npm ci; no install scripts run: the binary comes in
# its platform package, @bufbuild/buf-linux-x64 here).
tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# The proto contract (buf.yaml): buf lint (STANDARD, two exceptions with their reasons) on the live
# module, and buf breaking (FILE) against every released copy in protos/released/ (no git tags, no
# network). tests/unit/test_proto_contract.py runs the same and plants a breaking change and a lint error.
lint-proto: tools/node_modules/.installed
	$(BUF) lint
	for released in protos/released/v*/; do $(BUF) breaking --against $$released || exit 1; done

# docs/api.md from the proto's comments (protos/api_doc.py); tests/unit/test_api_doc.py fails when it is stale.
docs-api: $(VENV)/.installed
	$(BIN)/python protos/api_doc.py

# Export CLIP (the real checkpoint, or random ViT-B/32 weights when the hub is unreachable),
# start Milvus, Triton and the gateway on loopback, index sample photos, query, stop; then the
# shipped shapes model: a fresh evaluation set and a shifted one indexed, queries with right hits marked.
demo: install
	$(BIN)/t2i demo
	$(BIN)/t2i shapes-demo

# The seed project's experiment, retrained on the CPU (base on web-style captions, FLYP, hard
# negatives, the wide generator; cached by their inputs), each model evaluated through the gateway.
demo-shapes: install
	$(BIN)/t2i shapes-demo --retrain

# Keep the stack running until Ctrl-C with the shipped shapes model and its evaluation images indexed
# (gateway on 127.0.0.1:50051, the search page on http://127.0.0.1:8080/; `t2i up` alone serves ViT-B/32).
up: install
	$(BIN)/t2i up --shapes

export: install
	$(BIN)/t2i export --model $(or $(MODEL),openai/clip-vit-base-patch32)

# Lint, format, types and the import-layer contract, then unit tests, then integration tests
# against real Triton, Milvus and gRPC servers that the test session starts on free loopback
# ports and stops by process id.
test: install lint browser promtool containers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Headless Chromium and its driver from Debian's packages, for the search page's browser test.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing Debian's chromium and chromium-driver (the browser test needs them)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver > /dev/null; \
	fi
	@/usr/bin/chromium --version

# Container images, built and run with podman from Debian's packages (there is no Docker engine or
# image registry here). podman reads the project's containers.conf (runc, cgroupfs, ulimits it can set).
export CONTAINERS_CONF := $(CURDIR)/docker/containers.conf

containers:
	@if ! command -v podman > /dev/null || ! command -v buildah > /dev/null || ! command -v mmdebstrap > /dev/null || ! command -v runc > /dev/null || [ ! -x /usr/bin/catatonit ] || [ ! -x /usr/lib/cni/dnsname ]; then \
		echo "installing Debian's podman, buildah, mmdebstrap, runc, catatonit and the dnsname CNI plugin (the image builds and their tests need them; compose's services find each other by name through dnsname)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman buildah mmdebstrap runc catatonit golang-github-containernetworking-plugin-dnsname > /dev/null; \
	fi
	@podman --version

# The runtime and tools images, and the local CPU Triton and Milvus that k8s/overlays/local runs
# (docker/*.Dockerfile), on a Debian base made here from Debian's packages, with the host's pip
# settings, tagged localhost/text2image-search[-tools|-triton-cpu|-milvus]:<version> (docker/build.py;
# sizes in docs/deploy.md). tests/integration/test_images.py and test_kube_play.py build and run them.
images: containers
	$(PYTHON) docker/build.py

# promtool from Debian's prometheus package, for the alert and dashboard tests (promtool check/test rules).
promtool:
	@if ! command -v promtool > /dev/null; then \
		echo "installing Debian's prometheus package (the alert tests need its promtool)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus > /dev/null; \
	fi
	@promtool --version | head -1

lint: install lint-deploy lint-proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The deployment: render every overlay, validate the objects against Kubernetes 1.32's schemas
# (custom resources are checked by tests/unit/test_k8s_policy.py), run checkov on the rendered
# manifests and the Dockerfiles (skips justified in .checkov.yaml), hadolint and yamllint.
RENDERED := data/k8s-rendered
lint-deploy: $(DEPLOY_VENV)/.installed
	@mkdir -p $(RENDERED)
	for overlay in dev prod; do kubectl kustomize k8s/overlays/$$overlay > $(RENDERED)/$$overlay.yaml || exit 1; done
	$(DEPLOY_VENV)/bin/kubernetes-validate --strict --kubernetes-version 1.32.0 --quiet $(RENDERED)/dev.yaml $(RENDERED)/prod.yaml
	$(DEPLOY_VENV)/bin/checkov --config-file .checkov.yaml --framework kubernetes -f $(RENDERED)/dev.yaml -f $(RENDERED)/prod.yaml
	$(DEPLOY_VENV)/bin/checkov --config-file .checkov.yaml --framework dockerfile $(foreach dockerfile,$(wildcard docker/*.Dockerfile),-f $(dockerfile))
	$(DEPLOY_VENV)/bin/hadolint $(wildcard docker/*.Dockerfile)
	$(DEPLOY_VENV)/bin/yamllint --strict --config-file .yamllint.yaml k8s compose.yaml compose.cpu.yaml compose.local.yaml .checkov.yaml .yamllint.yaml

# A gateway-only environment (no torch, transformers or optimum) in $(GATEWAY_ENV), built the way a
# runtime image installs the project; prints its size next to the full development environment's.
GATEWAY_ENV ?= /tmp/t2i-gateway-env
gateway-env: $(PROTO_OUT)
	rm -rf $(GATEWAY_ENV) && $(PYTHON) -m venv $(GATEWAY_ENV)
	$(GATEWAY_ENV)/bin/pip install --quiet -c constraints.txt ./client ".[gateway,reindex,web]"
	$(GATEWAY_ENV)/bin/python -c 'import sys, gateway.server, reindex.main, web.server; heavy = [m for m in ("torch", "transformers", "optimum") if m in sys.modules]; sys.exit(f"loaded {heavy}" if heavy else 0)'
	cd /tmp && $(GATEWAY_ENV)/bin/python -m gateway.server --help > /dev/null
	@du -sh $(GATEWAY_ENV) $(VENV)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# Every benchmark installs its extras (plots) first, then runs its module.
RUN_BENCH = $(BIN)/pip install --quiet -r requirements-bench.txt && $(BIN)/python -m

# The product against the hand-written baseline in one run (bench/results/*.json, plots, docs/benchmarks.md).
bench: install
	$(RUN_BENCH) bench.run

bench-quick: install
	$(RUN_BENCH) bench.run --quick

# Each speed lever changed on its own against the shipped config (bench/results/*-levers.json, docs/benchmarks.md).
bench-levers: install
	$(RUN_BENCH) bench.levers

# The models alone with onnxruntime on this CPU: the floors the targets meet (docs/benchmarks.md).
bench-floor: install
	$(RUN_BENCH) bench.floor

# HNSW ef against recall and SearchText latency at 100k and 1M vectors (about 45 minutes; docs/benchmarks.md).
bench-ef: install
	$(RUN_BENCH) bench.ef_sweep

# The GPU path (towers in fp16, CUDA graphs, nvJPEG) on a host with a CUDA GPU; GPU_PYTHON must have CUDA torch and torchvision.
# It stops first, saying so, where no CUDA GPU is visible; then, beside PyTorch, the exported ONNX towers through onnxruntime-gpu's
# CUDA and TensorRT execution providers (bench/gpu_onnx.py: exported with .venv's t2i, timed in .venv-ort-gpu).
GPU_PYTHON ?= python3
bench-gpu:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m bench.gpu --check
	$(MAKE) $(VENV)/.installed $(ORT_GPU_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m bench.gpu

# The fault and abuse campaign on a local stack of its own (docs/reliability.md); 'make test' runs a short one.
chaos: install
	$(BIN)/python -m bench.chaos

# Load shedding at 4x the saturating concurrency and at 256 clients, against an unbounded gateway (docs/benchmarks.md).
bench-overload: install
	$(RUN_BENCH) bench.overload

# The first minute after SERVING against 5 minutes on (reindex img/s, SearchText p50), warm-up on and off, on a restarted
# local stack (bench/results/*-first-minute.json; docs/benchmarks.md; about 15 minutes). FIRST_MINUTE_ARGS=--quick: about 3.
.PHONY: bench-first-minute
FIRST_MINUTE_ARGS ?=
bench-first-minute: install
	$(RUN_BENCH) bench.first_minute $(FIRST_MINUTE_ARGS)

# The shapes demo's numbers as JSON (bench/results/*-relevance.json; docs/relevance.md).
bench-relevance: install
	$(RUN_BENCH) bench.relevance

# CPU ms per query of the gateway, Triton and Milvus at c=16 (bench/results/*-tiers.json; docs/benchmarks.md; about 6 minutes).
bench-tiers: install
	$(RUN_BENCH) bench.tiers

# The gateway's CPU per SearchText at c=16 against the gateway of GATEWAY_BASELINE in the same run, the grpc.aio floor under it and a
# py-spy flame graph (bench/results/*-gateway-cpu.json and gateway-profile/; docs/benchmarks.md; about 8 minutes).
GATEWAY_BASELINE ?= 1c3004c
bench-gateway: install
	$(RUN_BENCH) bench.gateway_cpu --baseline $(GATEWAY_BASELINE) --profile bench/results/gateway-profile

# Milvus server against Milvus Lite on the same vectors (writes bench/results/vector-store-*.json).
bench-store: install
	$(RUN_BENCH) bench.vector_store

# N clustered vectors (10M by default) on two quantized/disk indexes: ingest, build, RAM, disk, recall@10, p50/p99 (bench/results/*-scale-N.json;
# docs/benchmarks.md). Hours at 10M: run it in the background, e.g. nohup make bench-scale SCALE_ARGS='--size 1000000' &. It resumes when run again.
SCALE_ARGS ?=
bench-scale: install
	$(RUN_BENCH) bench.scale $(SCALE_ARGS)

clean:
	rm -rf data .pytest_cache
	find model_repository -name '*.onnx' -delete
