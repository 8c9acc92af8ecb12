# Two commands: `make run` serves Roost on http://127.0.0.1:8090 (data in ./roost_data),
# `make test` runs the whole suite. Both create .venv and install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint services bench-framework bench-postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/roost serve --host 127.0.0.1 --port 8090 --data-dir ./roost_data

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The tests start their own throwaway Redis and PostgreSQL servers: install the binaries
# (as root, from Debian) when they are missing.
services:
	@command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y redis-server postgresql; }

test: $(STAMP) services lint
	$(BIN)/pytest

bench-framework: $(STAMP)
	$(BIN)/python bench/framework/run.py

# A throwaway durable PostgreSQL, Roost on it, wrk and pgbench (as root, from Debian).
bench-postgres: $(STAMP)
	@command -v wrk >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
	  { command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench; } >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y wrk postgresql postgresql-contrib; }
	$(BIN)/python bench/postgres/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
