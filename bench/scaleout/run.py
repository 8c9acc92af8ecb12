#!/usr/bin/env python3
"""``make bench-scaleout``: the mixed workload through HAProxy on 1, 2 and 3 Roost
instances sharing one PostgreSQL and one Redis, beside the bare ASGI hello world behind
the same HAProxy, in one run.

Usage:  .venv/bin/python bench/scaleout/run.py [--quick]   (bench/README.md, "Scale-out")
Env:    DURATION=5 WARMUP=3 REPEATS=5 (quick: 1, 1, 1) INSTANCES=1,2,3 THREADS=2 CONNS=50
        KEEP_DATA=1. Other ROOST_* variables reach every Roost.

1. A throwaway durable PostgreSQL tuned like ``make bench``'s and a throwaway Redis
   (``harness/backends.py``). Three ``roost serve --workers 1`` on them, sharing the
   secret key, with Redis as cache, broker and rate limiter, and 127.0.0.1 as trusted
   proxy; the first seeds ``make bench``'s data over the HTTP API (``harness/dataset.py``:
   100 users, 10,000 records with owner-only rules, an index on ``owner``).
2. Three bare ASGI hello worlds (``harness/hello.py``, 1 worker each). For each instance
   count N of INSTANCES, one HAProxy running ``deploy/haproxy.cfg`` unchanged before the
   first N Roosts and one before the first N hello worlds (``proxy.py``). A probe of each
   workload, with the rules checked, through each Roost HAProxy; then every seeded
   record read once, so that the shared cache holds them as it would in a steady state.
3. ``wrk -tTHREADS -cCONNS -dDURATIONs --latency`` through each HAProxy: ``make bench``'s
   workload (f) (``bench/lua/roost.lua``: 80% GET a record by id as its owner, 15% the
   owner's list page, ``filter=owner = "<id>"&limit=20``, 5% POST a record, with the
   tokens of the 100 users) on the Roosts, ``GET /`` on the hello worlds. WARMUP seconds
   of each first, then REPEATS rounds of every run, interleaved, so that what else the
   machine does weighs on all alike. CPU of each instance, PostgreSQL, Redis, HAProxy and
   wrk over each run; the instances' ``GET /metrics`` around each Roost run.
4. The probe again, the logs checked (Roost's errors; HAProxy's, besides the absent
   servers' DOWN at its start); ``bench/results/scaleout-<UTC time>/``: results.json,
   results.md (also printed). Everything started is stopped and deleted at the end, also
   on an error, Ctrl-C or SIGTERM. The exit status is 1 when a request failed, a probe
   failed or a log has an error.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: harness, cache

from cache.counters import Counts, scrape
from harness import dataset
from harness.backends import Backend, open_backend
from harness.ceilings import hello_server
from harness.client import Client
from harness.cpu import Meter, children_and_self, wait_idle
from harness.load import Load, measure, wrk
from harness.machine import describe_run, first_line, loadavg
from harness.plan import Rounds, environment_mode, rounds_from
from harness.plan import plan_from as bench_plan
from harness.results import begin, finish
from harness.roost import ERROR_MARKERS, RoostServer, log

from scaleout.figures import projection, row
from scaleout.proxy import SLOTS, Proxy, haproxy
from scaleout.report import markdown

LUA = Path(__file__).resolve().parents[1] / "lua"
MODES = {
    "full": {"DURATION": "5", "WARMUP": "3", "REPEATS": "5"},
    "quick": {"DURATION": "1", "WARMUP": "1", "REPEATS": "1"},
}
WORKLOAD = "f"  # bench/lua/roost.lua: 80% (a) reads, 15% (b) list pages, 5% (c) creates
FILL_CLIENTS = 4
KNOBS = "DURATION WARMUP REPEATS INSTANCES THREADS CONNS BENCH_MODE"


@dataclass(frozen=True)
class Plan(Rounds):
    instances: list[int]


def plan_from(env: dict[str, str], mode: str) -> Plan:
    given = env.get("INSTANCES") or "1,2,3"
    instances = sorted({int(n) for n in given.split(",") if n.strip()})
    if not instances or instances[0] < 1 or instances[-1] > SLOTS:
        sys.exit(f"INSTANCES={given}: counts from 1 to {SLOTS}")
    return Plan(**rounds_from(env, mode, MODES), instances=instances)


# --- the servers -------------------------------------------------------------------------


def roost_env(backend: Backend, secret: str, metrics_token: str) -> dict[str, str]:
    """What every instance gets: ``make bench``'s login cost and raised sign-in limits,
    the database, Redis as cache, broker and rate limiter (``harness/backends.py``), one
    secret key (a token is good on every instance), the proxy trusted."""
    assert backend.redis is not None
    return {
        **bench_plan(os.environ, "full").roost_env,
        **backend.environment,
        "ROOST_RATELIMIT_URL": backend.redis.url,
        "ROOST_SECRET_KEY": secret,
        "ROOST_TRUSTED_PROXIES": '["127.0.0.1"]',
        "ROOST_METRICS_TOKEN": metrics_token,
    }


@contextmanager
def roost_instances(
    count: int, backend: Backend, env: dict[str, str]
) -> Iterator[list[RoostServer]]:
    """``count`` running ``roost serve --workers 1`` (the admin made first); all stopped at
    the block's end."""
    servers = [RoostServer(backend.folder / f"roost{n}", env) for n in range(1, count + 1)]
    servers[0].cli("admin", "create", dataset.ADMIN_EMAIL, stdin=dataset.PASSWORD + "\n")
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@dataclass
class Tier:
    """``count`` servers of one kind (``roost``, ``hello``) behind their own HAProxy."""

    kind: str
    count: int
    proxy: Proxy
    servers: list[Callable[[], list[int]]]
    """Each server's processes."""
    metrics: list[int] = field(default_factory=list)
    """The Roost instances' ports, for ``GET /metrics``."""
    counts: list[Counts] = field(default_factory=list)
    """Their counters over each run (the warm-up's first)."""

    @property
    def name(self) -> str:
        return f"{self.kind} {self.count}"


def fixed(pids: list[int]) -> Callable[[], list[int]]:
    """The processes as they were when a run began: looking them up in /proc five times a
    second for every group would take CPU from the machine the run measures."""
    return lambda: pids


def runner(
    plan: Plan, tier: Tier, backend: Backend, data: Path, token: str
) -> Callable[[int], Load]:
    assert backend.pg is not None and backend.redis is not None and backend.redis.process
    pg, redis = backend.pg, backend.redis.process.pid
    roost = tier.kind == "roost"
    env = {
        "BENCH_LUA": str(LUA),
        "BENCH_DATA": str(data),
        "BENCH_WORKLOAD": WORKLOAD,
        "BENCH_THREADS": str(plan.threads),
    }

    def total() -> Counts:
        return sum((scrape(port, token) for port in tier.metrics), Counts())

    def run(seconds: int) -> Load:
        servers = [find() for find in tier.servers]
        groups = {f"server {n}": fixed(pids) for n, pids in enumerate(servers, start=1)}
        groups["postgres"] = fixed(children_and_self(pg.pid))
        groups["redis"] = fixed([redis])
        groups["haproxy"] = fixed(tier.proxy.pids())
        before = total() if roost else Counts()
        load = wrk(
            tier.proxy.url,
            seconds,
            Meter(groups),
            script=LUA / "roost.lua" if roost else None,
            threads=plan.threads,
            conns=plan.conns,
            env=env if roost else None,
        )
        wait_idle(fixed([pid for pids in servers for pid in pids]))  # requests left in flight
        if roost:
            tier.counts.append(total() - before)
        return load

    return run


def fill(port: int, data: dataset.Dataset) -> None:
    """GET every seeded record once, as its owner, through the proxy on ``port``: the
    shared cache then holds them all, as it would after minutes of this traffic (a record
    lives ``cache_ttl_seconds``, 300 s, there), and the runs measure that steady state."""
    local = threading.local()

    def get(pair: tuple[int, str]) -> None:
        if not hasattr(local, "client"):
            local.client = Client(port)
        owner, record = pair
        auth = {"Authorization": f"Bearer {data.users[owner].token}"}
        status, body = local.client.call("GET", f"{dataset.RECORDS_PATH}/{record}", headers=auth)
        assert status == 200, (status, body)

    with ThreadPoolExecutor(FILL_CLIENTS) as pool:
        list(pool.map(get, data.records))


# --- results -----------------------------------------------------------------------------


def rows(plan: Plan, tiers: list[Tier], runs: dict[str, list[Load]]) -> list[dict[str, Any]]:
    found = []
    first = plan.instances[0]
    for tier in tiers:
        roost = tier.kind == "roost"
        counts = sum(tier.counts[-plan.repeats :], Counts()) if roost else None
        ceiling = runs[f"hello {tier.count}"] if roost else None
        alone = runs[f"{tier.kind} {first}"]
        found.append(row(tier.kind, tier.count, runs[tier.name], counts, ceiling, alone))
    return found


def problems_of(servers: list[RoostServer], tiers: list[Tier]) -> tuple[list[str], dict[str, Any]]:
    """What the logs say went wrong, and the logs' summary for results.json."""
    problems: list[str] = []
    logs: dict[str, Any] = {}
    for n, server in enumerate(servers, start=1):
        logged = server.errors() + server.warnings()
        logs[f"roost {n}"] = [line[:2000] for line in logged[:6]]
        errors = [line for line in logged if any(m in line for m in ERROR_MARKERS)]
        problems += [f"roost {n} logged: {line[:300]}" for line in errors]
    for tier in tiers:
        lines = tier.proxy.unexpected()
        logs[f"haproxy {tier.name}"] = lines[:20]
        problems += [f"HAProxy before {tier.name}: {line[:300]}" for line in lines]
    return problems, logs


def describe(plan: Plan, backend: Backend) -> dict[str, Any]:
    versions = {
        "postgres": backend.version(),
        "redis": first_line(["redis-server", "--version"]).split(" sha=")[0],
        "haproxy": first_line(["haproxy", "-v"]).split(" - ")[0],
    }
    return {**describe_run(KNOBS, versions), "plan": asdict(plan)}


# --- main --------------------------------------------------------------------------------


def main() -> int:
    plan = plan_from(dict(os.environ), environment_mode(sys.argv[1:]))
    out = begin("scaleout", ["wrk", "haproxy", "redis-server"], "make bench-scaleout")
    started = time.monotonic()
    log(
        f"{plan.mode} scale-out run: {plan.instances} instance(s), {plan.repeats} x"
        f" {plan.duration} s after {plan.warmup} s; results in {out}"
    )
    most = plan.instances[-1]
    token = secrets.token_hex(16)
    with open_backend("postgres", redis=True, keep=plan.keep) as backend, ExitStack() as stack:
        meta = describe(plan, backend)
        env = roost_env(backend, secrets.token_hex(32), token)
        servers = stack.enter_context(roost_instances(most, backend, env))
        log(f"seeding {dataset.RECORDS:,} records of {dataset.USERS} users")
        data = dataset.seed(servers[0].port, backend.folder / "lua")
        backend.analyze()
        log(f"  seeded in {sum(data.seconds.values()):.1f} s")
        hellos = [
            stack.enter_context(hello_server(1, backend.folder / f"hello{n}.log"))
            for n in range(1, most + 1)
        ]
        tiers = []
        for count in plan.instances:
            folder = backend.folder / f"haproxy-{count}"
            proxy = stack.enter_context(haproxy([h.port for h in hellos[:count]], folder / "hello"))
            tiers.append(Tier("hello", count, proxy, [h.pids for h in hellos[:count]]))
            chosen = servers[:count]
            proxy = stack.enter_context(haproxy([s.port for s in chosen], folder / "roost"))
            tier = Tier("roost", count, proxy, [s.pids for s in chosen], [s.port for s in chosen])
            tiers.append(tier)
            dataset.probe(proxy.port, data)
        log(f"HAProxy before {plan.instances} instance(s) of each; probes answered")
        fill(tiers[-1].proxy.port, data)
        log(f"filled the cache: {len(data.records):,} GETs")
        table = {t.name: runner(plan, t, backend, data.folder, token) for t in tiers}
        runs = measure(table, warmup=plan.warmup, repeats=plan.repeats, duration=plan.duration)
        problems: list[str] = []
        try:
            dataset.probe(tiers[-1].proxy.port, data)
        except AssertionError as error:
            problems.append(f"the probe after the load: {str(error)[:500]}")
        found, logs = problems_of(servers, tiers)
        problems += found
    figures = rows(plan, tiers, runs)
    roosts = [r for r in figures if r["kind"] == "roost"]
    meta.update(
        {
            "wall_seconds": time.monotonic() - started,
            "loadavg_end": loadavg(),
            "seed_seconds": data.seconds,
            "logs": logs,
            "problems": problems,
            "projection": projection(roosts[0], meta["nproc"] or 1),
        }
    )
    results = {"meta": meta, "rows": figures}
    failed = [f"errors in {r['kind']} {r['instances']}" for r in figures if r["errors"]]
    return finish(out, results, markdown(results), failed + problems)


if __name__ == "__main__":
    sys.exit(main())
