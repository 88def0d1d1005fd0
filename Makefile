# image-cicd — every target installs what it needs by itself.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
PYTEST_ARGS ?=

.PHONY: all deps system-deps test lint bench demo build clean

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

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python bench/bench.py

demo: deps
	$(BIN)/python -m image_cicd.demo

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .aws-sam .image-cicd test-artifacts bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
