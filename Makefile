# sovereign-llm. Quick start: `make up`, then `make test`. Everything installs itself.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: up down status test unit lint bench install clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	./scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP) ## install system packages, .venv, OpenBao, the tiny model, llama.cpp server

up: $(STAMP) ## start the local sovereign stack (OpenBao, tiny model, gateway) and send one request
	$(BIN)/sovereign up

down: $(STAMP) ## stop exactly what `make up` started
	$(BIN)/sovereign down

status: $(STAMP)
	$(BIN)/sovereign status || true

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check gateway infra tests benchmarks
	$(BIN)/mypy

test: $(STAMP) lint ## lint, then every test (unit, integration with real OpenBao, e2e with the real model)
	$(BIN)/pytest -q -ra

unit: $(STAMP)
	$(BIN)/pytest -q -ra tests/unit

bench: $(STAMP) ## benchmarks, side by side (see benchmarks/README.md)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/gateway_overhead.py
	$(BIN)/python benchmarks/phi_filter.py
	$(BIN)/python benchmarks/upstream_client.py

clean:
	-$(BIN)/sovereign down
	rm -rf $(VENV) .sovereign .pytest_cache .mypy_cache .ruff_cache
