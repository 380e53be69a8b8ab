# One entry point for humans and CI. `make test` is what CI runs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv check lint fmt typecheck test test-fast cluster-up cluster-down demo bench clean

$(BIN)/cockpit: pyproject.toml
	test -x $(BIN)/pip || $(PY) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/cockpit

## lint + format check + strict types
check: venv
	$(BIN)/ruff check cockpit tests bench examples scripts/dev_cluster.py
	$(BIN)/ruff format --check cockpit tests bench examples
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff check --fix cockpit tests bench examples
	$(BIN)/ruff format cockpit tests bench examples

## the whole suite: starts the real dev cluster (unless COCKPIT_TEST_KUBECONFIG is set)
test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

## pure + engine tests only (no cluster)
test-fast: venv
	$(BIN)/pytest -m "not cluster and not tmux" $(PYTEST_ARGS)

## dev cluster up, the shop deployed in namespace `shop`, cockpit opened with `api` running locally
DEMO_ARGS ?= --intercept global
demo: venv
	scripts/dev-cluster up
	scripts/dev-cluster deploy-shop --namespace shop
	cd examples/shop && KUBECONFIG=$$(../../scripts/dev-cluster kubeconfig) ../../$(BIN)/cockpit up api $(DEMO_ARGS)

cluster-up:
	scripts/dev-cluster up

cluster-down:
	scripts/dev-cluster down

bench: venv
	@set -e; for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
