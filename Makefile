# image-cicd — every target installs what it needs by itself.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
PYTEST_ARGS ?= -n 2 --dist loadfile

# A real python3.12 (a pyenv shim of a version not selected does not run).
PY312 ?= $(shell for p in $$(command -v python3.12) $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12; do $$p -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)

.PHONY: all deps system-deps test test-sfn-local screenshots lint bench demo build clean

all: lint test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

system-deps:
	@scripts/ensure-system-packages.sh

deps: $(STAMP) node_modules/.installed system-deps

test: deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Refresh the README's screenshots (docs/screenshots) from the browser tests.
screenshots: deps
	IMAGE_CICD_UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/browser -k screenshots

# The mock-config test cases on Step Functions Local (needs a Docker engine).
test-sfn-local: deps
	$(BIN)/pytest tests/sfn_local -m docker

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@for f in functions/*/app.py; do MYPYPATH=src $(BIN)/mypy --strict --no-error-summary $$f || exit 1; done
	scripts/lint-infra.sh

.venv-sam/bin/sam:
	@test -n "$(PY312)" || { echo "sam build needs a python3.12 interpreter"; exit 1; }
	$(PY312) -m venv .venv-sam
	.venv-sam/bin/pip install -q aws-sam-cli

# sam build: the functions and the core layer for the python3.12 Lambda runtime.
build: .venv-sam/bin/sam
	PATH="$(dir $(PY312)):$$PATH" SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} .venv-sam/bin/sam build

bench: deps
	$(BIN)/python bench/bench.py

demo: deps
	$(BIN)/python -m image_cicd.local.demo

clean:
	rm -rf $(VENV) .venv-sam node_modules .pytest_cache .mypy_cache .ruff_cache .aws-sam .image-cicd test-artifacts bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
