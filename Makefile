# a11i: `make run` starts the sidecar and the dashboard on embedded defaults; `make test` installs and runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install encodings system node-system images assets otelcol zipkin cluster-bins cluster e2e e2e-node e2e-kind run test lint typecheck unit integration bench bench-peers clean

NATIVE_SOURCES := $(wildcard native/bpe/Cargo.* native/bpe/pyproject.toml native/bpe/*.pyi native/bpe/src/*.rs)

## install: the venv with the project (editable) and its dev extras, and the compact tokenizer
## (native/bpe, Rust: built once per source by tools/native/build.sh, cached in ~/.cache/a11i)
$(VENV)/.installed: pyproject.toml constraints.txt $(NATIVE_SOURCES) tools/native/build.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@if wheel="$$(MATURIN=$(abspath $(BIN))/maturin tools/native/build.sh)"; then \
	  $(PY) -m pip install --quiet --no-deps --force-reinstall "$$wheel"; \
	elif [ $$? = 4 ] && [ -z "$${A11I_REQUIRE_NATIVE:-}" ]; then \
	  echo "make: without cargo the sidecar counts with tiktoken (the same tokens, ~60 MiB more)" >&2; \
	else exit 1; fi
	touch $@

## encodings: the tiktoken files, offline (from the litellm wheel on PyPI, hash-verified)
encodings: $(VENV)/.installed
	$(PY) -m a11i.sidecar.encodings fetch

## system: Debian's redis-server, prometheus and chromium, which the tests start on loopback, and
## Java and Maven, which run and fetch the tests' Zipkin server (installed when absent)
SYSTEM_PACKAGES := redis-server:redis-server prometheus:prometheus chromium:chromium \
  java:openjdk-17-jre-headless mvn:maven
system:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "the tests need Debian packages:$$missing (sudo apt-get install$$missing)" >&2; exit 1; \
	  fi; \
	fi

## node-system: what the test node runs and builds images with, from Debian: containerd, runc,
## the CNI plugins, conntrack and iptables (kube-proxy), busybox-static, gcc (the pause image),
## buildah and mmdebstrap (the project's images); installed when absent (docs/cluster.md)
NODE_PACKAGES := /usr/bin/containerd:containerd /usr/sbin/runc:runc \
  /usr/lib/cni/bridge:containernetworking-plugins /usr/sbin/conntrack:conntrack \
  /usr/sbin/iptables:iptables /bin/ip:iproute2 /bin/busybox:busybox-static /usr/bin/gcc:gcc \
  /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev /usr/bin/buildah:buildah /usr/bin/mmdebstrap:mmdebstrap
node-system:
	@missing=""; for pair in $(NODE_PACKAGES); do \
	  test -e "$${pair%%:*}" || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "the test node needs Debian packages:$$missing (sudo apt-get install$$missing)" >&2; exit 1; \
	  fi; \
	fi

## assets: the dashboard's chart library (uPlot) from the npm registry, pinned with its hash by
## package-lock.json and verified (fetched when absent or when the lock file changed; no npm)
UPLOT := a11i/dashboard/static/vendor/uPlot.iife.min.js
assets: $(UPLOT)
$(UPLOT): a11i/dashboard/package-lock.json a11i/dashboard/assets.py
	a11i/dashboard/build-assets.sh

## otelcol: the OpenTelemetry Collector the integration tests export to, built with ocb from the
## Go module proxy into ~/.cache/a11i (instant once built, about 2 min cold)
otelcol:
	tools/otelcol/build.sh >/dev/null

## cluster-bins: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet,
## kube-proxy, helm and coredns from the Go module proxy into ~/.cache/a11i (docs/cluster.md;
## ~14 min once, then instant)
cluster-bins:
	bash tools/cluster/build.sh >/dev/null

## zipkin: the Zipkin server (an executable jar with its UI) the waterfall test stores traces in,
## fetched with Maven from Maven Central into ~/.cache/a11i (130 MB once, then instant)
zipkin: system
	bash tools/zipkin/fetch.sh >/dev/null

## images: Dockerfile.sidecar and Dockerfile.operator built with buildah on a bookworm + python3
## base made by mmdebstrap, saved as archives in ~/.cache/a11i/images under the chart's image
## names (docs/images.md; ~5 min once, then a hash check of the inputs)
images: node-system
	bash tools/images/build.sh >/dev/null

## cluster: the tests' Kubernetes in the foreground: control plane, a node (as root) and the
## project's images; prints `export KUBECONFIG=...` and `export PATH=...`; Ctrl-C or SIGTERM
## stops it and removes all it made (without root: the control plane alone)
cluster: install cluster-bins $(if $(filter 0,$(shell id -u)),node-system)
	$(PY) -m tests.support.node

install: $(VENV)/.installed encodings

## run: `a11i up`: the sidecar on 127.0.0.1:11000 and the dashboard on 127.0.0.1:11080 (its admin
## token printed), the SQLite wallet file and events in memory: no cluster, no Redis
run: install assets
	$(BIN)/a11i up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: linters, type checks, then the whole pytest suite (unit, integration)
test: lint system node-system assets otelcol zipkin cluster-bins images
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

integration: install system assets otelcol zipkin cluster-bins

e2e: install node-system cluster-bins images
	$(BIN)/pytest tests/e2e

## e2e-node: only the tests that run pods on the test node (root; docs/cluster.md)
e2e-node: install node-system cluster-bins images
	$(BIN)/pytest tests/e2e/test_node.py tests/e2e/test_journey.py

## e2e-kind: both images built with docker, the chart and examples/ in a kind cluster (machines
## with Docker only; never part of `make test`; without an engine it says so and exits 0)
e2e-kind:
	bash tools/kind/e2e.sh
	$(BIN)/pytest tests/integration

## bench: proxy overhead and counting benchmarks (not part of `make test`)
bench: install otelcol
	$(PY) -m bench.overhead
	$(PY) -m bench.counting
	$(PY) -m bench.wallet
	$(PY) -m bench.admission
	$(PY) -m bench.throughput
	$(PY) -m bench.optimizer
	$(PY) -m bench.telemetry
	$(PY) -m bench.scrubber
	$(PY) -m bench.cost
	$(PY) -m bench.dashboard
	$(MAKE) bench-peers

## bench-peers: a11i against LiteLLM proxy and Portkey gateway in one run (installs them outside
## the venv, in ~/.cache/a11i/peers; needs PyPI and npm; never part of `make test`)
bench-peers: install
	bash bench/peers_setup.sh
	$(PY) -m bench.peers

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache a11i/sidecar/data/encodings
