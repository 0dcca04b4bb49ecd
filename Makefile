# sovereign-llm. Quick start: `make up`, then `make test`. Everything installs itself.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

STACK ?= eu-central-prod

.PHONY: up down status test test-hosts unit lint bench install compile clean plan deploy loadtest evidence fuzz canaries soak docs

$(STAMP): pyproject.toml scripts/bootstrap.sh
	./scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP) ## install system packages, .venv, OpenBao, the tiny model, llama.cpp server

compile: $(STAMP) ## the PHI filter's hot modules compiled with mypyc from the sources as they are (a no-op when built; gateway/phi/compiled.py)
	$(BIN)/python -m gateway.phi.compile build >/dev/null

up: $(STAMP) compile ## start the local sovereign stack (OpenBao, tiny model, gateway) and send one request
	$(BIN)/sovereign up

down: $(STAMP) ## stop exactly what `make up` started
	$(BIN)/sovereign down

status: $(STAMP)
	$(BIN)/sovereign status || true

lint: $(STAMP) ## ruff (lint and format), mypy, ansible-lint (production profile) on the roles, promtool on the alert rules
	$(BIN)/ruff check gateway infra tests benchmarks roles loadtests
	$(BIN)/ruff format --check gateway infra tests benchmarks roles loadtests
	$(BIN)/mypy
	$(BIN)/mypy roles/nvidia_gpu/filter_plugins
	$(BIN)/mypy roles/vswitch/filter_plugins
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint -q --profile production roles playbooks
	@# the alert rules each example stack renders, through the real promtool (Debian's prometheus package)
	rules=$$(mktemp -d) && $(BIN)/python -m infra.k8s_platform.alerts --write "$$rules" >/dev/null \
	  && promtool check rules "$$rules"/*.rules.yaml; rc=$$?; rm -rf "$$rules"; exit $$rc

test: $(STAMP) lint compile ## lint, then every test (unit, integration with real OpenBao, e2e with the real model)
	$(BIN)/pytest -q -ra --junitxml=reports/junit/make-test.xml

plan: $(STAMP) ## offline plan of a region stack (Pulumi mocks, no credentials): make plan STACK=eu-north-dr
	$(BIN)/sovereign plan --stack $(STACK)

evidence: $(STAMP) ## compliance evidence of a region stack (Markdown, HTML, PDF): make evidence STACK=eu-central-prod
	$(BIN)/sovereign evidence --stack $(STACK) --pdf

deploy: $(STAMP) ## real deploy where the Pulumi CLI and credentials exist: make deploy STACK=eu-central-prod
	@command -v pulumi >/dev/null || { echo "deploy: the Pulumi CLI is not installed here (see docs/region-stacks.md); 'make plan STACK=$(STACK)' runs offline"; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" pulumi up --stack $(STACK)

test-hosts: $(STAMP) ## only the real test hosts (systemd-nspawn, as root; first run builds the image)
	$(BIN)/pytest -q -ra tests/hosts

unit: $(STAMP) compile
	$(BIN)/pytest -q -ra tests/unit

loadtest: $(STAMP) ## Locust suite headless against the running local stack (make up first): make loadtest PROFILE=cpu-local [USERS= RUN_TIME= WARM_UP= RATE= OUT=]; report in reports/loadtest/sla.html
	$(BIN)/sovereign loadtest --target http://127.0.0.1:8080 --profile $(or $(PROFILE),cpu-local) --users $(or $(USERS),1) --run-time $(or $(RUN_TIME),60s) --warm-up $(or $(WARM_UP),0s) --arrival-rate $(or $(RATE),0) --out $(or $(OUT),reports/loadtest)

fuzz: $(STAMP) ## the long fuzz run: 2,000 generated requests per kind against a real gateway (tests/boundary)
	SOVEREIGN_FUZZ_EXAMPLES=2000 $(BIN)/pytest -q -s tests/boundary/test_fuzz.py

canaries: $(STAMP) ## the long leak-canary run: 10,000 synthetic patients under load, every place scanned, over chat and over embeddings and memory (tests/boundary)
	SOVEREIGN_CANARY_MESSAGES=10000 $(BIN)/pytest -q -s tests/boundary/test_canaries.py tests/boundary/test_canaries_memory.py

soak: $(STAMP) ## the long soak: capacity measured, then 10 minutes at half of it; the abuse tests at the fault run's scale (500 streams, 5 kill -9)
	SOVEREIGN_SOAK_SECONDS=600 SOVEREIGN_SOAK_CAPACITY_SECONDS=20 $(BIN)/pytest -q -s tests/boundary/test_soak.py
	SOVEREIGN_ABUSE_STREAMS=500 SOVEREIGN_ABUSE_KILLS=5 $(BIN)/pytest -q -s tests/gateway/test_abuse.py -k "kill_9 or refused_at_once"

docs: $(STAMP) ## regenerate the generated docs (gateway settings, stack config, module maps); tests/unit/test_docs.py fails when they differ
	$(BIN)/python -m gateway.settings_doc > docs/gateway-settings.md
	$(BIN)/python -m infra.config_doc > docs/stack-config.md
	$(BIN)/python -m infra.modules_doc --write

bench: $(STAMP) compile ## four of the benchmarks, side by side (the others: benchmarks/README.md)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.gateway_overhead
	$(BIN)/python -m benchmarks.phi_filter
	$(BIN)/python -m benchmarks.upstream_client
	$(BIN)/python -m benchmarks.gateway_bounds

clean:
	-$(BIN)/sovereign down
	rm -rf $(VENV) .sovereign .pytest_cache .mypy_cache .ruff_cache
