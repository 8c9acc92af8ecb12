# Two commands: `make run` serves Roost on http://127.0.0.1:8090 (data in ./roost_data),
# `make test` runs the whole suite. Both create .venv and install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint services bench-framework bench-postgres bench bench-quick clean

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

# The tests start their own throwaway Redis, PostgreSQL, HAProxy and nginx: install the
# binaries (as root, from Debian) when they are missing.
services:
	@command -v redis-server >/dev/null && command -v haproxy >/dev/null && \
	  command -v nginx >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y redis-server postgresql haproxy nginx; }

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

# 1,000 and 10,000 WebSocket subscribers on one Roost: delivery latency, events/s, memory
# per connection (bench/README.md, "Realtime"); `make bench-realtime SUBSCRIBERS=1000`.
.PHONY: bench-realtime
bench-realtime: $(STAMP)
	@$(BIN)/python -c 'import websockets, asyncpg' 2>/dev/null || $(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/realtime/run.py

# Record reads and a cacheable list page on PostgreSQL with the server's cache off, in
# Redis and in process, beside the bare ASGI server and asyncpg (bench/README.md, "Cache");
# also the last step of `make bench`; `make bench-cache BENCH_MODE=quick` is an 80 s
# smoke run. Installs wrk, redis-server and PostgreSQL (as root, from Debian) if missing.
define bench-cache-setup
	@command -v wrk >/dev/null && command -v redis-server >/dev/null && \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y wrk redis-server postgresql; }
	@$(BIN)/python -c 'import asyncpg, redis' 2>/dev/null || $(BIN)/pip install -q -e '.[bench,redis]'
endef

.PHONY: bench-cache
bench-cache: $(STAMP)
	$(bench-cache-setup)
	$(BIN)/python bench/cache/run.py

# The mixed workload through HAProxy (deploy/haproxy.cfg as shipped) on 1, 2 and 3 Roost
# instances sharing one PostgreSQL and Redis, beside the bare ASGI server behind the same
# HAProxy (bench/README.md, "Scale-out"); also the last step of `make bench`;
# `make bench-scaleout BENCH_MODE=quick` is a 1-minute smoke run. Installs haproxy too.
.PHONY: bench-scaleout
bench-scaleout: $(STAMP)
	$(bench-cache-setup)
	@command -v haproxy >/dev/null || { apt-get update && apt-get install -y haproxy; }
	$(BIN)/python bench/scaleout/run.py

# Roost under six workloads beside its ceilings, in the same run (bench/README.md):
# `make bench` (under 10 minutes), `make bench-quick` (under 2). Add Parse Server with
# `make bench PEER_PARSE_URL=http://127.0.0.1:1337/parse PEER_PARSE_DIR=/tmp/parse-peer`.
# Installs what is missing: wrk and PostgreSQL with pgbench (as root, from Debian), and the
# bench extra (matplotlib, py-spy, asyncpg) into the venv.
define bench-setup
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	@ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y postgresql postgresql-contrib; }
	@$(BIN)/python -c 'import matplotlib, asyncpg' 2>/dev/null && test -x $(BIN)/py-spy || \
	  $(BIN)/pip install -q -e '.[bench]'
endef

bench: $(STAMP)
	$(bench-setup)
	$(bench-cache-setup)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/realtime/run.py
	$(BIN)/python bench/cache/run.py
	$(MAKE) bench-scaleout

bench-quick: $(STAMP)
	$(bench-setup)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
