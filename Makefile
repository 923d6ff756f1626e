# Everyday commands. `make run` and `make test` set up what they need on a fresh machine
# (Python venv, Azurite from npm, local.settings.json) and are safe to repeat.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed node_modules/.installed local.settings.json

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

local.settings.json:
	cp local.settings.sample.json $@

run: setup
	$(PY) -m aos run

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache .ruff_cache
