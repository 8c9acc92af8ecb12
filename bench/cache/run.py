#!/usr/bin/env python3
"""``make bench-cache``: record reads and a cacheable list page on PostgreSQL, with the
server's cache in Redis, in process, and off, beside the ceilings, in one run.

Usage:  .venv/bin/python bench/cache/run.py [--quick]        (bench/README.md, "Cache")
Env:    DURATION=3 WARMUP=2 REPEATS=5 (quick: 1, 1, 1) RECORDS=10000 HOT=1000
        CATEGORIES=10 CACHES=none,redis,memory THREADS=2 CONNS=50 KEEP_DATA=1
        PROFILE_SECONDS=0 (5: py-spy on each instance under each workload, after the runs)
        Other ROOST_* variables reach every Roost.

1. A throwaway durable PostgreSQL tuned like the main bench's (``harness/backends.py``)
   and a throwaway Redis. One ``roost serve`` with the cache off seeds over the HTTP API
   (``fixture.py``): collection ``items`` (``category``, ``score``, ``title``; list and
   view rules ``""``, ``options.cache_lists``), RECORDS records in CATEGORIES categories,
   one signed-up user; ``VACUUM ANALYZE``; the SQL of one list page, from PostgreSQL's log.
2. One ``roost serve --workers 1`` per cache of CACHES (``ROOST_CACHE_URL`` ``none``, the
   Redis URL, ``memory://``), all on the same database and secret key, and the bare ASGI
   hello world (``harness/hello.py``, 1 worker). Each Roost answers a probe (records and
   pages right, the same as the cache-off Roost's), then sits idle 3 s: the statements
   its background tasks send per second.
3. The runs, each ``wrk -tTHREADS -cCONNS -dDURATIONs --latency`` as the user:
   (read) GET a record by id, random among HOT ids; (list) GET one of the CATEGORIES list
   pages (``filter=category = "cN"&sort=-score&limit=20``); the HTTP ceiling (GET / of
   the hello world); the DB ceilings: asyncpg (``harness/dbload.py``, Roost's pool of 10,
   CONNS tasks, one process) running the SQL of (read)
   (``SELECT ... FROM r_items WHERE id = $1``) and the list page's SQL. WARMUP seconds of
   each first (this fills the caches), then REPEATS rounds of every run, interleaved.
   Around each Roost run, ``GET /metrics``: statements sent to the database and cache
   hits and misses, per request.
4. The probe again (now answered from the caches), the servers' logs checked for errors;
   ``bench/results/cache-<UTC time>/``: results.json, results.md (also printed).
Everything started is stopped and deleted at the end, also on an error, Ctrl-C or SIGTERM.
The exit status is 1 when a run had errors, a probe failed or a server logged an error.
"""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: harness, cache

from harness import dataset
from harness.backends import SQL, Backend, open_backend
from harness.ceilings import HelloServer, hello_server
from harness.cpu import Meter, wait_idle
from harness.load import Load, median_load, show, wrk
from harness.machine import describe_run, first_line, loadavg
from harness.plan import Rounds, environment_mode, rounds_from
from harness.pyspy import profile
from harness.results import begin, finish
from harness.roost import ERROR_MARKERS, VENV_PY, RoostServer, log

from cache.ceiling import db_load
from cache.counters import Counts, scrape
from cache.fixture import (
    Data,
    all_paths,
    answers,
    capture_list_sql,
    check,
    list_path,
    probe_paths,
    seed,
)
from cache.report import markdown

HERE = Path(__file__).resolve().parent
LUA = HERE.parent / "lua"  # common.lua, which paths.lua uses
MODES = {
    "full": {"DURATION": "3", "WARMUP": "2", "REPEATS": "5"},
    "quick": {"DURATION": "1", "WARMUP": "1", "REPEATS": "1"},
}
IDLE_SECONDS = 3.0
CACHES = {"none": "cache off", "redis": "Redis", "memory": "in process"}
WORKLOADS = {"read": "record", "list": "page"}
"""Each workload and the kind of cache entry it reads."""


@dataclass(frozen=True)
class Plan(Rounds):
    records: int
    hot: int
    categories: int
    caches: list[str]
    profile_seconds: int


def plan_from(env: dict[str, str], mode: str) -> Plan:
    caches = [c.strip() for c in (env.get("CACHES") or "none,redis,memory").split(",") if c.strip()]
    unknown = [c for c in caches if c not in CACHES]
    if unknown or "none" not in caches:
        sys.exit(f"CACHES={','.join(caches)}: a list of {', '.join(CACHES)} with none in it")
    return Plan(
        **rounds_from(env, mode, MODES),
        records=int(env.get("RECORDS") or "10000"),
        hot=int(env.get("HOT") or "1000"),
        categories=int(env.get("CATEGORIES") or "10"),
        caches=["none", *(c for c in CACHES if c in caches and c != "none")],
        profile_seconds=int(env.get("PROFILE_SECONDS") or "0"),
    )


# --- the servers -------------------------------------------------------------------------


@dataclass
class Instance:
    """One ``roost serve`` with one cache setting."""

    cache: str
    server: RoostServer
    metrics_token: str
    background: float = 0.0
    """Statements per second its background tasks send when no request comes."""

    def counts(self) -> Counts:
        return scrape(self.server.port, self.metrics_token)


def roost_env(backend: Backend, secret: str, cache: str, metrics_token: str) -> dict[str, str]:
    url = {"none": "none", "memory": "memory://"}.get(cache)
    if url is None:
        assert backend.redis is not None
        url = backend.redis.url
    return {
        **backend.environment,
        "ROOST_CACHE_URL": url,
        "ROOST_SECRET_KEY": secret,  # one key: the user's token is good on every instance
        "ROOST_METRICS_TOKEN": metrics_token,
    }


@contextmanager
def instances(plan: Plan, backend: Backend, secret: str) -> Iterator[list[Instance]]:
    """One running Roost per cache of the plan; all stopped at the block's end."""
    started: list[Instance] = []
    try:
        for cache in plan.caches:
            token = secrets.token_hex(16)
            server = RoostServer(
                backend.folder / f"roost-{cache}", roost_env(backend, secret, cache, token)
            )
            started.append(Instance(cache, server, token))
            server.start()
        yield started
    finally:
        for instance in started:
            instance.server.stop()


def prepare(plan: Plan, backend: Backend, secret: str) -> tuple[Data, str]:
    """Seed through a cache-off Roost; the data and the list page's SQL."""
    assert backend.pg is not None
    server = RoostServer(backend.folder / "seed", roost_env(backend, secret, "none", "-" * 32))
    server.cli("admin", "create", dataset.ADMIN_EMAIL, stdin=dataset.PASSWORD + "\n")
    server.start()
    try:
        log(f"seeding {plan.records:,} records in {plan.categories} categories")
        data = seed(
            server.port,
            backend.folder / "data",
            records=plan.records,
            hot=plan.hot,
            categories=plan.categories,
        )
        backend.analyze()
        log(f"  seeded in {data.seconds:.1f} s")
        page = [list_path(data.categories[0])]
        sql = capture_list_sql(backend.pg, lambda: answers(server.port, data, page))
    finally:
        server.stop()
    return data, sql


def probe(found: list[Instance], data: Data) -> list[str]:
    """Every instance's answers are right and the same as the cache-off instance's; what
    is wrong, if anything."""
    paths = probe_paths(data)
    problems = []
    reference: dict[str, Any] | None = None
    for instance in found:
        try:
            got = answers(instance.server.port, data, paths)
            check(got, data)
        except AssertionError as error:
            problems.append(f"{instance.cache}: {str(error)[:500]}")
            continue
        if reference is None:
            reference = got
        differ = [path for path in paths if got[path] != reference[path]]
        if differ:
            problems.append(f"{instance.cache}: answers differ from cache off for {differ[:3]}")
    return problems


def fill(found: list[Instance], data: Data) -> None:
    """GET each hot record and each list page once from every instance: the caches hold
    the whole working set before the warm-up (and PostgreSQL's buffers too)."""
    paths = all_paths(data)
    for instance in found:
        answers(instance.server.port, data, paths)


def idle_statements(found: list[Instance]) -> None:
    before = [instance.counts() for instance in found]
    time.sleep(IDLE_SECONDS)
    for instance, first in zip(found, before, strict=True):
        instance.background = (instance.counts() - first).statements / IDLE_SECONDS


# --- the runs ----------------------------------------------------------------------------


@dataclass
class Sample:
    load: Load
    counts: Counts | None = None
    """Roost's counters over the run (None for the ceilings)."""


@dataclass
class Series:
    """Every measured run of one runner."""

    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def load(self) -> Load:
        return median_load([s.load for s in self.samples])

    @property
    def counts(self) -> Counts | None:
        found = [s.counts for s in self.samples if s.counts is not None]
        return sum(found, Counts()) if found else None


Runner = Callable[[int], Sample]


def roost_runner(
    plan: Plan, instance: Instance, paths: Path, data: Data, groups: dict[str, Any]
) -> Runner:
    url = f"http://127.0.0.1:{instance.server.port}/"
    env = {"BENCH_LUA": str(LUA), "CACHE_PATHS": str(paths), "CACHE_TOKEN": data.user_token}
    pids = {"server": instance.server.pids, **groups}

    def run(seconds: int) -> Sample:
        before = instance.counts()
        load = wrk(
            url,
            seconds,
            Meter(pids),
            script=HERE / "paths.lua",
            threads=plan.threads,
            conns=plan.conns,
            env=env,
        )
        wait_idle(instance.server.pids)  # the requests wrk left in flight are counted too
        return Sample(load, instance.counts() - before)

    return run


def runners(
    plan: Plan,
    backend: Backend,
    found: list[Instance],
    data: Data,
    list_sql: str,
    hello: HelloServer,
) -> dict[str, Runner]:
    assert backend.pg is not None and backend.redis is not None and backend.redis.process
    redis_pid = backend.redis.process.pid
    groups = {**backend.groups(None), "redis": lambda: [redis_pid]}
    table: dict[str, Runner] = {}

    def http(seconds: int) -> Sample:
        meter = Meter({"server": hello.pids})
        load = wrk(hello.url, seconds, meter, threads=plan.threads, conns=plan.conns)
        wait_idle(hello.pids)
        return Sample(load)

    url = backend.pg.url

    def database(sql: str, keys: Path) -> Runner:
        def run(seconds: int) -> Sample:
            meter = Meter(backend.groups(None))
            return Sample(db_load(url, sql, keys, seconds=seconds, conns=plan.conns, meter=meter))

        return run

    table["ceiling http"] = http
    table["ceiling db read"] = database(SQL["postgres"]["a"], data.hot_ids)
    table["ceiling db list"] = database(list_sql, data.category_keys)
    for instance in found:
        table[f"{instance.cache} read"] = roost_runner(
            plan, instance, data.read_paths, data, groups
        )
        table[f"{instance.cache} list"] = roost_runner(
            plan, instance, data.list_paths, data, groups
        )
    return table


def measure(plan: Plan, table: dict[str, Runner]) -> dict[str, Series]:
    """A WARMUP-second run of each (not kept; it fills the caches), then REPEATS rounds of
    a DURATION-second run of each, interleaved so that whatever else the machine does
    weighs on all of them alike."""
    for name, run in table.items():
        log(f"warm-up: {name}")
        run(plan.warmup)
    series = {name: Series(name) for name in table}
    for round_ in range(plan.repeats):
        log(f"round {round_ + 1} of {plan.repeats}")
        for name, run in table.items():
            sample = run(plan.duration)
            series[name].samples.append(sample)
            show(name, sample.load)
    return series


def profiles(plan: Plan, found: list[Instance], data: Data, out: Path) -> dict[str, Any]:
    """With PROFILE_SECONDS: each instance's worker under each workload, ``py-spy``
    (``harness/pyspy.py``): ``profile-<cache>-<workload>.{svg,raw,txt}``."""
    done: dict[str, Any] = {}
    for instance in found:
        for workload, paths in (("read", data.read_paths), ("list", data.list_paths)):
            url = f"http://127.0.0.1:{instance.server.port}/"
            env = {**os.environ, "BENCH_LUA": str(LUA), "CACHE_PATHS": str(paths)}
            env["CACHE_TOKEN"] = data.user_token

            def start(seconds: int, env: dict[str, str] = env, url: str = url) -> Any:
                command = ["wrk", f"-t{plan.threads}", f"-c{plan.conns}", f"-d{seconds}s"]
                command += ["-s", str(HERE / "paths.lua"), url]
                return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)

            log(f"profiling {instance.cache} ({workload}) for {plan.profile_seconds} s")
            name = f"{instance.cache}-{workload}"
            done[name] = profile(
                instance.server.pids(), start, plan.profile_seconds, out / f"profile-{name}"
            )
            wait_idle(instance.server.pids)
    return done


# --- results -----------------------------------------------------------------------------


def row(series: Series, found: dict[str, Series], cache: str, workload: str) -> dict[str, Any]:
    """One Roost figure with its ratios (to cache off, to the ceilings) and its counts."""
    load = series.load
    counts = series.counts
    assert counts is not None
    kind = WORKLOADS[workload]
    requests = sum(s.load.requests for s in series.samples)
    off = found[f"none {workload}"]
    http = found["ceiling http"].load
    db = found[f"ceiling db {workload}"].load
    per_round = [
        mine.load.rps / theirs.load.rps
        for mine, theirs in zip(series.samples, off.samples, strict=True)
        if theirs.load.rps
    ]
    cpu_ms = [
        1000 * s.load.cpu["server"] / 100 / s.load.rps_all for s in series.samples if s.load.rps_all
    ]
    return {
        "cache": cache,
        "workload": workload,
        "server_cpu_ms_per_request": statistics.median(cpu_ms) if cpu_ms else None,
        **asdict(load),
        "runs": [asdict(s.load) for s in series.samples],
        "counts": asdict(counts),
        "requests_counted": requests,
        "statements_per_request": counts.statements / requests if requests else None,
        "hit_ratio": counts.hit_ratio(kind),
        "coalesced_share": counts.coalesced_share(kind),
        "cache_reads_per_request": counts.cache_reads(kind) / requests if requests else None,
        "cache_errors": counts.get("errors", kind),
        "cache_bypassed": counts.get("bypassed", kind),
        "ratios": {
            "cache_off": load.rps / off.load.rps if off.load.rps else None,
            "cache_off_per_round": per_round,
            "p99_cache_off": load.p99 / off.load.p99 if off.load.p99 else None,
            "http": load.rps / http.rps if http.rps else None,
            "db": load.rps / db.rps if db.rps else None,
        },
    }


KNOBS = "DURATION WARMUP REPEATS RECORDS HOT CATEGORIES CACHES THREADS CONNS PROFILE_SECONDS"
KNOBS += " BENCH_MODE"


def describe(plan: Plan, backend: Backend) -> dict[str, Any]:
    versions = {
        "postgres": backend.version(),
        "redis": first_line(["redis-server", "--version"]).split(" sha=")[0],
        "asyncpg": f"asyncpg {importlib.metadata.version('asyncpg')}",
        "redis-py": f"redis-py {importlib.metadata.version('redis')}",
    }
    return {**describe_run(KNOBS, versions), "plan": asdict(plan), "python": VENV_PY}


def main() -> int:
    plan = plan_from(dict(os.environ), environment_mode(sys.argv[1:]))
    out = begin("cache", ["wrk", "redis-server"], "make bench-cache")
    started = time.monotonic()
    log(
        f"{plan.mode} cache run: caches {plan.caches}, {plan.repeats} x {plan.duration} s"
        f" after {plan.warmup} s; results in {out}"
    )
    results: dict[str, Any] = {}
    problems: list[str] = []
    with open_backend("postgres", redis=True, keep=plan.keep) as backend, ExitStack() as stack:
        results["meta"] = describe(plan, backend)
        secret = secrets.token_hex(32)
        data, list_sql = prepare(plan, backend, secret)
        log(f"list SQL: {list_sql}")
        hello = stack.enter_context(hello_server(1, backend.folder / "hello.log"))
        found = stack.enter_context(instances(plan, backend, secret))
        problems += [f"before the load: {p}" for p in probe(found, data)]
        log(f"filling: {len(all_paths(data)):,} GETs from each instance")
        fill(found, data)
        idle_statements(found)
        series = measure(plan, runners(plan, backend, found, data, list_sql, hello))
        problems += [f"after the load: {p}" for p in probe(found, data)]
        if plan.profile_seconds > 0:
            results["profiles"] = profiles(plan, found, data, out)
        logs = {}
        for instance in found:
            under_load = instance.server.errors() + instance.server.warnings()
            instance.server.stop()
            logged = instance.server.errors() + instance.server.warnings()
            logs[instance.cache] = {
                "under_load": len(under_load),
                "at_stop": len(logged) - len(under_load),
                "first": [line[:2000] for line in logged[:6]],
            }
            errors = [line for line in logged if any(m in line for m in ERROR_MARKERS)]
            problems += [f"{instance.cache}: the server logged: {line[:300]}" for line in errors]
    results["meta"].update(
        {
            "wall_seconds": time.monotonic() - started,
            "loadavg_end": loadavg(),
            "list_sql": list_sql,
            "read_sql": SQL["postgres"]["a"],
            "list_paths": [list_path(c) for c in data.categories],
            "seed_seconds": data.seconds,
            "background_statements_per_second": {i.cache: i.background for i in found},
            "server_log": logs,
            "problems": problems,
        }
    )
    results["ceilings"] = {
        name.removeprefix("ceiling "): {
            **asdict(s.load),
            "runs": [asdict(x.load) for x in s.samples],
        }
        for name, s in series.items()
        if name.startswith("ceiling ")
    }
    results["rows"] = [
        row(series[f"{cache} {workload}"], series, cache, workload)
        for workload in WORKLOADS
        for cache in plan.caches
    ]
    errors = [f"errors in {r['cache']} {r['workload']}" for r in results["rows"] if r["errors"]]
    errors += [f"errors in ceiling {n}" for n, c in results["ceilings"].items() if c["errors"]]
    return finish(out, results, markdown(results), errors + problems)


if __name__ == "__main__":
    sys.exit(main())
