# Thin wrappers: every target is one or two commands you could type yourself.
# `make help` lists them.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help install demo test lint format typecheck docs check clean brokers bench faults

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml package.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e ".[all]" --group dev
	npm install --no-audit --no-fund --silent  # the AsyncAPI schemas documents are checked against
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "note: install Debian's chromium for the AsyncAPI page's browser test"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with every extra and the dev tools

demo: $(STAMP)  ## serve examples/quickstart on http://127.0.0.1:8000 (BROKER_URL=... for a real broker)
	$(BIN)/uvicorn examples.quickstart.demo:app --host 127.0.0.1 --port 8000

brokers: $(STAMP)  ## make sure the real brokers are up on loopback (starts Kafka if needed)
	$(BIN)/python tests/brokers.py ensure kafka redis rabbit nats mqtt

test: $(STAMP)  ## run the whole suite (starts Kafka itself; real-broker tests fail if one is down under CI=true)
	$(BIN)/python tests/brokers.py ensure kafka
	$(BIN)/python -m pytest

bench: $(STAMP)  ## throughput against the raw clients and FastStream (writes bench/results/latest.*)
	$(BIN)/python -m pip install --quiet --group bench
	$(BIN)/python tests/brokers.py ensure kafka redis rabbit nats mqtt
	$(BIN)/python -m bench.run

faults: $(STAMP)  ## the fault suite on every broker (own instances); prints the table, updates docs/reliability.md
	FAULTS_FULL=1 FAULTS_DOCS=docs/reliability.md $(BIN)/python -m pytest tests/faults -m faults

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)  ## mypy --strict on the package, the examples and tests/typing
	$(BIN)/mypy

docs: $(STAMP)  ## build the user guide (mkdocs --strict)
	$(BIN)/mkdocs build --strict --site-dir .site

check: lint typecheck docs  ## everything CI runs besides the tests

clean:  ## remove the virtualenv and build output
	rm -rf $(VENV) .site .pytest_cache .mypy_cache .ruff_cache
