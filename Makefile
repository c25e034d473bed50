# Service Topology. Two commands set everything up on a fresh machine:
#   make demo   - install into .venv, start the embedded store with a simulated fleet, print the URLs
#   make test   - install what the tests need, start the real components, run every test
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
PYTHON    ?= python3
PORT      ?= 8080
SERVICES  ?= 1000
SEED      ?= 42
DATA_DIR  ?= var/demo
RUN_DIR   ?= var/run
PYTEST_ARGS ?=

# the native OTLP decoders (Rust, built by pip through setuptools-rust) re-install when their sources change
NATIVE_SRC := $(wildcard topology/wire/native/*/Cargo.toml topology/wire/native/*/src/*.rs)
STAMP_PY  := $(VENV)/.installed-$(shell cat pyproject.toml $(NATIVE_SRC) | sha1sum | cut -c1-12)

.PHONY: help install install-system install-node demo test lint typecheck unit kafka janusgraph cassandra otelcol stop clean bench agent-deps

help:
	@echo "make demo      start the embedded demo (PORT=$(PORT) SERVICES=$(SERVICES) SEED=$(SEED) DATA_DIR=$(DATA_DIR))"
	@echo "make test      install test dependencies, start Kafka and JanusGraph, run all tests"
	@echo "make kafka     start the local Kafka broker (KRaft, from Maven Central jars)"
	@echo "make janusgraph start the local JanusGraph Server (network, ipc, trace graphs)"
	@echo "make cassandra start the local Cassandra node (from Maven Central jars; the CQL tests start it too)"
	@echo "make otelcol   build the OpenTelemetry Collector of docker/otelcol (Go modules; cached by hash)"
	@echo "make agent-deps prepare this machine for the eBPF node agent (root: bcc, headers, tracefs)"
	@echo "make stop      stop what the project started"
	@echo "make lint      ruff and mypy (strict on the core)"

# --- installation (idempotent: re-runs only when pyproject.toml or the native sources change) --------------------------
$(STAMP_PY): pyproject.toml $(NATIVE_SRC)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP_PY) install-node

install-node:
	@bash docker/dev/install-node.sh

install-system:
	@bash docker/dev/install-system.sh

# bcc, kernel headers, tracefs and the venv's view of Debian's bcc, for the node agent (as root)
agent-deps: $(STAMP_PY)
	@bash docker/agent/deps.sh $(VENV)

# --- running --------------------------------------------------------------------------------------
demo: install
	$(PY) -m service.cli demo --port $(PORT) --services $(SERVICES) --seed $(SEED) --data-dir $(DATA_DIR)

kafka: install-system
	@bash docker/kafka/dev.sh start

janusgraph: install-system
	@bash docker/janusgraph/dev.sh start

cassandra: install-system
	@bash docker/cassandra/dev.sh start

# the OpenTelemetry Collector of docker/otelcol/builder.yaml, built once from Go modules (cached by hash)
otelcol:
	@bash docker/otelcol/build.sh || { [ "$${CI:-}" != true ] && echo "otelcol: not built, its tests will skip"; }

stop:
	@-bash docker/kafka/dev.sh stop
	@-bash docker/janusgraph/dev.sh stop
	@-BACKEND=cql JANUSGRAPH_INSTANCE=cql JANUSGRAPH_PORT=18183 bash docker/janusgraph/dev.sh stop
	@-bash docker/cassandra/dev.sh stop

# --- checks ---------------------------------------------------------------------------------------
lint: install
	$(VENV)/bin/ruff check topology service ingest agent tests bench
	$(VENV)/bin/mypy

test: install install-system agent-deps kafka janusgraph otelcol
	$(MAKE) --no-print-directory lint
	@set -o pipefail; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

unit: install
	$(PY) -m pytest -m "not kafka and not janusgraph and not cassandra and not browser and not gateway and not bpf and not otelcol and not helm" $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.run_all

clean: stop
	rm -rf var
