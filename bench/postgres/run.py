#!/usr/bin/env python3
"""PostgreSQL: one list query's latency without and with its index, and Roost vs pgbench.

Usage:  <repo>/.venv/bin/python bench/postgres/run.py       (about 3 min on 2 vCPU)
Env:    RECORDS=100000 SEED_CLIENTS=4 EXPLAIN_RUNS=5
        DURATION=10 WARMUP=3 REPEATS=3 CONNS=50 THREADS=2 WORKERS=1
        VENV_PY     the project venv's python (default: <repo>/.venv/bin/python)
        KEEP_DATA=1 keep the throwaway folder (the PostgreSQL cluster is always destroyed)
        Other ROOST_* variables pass through to Roost (e.g. ROOST_POSTGRES_POOL_MAX).

Steps:
1. A throwaway, durable PostgreSQL (``tests/postgres_server.py``, ``start_server(durable=
   True)``: fsync, synchronous_commit and full_page_writes on) and one ``roost serve``
   process on it; an admin made with ``roost admin create``, signed in over HTTP.
2. Collection ``items`` (``owner_tag`` string, 100 values t0..t99; ``n`` integer, random),
   rules admin-only (admins pass every rule, so the list query has no rule clause), no
   index; RECORDS records over ``POST /api/batch`` (100 creates per request, SEED_CLIENTS
   concurrent clients), then ``VACUUM ANALYZE``.
3. The SQL of ``GET /api/collections/items/records?filter=owner_tag="t42"&sort=-n&limit=20``
   is read from the PostgreSQL log (``log_min_duration_statement=0`` for that one request),
   so it is exactly what Roost runs. ``EXPLAIN (ANALYZE, BUFFERS)`` of it (parameters
   inlined), EXPLAIN_RUNS times after a warm-up, median; then the index ``[owner_tag, n]``
   is declared with ``PATCH /api/collections/items``, awaited until valid, ``ANALYZE``,
   and the same again, also as a generic plan (``PREPARE``, ``force_generic_plan``). Two
   experiments on an extra index in ``ORDER BY`` order follow (dropped again).
4. With the index, interleaved rounds of: ``wrk -tTHREADS -cCONNS -dDURATIONs --latency``
   on that list URL (a Lua script picks a random tag per request, admin Bearer token);
   ``pgbench -n -M prepared -cCONNS -jTHREADS -TDURATION`` running the same SQL (tag from
   ``\\set t random(0, 99)``) on the same database; the same pgbench with as many
   connections as Roost's pool. WARMUP seconds of each first, then REPEATS rounds,
   medians. pgbench's latency percentiles come from its per-transaction log (``-l``). CPU
   shares (see ``Meter``) are in % of one core: 200% is the whole 2-core machine.
5. ``bench/results/postgres-<UTC time>/results.json`` and ``results.md`` (gitignored, like
   every bench result: the README quotes a run), and the tables on stdout.
Everything started is stopped and deleted at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness package

from harness import load as loads
from harness.client import HOST, Client
from harness.cpu import Meter, children_and_self, session_pids
from harness.load import Load, median_load
from harness.machine import first_line, git_state, loadavg
from harness.pgbench import pgbench as run_pgbench
from harness.pgbench import pgbench_binary as find_pgbench
from harness.roost import RoostServer

if TYPE_CHECKING:
    from postgres_server import PostgresServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "bench" / "results"
RECORDS = int(os.environ.get("RECORDS", 100_000))
SEED_CLIENTS = int(os.environ.get("SEED_CLIENTS", 4))
EXPLAIN_RUNS = int(os.environ.get("EXPLAIN_RUNS", 5))
DURATION = int(os.environ.get("DURATION", 10))
WARMUP = int(os.environ.get("WARMUP", 3))
REPEATS = int(os.environ.get("REPEATS", 3))
CONNS = int(os.environ.get("CONNS", 50))
THREADS = int(os.environ.get("THREADS", 2))
WORKERS = int(os.environ.get("WORKERS", 1))
POOL = WORKERS * int(os.environ.get("ROOST_POSTGRES_POOL_MAX", 10))
"""PostgreSQL connections Roost may open (workers x pool size; the setting's default is 10)."""
BATCH = 100  # the API's most operations per batch
TAGS = 100  # owner_tag values t0 .. t99
TAG = "t42"  # the tag of the EXPLAIN runs and the probes
PAGE = 20
COLLECTION = "items"
TABLE = '"r_items"'
PROBE_INDEX = "bench_order_probe"
DATABASE = "roost"  # the database start_server() creates
ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench-password-not-secret"
INDEX_TIMEOUT = 120.0
INDEX_FIELDS = ("owner_tag", "n")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def list_path(tag: str) -> str:
    query = urllib.parse.urlencode({"filter": f'owner_tag="{tag}"', "sort": "-n", "limit": PAGE})
    return f"/api/collections/{COLLECTION}/records?{query}"


# --- the fixture: PostgreSQL, Roost, the collection --------------------------------------


@dataclass
class Bench:
    folder: Path
    pg: PostgresServer
    token: str = ""
    server: RoostServer = field(init=False)
    """``roost serve`` (``harness/roost.py``) on ``pg``, its data folder in ``folder``."""

    def __post_init__(self) -> None:
        self.server = RoostServer(self.folder, {"ROOST_DATABASE_URL": self.pg.url}, workers=WORKERS)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def roost(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def env(self) -> dict[str, str]:
        return self.server.env

    def client(self) -> Client:
        return Client(self.port, self.token)

    def sql(self, statement: str) -> str:
        return self.pg.psql(statement, DATABASE).strip()

    # -- Roost ------------------------------------------------------------------------

    def roost_cli(self, *args: str, stdin: str = "") -> str:
        return self.server.cli(*args, stdin=stdin)

    def start_roost(self) -> None:
        self.server.start()

    def stop_roost(self) -> None:
        self.server.stop()

    def sign_in(self) -> None:
        client = Client(self.port)
        status, body = client.call(
            "POST", "/api/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        client.close()
        assert status == 200, (status, body)
        self.token = body["access_token"]

    # -- data ---------------------------------------------------------------------------

    def create_collection(self) -> None:
        client = self.client()
        status, body = client.call(
            "POST",
            "/api/collections",
            {
                "name": COLLECTION,
                "fields": {
                    "owner_tag": {"type": "string", "required": True},
                    "n": {"type": "integer", "required": True},
                },
                "indexes": [],
                # null: admins only; admins pass every rule, so no rule clause in the SQL
                "rules": {"list": None, "view": None, "create": None},
            },
        )
        client.close()
        assert status == 201, (status, body)

    def seed(self) -> dict[str, float]:
        rng = random.Random(20261128)
        values = [rng.randrange(1_000_000) for _ in range(RECORDS)]
        local = threading.local()
        done = [0]
        lock = threading.Lock()

        def send(start: int) -> None:
            if not hasattr(local, "client"):
                local.client = self.client()
            operations = [
                {
                    "action": "create",
                    "collection": COLLECTION,
                    "data": {"owner_tag": f"t{i % TAGS}", "n": values[i]},
                }
                for i in range(start, min(start + BATCH, RECORDS))
            ]
            status, body = local.client.call("POST", "/api/batch", {"operations": operations})
            ok = status == 200 and all(r["status"] == 201 for r in body["results"])
            assert ok, (status, str(body)[:300])
            with lock:
                done[0] += len(operations)
                if done[0] % 20_000 == 0:
                    log(f"  {done[0]:,} records")

        t0 = time.monotonic()
        with ThreadPoolExecutor(SEED_CLIENTS) as pool:
            list(pool.map(send, range(0, RECORDS, BATCH)))
        seconds = time.monotonic() - t0
        count = int(self.sql(f"SELECT count(*) FROM {TABLE}"))
        assert count == RECORDS, (count, RECORDS)
        t1 = time.monotonic()
        self.sql(f"VACUUM ANALYZE {TABLE}")
        vacuum = time.monotonic() - t1
        size = self.sql(f"SELECT pg_size_pretty(pg_total_relation_size('{TABLE}'))")
        log(f"seeded {RECORDS:,} records in {seconds:.1f}s ({RECORDS / seconds:,.0f}/s); {size}")
        return {"seconds": seconds, "records_per_second": RECORDS / seconds, "vacuum": vacuum}

    def probe(self, tag: str = TAG) -> None:
        """The list page is right: PAGE items, all with ``tag``, ``n`` descending."""
        client = self.client()
        status, body = client.call("GET", list_path(tag))
        client.close()
        assert status == 200, (status, body)
        items = body["items"]
        ns = [item["n"] for item in items]
        assert len(items) == PAGE and {item["owner_tag"] for item in items} == {tag}, body
        assert ns == sorted(ns, reverse=True) and body["next_cursor"], body

    def declare_index(self) -> dict[str, float]:
        """PATCH the collection with the index; seconds until the API answered, and until
        PostgreSQL holds it valid (the same unless it is built in the background)."""
        client = self.client()
        t0 = time.monotonic()
        status, body = client.call(
            "PATCH",
            f"/api/collections/{COLLECTION}",
            {"indexes": [{"fields": list(INDEX_FIELDS)}]},
        )
        answered = time.monotonic() - t0
        client.close()
        assert status == 200, (status, body)
        valid = (
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            f" WHERE i.indrelid = '{TABLE}'::regclass AND starts_with(c.relname, 'ix_')"
            " AND i.indisvalid AND i.indisready"
        )
        deadline = time.monotonic() + INDEX_TIMEOUT
        while self.sql(valid) == "0":
            if time.monotonic() > deadline:
                raise RuntimeError(f"no valid ix_ index {INDEX_TIMEOUT:.0f} s after the PATCH")
            time.sleep(0.1)
        ready = time.monotonic() - t0
        self.sql(f"ANALYZE {TABLE}")
        return {"api_seconds": answered, "valid_seconds": ready}

    def indexes(self) -> list[str]:
        rows = self.sql(f"SELECT indexdef FROM pg_indexes WHERE tablename = '{TABLE[1:-1]}'")
        return rows.splitlines()

    # -- the exact SQL ------------------------------------------------------------------

    def capture_list_sql(self) -> tuple[str, dict[int, str], list[str]]:
        """The list query as Roost sends it, its parameters as SQL literals, and every
        statement run while the request was served, from the PostgreSQL log with
        ``log_min_duration_statement = 0`` for one request."""
        self.sql("ALTER SYSTEM SET log_min_duration_statement = 0")
        self.sql("SELECT pg_reload_conf()")
        time.sleep(0.5)  # backends read the new setting before their next command
        offset = self.pg.log_path.stat().st_size
        try:
            self.probe()
            time.sleep(0.5)
            end = self.pg.log_path.stat().st_size
        finally:
            self.sql("ALTER SYSTEM RESET log_min_duration_statement")
            self.sql("SELECT pg_reload_conf()")
        with self.pg.log_path.open("rb") as pg_log:
            pg_log.seek(offset)
            lines = pg_log.read(end - offset).decode("utf-8", "replace").splitlines()
        run = re.compile(r"\[(\d+)\] LOG:\s+duration: \S+ ms\s+(?:execute [^:]+|statement): (.*)$")
        detail = re.compile(r"\[(\d+)\] DETAIL:\s+parameters: (.*)$")
        statements = [found.group(2) for line in lines if (found := run.search(line))]
        for i, line in enumerate(lines):
            found = run.search(line)
            if not found or f"FROM {TABLE}" not in found.group(2) or "LIMIT" not in line:
                continue
            sql, params = found.group(2), {}
            for later in lines[i + 1 : i + 4]:
                more = detail.search(later)
                if more and more.group(1) == found.group(1):
                    literal = r"\$(\d+) = ('(?:[^']|'')*'|NULL)"
                    params = {int(n): v for n, v in re.findall(literal, more.group(2))}
                    break
            return sql, params, statements
        raise RuntimeError("the list query is not in the PostgreSQL log:\n" + "\n".join(lines))


def inline(sql: str, params: dict[int, str], overrides: dict[int, str] | None = None) -> str:
    """``sql`` with each ``$n`` replaced by its literal (or by ``overrides[n]``)."""
    values = {**params, **(overrides or {})}
    return re.sub(r"\$(\d+)\b", lambda m: values[int(m.group(1))], sql)


# --- EXPLAIN -----------------------------------------------------------------------------


@dataclass
class Explain:
    label: str
    execution_ms: list[float]
    planning_ms: list[float]
    nodes: list[str]
    shared_hit: int
    shared_read: int
    text: str

    @property
    def median_ms(self) -> float:
        return statistics.median(self.execution_ms)

    @property
    def plan(self) -> str:
        return " → ".join(self.nodes)

    def uses(self, index_prefix: str) -> bool:
        return any(f" using {index_prefix}" in node for node in self.nodes)

    def report(self) -> dict[str, Any]:
        return {**asdict(self), "median_ms": self.median_ms, "plan": self.plan}


def plan_nodes(plan: dict[str, Any]) -> list[str]:
    label = str(plan["Node Type"])
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    elif "Relation Name" in plan:
        label += f" on {plan['Relation Name']}"
    if "Sort Method" in plan:
        label += f" ({plan['Sort Method']})"
    if "Scan" in label:
        rows = int(plan["Actual Rows"] * plan["Actual Loops"])
        removed = int(plan.get("Rows Removed by Filter", 0))
        label += f" [{rows:,} rows{f', {removed:,} filtered out' if removed else ''}]"
    return [label] + [node for child in plan.get("Plans", []) for node in plan_nodes(child)]


def explain(bench: Bench, label: str, target: str, setup: str = "") -> Explain:
    """EXPLAIN ANALYZE ``target`` (a query, or ``EXECUTE`` of a statement that ``setup``
    prepares in the same session): one warm-up, EXPLAIN_RUNS timed, one in text form."""
    statement = f"{setup}EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {target}"
    bench.sql(statement)  # warm-up: shared buffers, catalog caches
    runs = [json.loads(bench.sql(statement))[0] for _ in range(EXPLAIN_RUNS)]
    text = bench.sql(f"{setup}EXPLAIN (ANALYZE, BUFFERS) {target}")
    top = runs[-1]["Plan"]
    result = Explain(
        label=label,
        execution_ms=[run["Execution Time"] for run in runs],
        planning_ms=[run["Planning Time"] for run in runs],
        nodes=plan_nodes(top),
        shared_hit=int(top.get("Shared Hit Blocks", 0)),
        shared_read=int(top.get("Shared Read Blocks", 0)),
        text=text,
    )
    log(f"{label}: {result.plan}; median {result.median_ms:.2f} ms of {EXPLAIN_RUNS}")
    return result


def explain_generic(bench: Bench, label: str, sql: str, params: dict[int, str]) -> Explain:
    """The plan a prepared statement gets once PostgreSQL switches it to a generic plan
    (asyncpg and pgbench -M prepared run prepared statements; the switch may come after
    the fifth execution)."""
    arguments = ", ".join(params[n] for n in sorted(params))
    setup = f"PREPARE q AS {sql}; SET plan_cache_mode = force_generic_plan; "
    return explain(bench, label, f"EXECUTE q({arguments})", setup)


def order_terms(sql: str) -> list[str]:
    """The ``ORDER BY`` terms of ``sql`` (split at top-level commas)."""
    clause = sql[sql.rindex(" ORDER BY ") + len(" ORDER BY ") : sql.rindex(" LIMIT ")]
    terms, depth, start, quoted = [], 0, 0, ""
    for i, char in enumerate(clause):
        if quoted:
            quoted = "" if char == quoted else quoted
        elif char in "'\"":
            quoted = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(clause[start:i].strip())
            start = i + 1
    return [*terms, clause[start:].strip()]


TYPE_GUARD = "jsonb_typeof((data #> '{owner_tag}')) = 'string' AND "
"""Roost's guard next to ``owner_tag = "t42"``; redundant (a ``jsonb`` string equals only a
string), but PostgreSQL has no statistics for it and takes 0.5% of the rows to pass it."""


def explain_ordered_index(bench: Bench, literal_sql: str) -> dict[str, Explain]:
    """Experiments, not Roost: an extra index on the filter then exactly the ``ORDER BY``
    terms Roost emits, so PostgreSQL could read the page in order and stop after LIMIT rows;
    the query as Roost sends it, and without ``TYPE_GUARD``. The index is dropped before
    the load runs; an experiment PostgreSQL refuses is left out."""
    columns = ["(data #> '{owner_tag}')"]
    for term in order_terms(literal_sql):
        expression, _, direction = term.rpartition(" ")
        columns.append(f"({expression}) {direction}")
    found: dict[str, Explain] = {}
    try:
        bench.sql(f"CREATE INDEX {PROBE_INDEX} ON {TABLE} ({', '.join(columns)})")
        bench.sql(f"ANALYZE {TABLE}")
        found["ordered"] = explain(bench, "experiment: ordered index", literal_sql)
        if TYPE_GUARD in literal_sql:
            unguarded = literal_sql.replace(TYPE_GUARD, "")
            found["ordered_unguarded"] = explain(bench, "experiment: no guard", unguarded)
    except RuntimeError as error:
        log(f"experiment stopped: {error}")
    finally:
        bench.sql(f"DROP INDEX IF EXISTS {PROBE_INDEX}")
    return found


# --- load: wrk and pgbench ---------------------------------------------------------------


def meter(bench: Bench) -> Meter:
    sid = bench.roost.pid if bench.roost else -1
    return Meter(
        {
            "roost": lambda: session_pids(sid),
            "postgres": lambda: children_and_self(bench.pg.pid),
        }
    )


def wrk_script(bench: Bench) -> Path:
    """Pre-formatted requests, one per tag, one picked at random per request."""
    paths = "".join(f'  "{list_path(f"t{t}")}",\n' for t in range(TAGS))
    script = bench.folder / "list.lua"
    script.write_text(
        f'wrk.headers["Authorization"] = "Bearer {bench.token}"\n'
        f"local paths = {{\n{paths}}}\n"
        "local reqs = {}\nlocal n = 0\n"
        "function setup(thread) n = n + 1; thread:set('tid', n) end\n"
        "function init(args)\n  math.randomseed(os.time() * 97 + tid)\n"
        "  for i, p in ipairs(paths) do reqs[i] = wrk.format(nil, p) end\nend\n"
        "function request() return reqs[math.random(#reqs)] end\n"
    )
    return script


def wrk(bench: Bench, script: Path, seconds: int) -> Load:
    url = f"http://{HOST}:{bench.port}/"
    return loads.wrk(url, seconds, meter(bench), script=script, threads=THREADS, conns=CONNS)


def pgbench_binary(bench: Bench) -> str:
    return find_pgbench(bench.pg.bindir)


def pgbench_script(bench: Bench, sql: str, params: dict[int, str]) -> tuple[Path, str]:
    """The list SQL with the tag's parameter built from ``:t`` (``\\set t random(0, 99)``)
    and the others inlined; pgbench's -M prepared makes ``:t`` a bound parameter."""
    tag_literal = f"'\"{TAG}\"'"
    tag_params = [n for n, v in params.items() if v == tag_literal]
    assert len(tag_params) == 1, (params, tag_literal)
    query = inline(sql, params, {tag_params[0]: "('\"t' || :t || '\"')"})
    script = bench.folder / "list.sql"
    script.write_text(f"\\set t random(0, {TAGS - 1})\n{query};\n")
    return script, query


def pgbench(bench: Bench, script: Path, seconds: int, conns: int = CONNS) -> Load:
    return run_pgbench(
        pgbench_binary(bench),
        port=bench.pg.port,
        database=DATABASE,
        workload=["-f", str(script)],
        seconds=seconds,
        conns=conns,
        threads=THREADS,
        meter=meter(bench),
        folder=bench.folder,
    )


def measure(runners: dict[str, Callable[[int], Load]]) -> dict[str, list[Load]]:
    """A WARMUP-second run of each, then REPEATS rounds of one DURATION-second run of each,
    interleaved so that whatever else the machine does weighs on all of them alike."""
    return loads.measure(runners, warmup=WARMUP, repeats=REPEATS, duration=DURATION)


# --- report ------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    plans = results["explain"]
    before, after = plans["no_index"]["median_ms"], plans["index"]["median_ms"]
    index = results["index"]
    lines = [
        f"{results['records']:,} records, {TAGS} tags; `GET {results['path']}` (admin)"
        f" → one SQL query with `LIMIT {PAGE + 1}`; PostgreSQL {results['versions']['postgres']}"
        f" durable; nproc={results['nproc']}, load average {results['loadavg_start']}"
        f" at start, {results['loadavg_end']} at end",
        "",
        f"| plan | nodes | execution (ms, median of {EXPLAIN_RUNS}) | planning (ms) | buffers |",
        "|---|---|---:|---:|---|",
    ]
    labels = {
        "no_index": "no index",
        "index": f"index [{', '.join(INDEX_FIELDS)}]",
        "index_generic": "same, generic plan (prepared statement)",
        "ordered": "experiment, not Roost: + index on owner_tag then the ORDER BY terms",
        "ordered_unguarded": "experiment: same, query without the jsonb_typeof guard",
    }
    for key, label in labels.items():
        e = plans.get(key)
        if e is None:
            continue
        lines.append(
            f"| {label} | {e['plan']} | {e['median_ms']:.2f}"
            f" | {statistics.median(e['planning_ms']):.2f}"
            f" | hit {e['shared_hit']:,}, read {e['shared_read']:,} |"
        )
    lines += [
        "",
        f"Index declared with PATCH in {index['api_seconds']:.2f} s (valid after"
        f" {index['valid_seconds']:.2f} s); execution {before / after:.1f}x faster with it.",
        "",
        f"Statements PostgreSQL ran for one list request: {len(results['statements_per_request'])}"
        + "".join(
            f"\n- `{text[:70]}{'…' if len(text) > 70 else ''}`"
            for text in results["statements_per_request"]
        ),
        "",
        f"With the index: {THREADS} threads, {CONNS} connections, {DURATION} s after a"
        f" {WARMUP} s warm-up, median of {REPEATS} rounds (wrk and pgbench interleaved);"
        f" Roost {WORKERS} worker(s), its default pool. CPU in % of one core"
        " (200% = the machine); other = everything else running.",
        "",
        "| client | what | req/s | p50 (ms) | p99 (ms) | CPU Roost | CPU PostgreSQL"
        " | CPU client | CPU other | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, what, key in (
        ("wrk → Roost", "the list page over HTTP, random tag", "roost"),
        ("pgbench", f"its SQL, -M prepared, random tag, {CONNS} connections", "pgbench"),
        ("pgbench", f"same, {POOL} connections (as many as Roost's pool)", "pgbench_pool"),
    ):
        m = results[key]
        cpu = m["cpu"]
        lines.append(
            f"| {label} | {what} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f}"
            f" | {cpu['roost']:.0f}% | {cpu['postgres']:.0f}% | {cpu['load']:.0f}%"
            f" | {cpu['other']:.0f}% | {m['errors']} |"
        )
    lines.append("")
    for key, label in (("ratio", f"{CONNS}"), ("ratio_pool", f"{POOL}")):
        rounds = ", ".join(f"{r:.3f}" for r in results[f"{key}_per_round"])
        lines.append(
            f"- Roost / pgbench with {label} connections: {results[key]:.3f}"
            f" (of the medians; per round: {rounds})"
        )
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------


def per_round(ours: list[Load], theirs: list[Load]) -> list[float]:
    return [a.rps / b.rps for a, b in zip(ours, theirs, strict=True)]


def run(bench: Bench) -> dict[str, Any]:
    log(f"roost on :{bench.port}, PostgreSQL on :{bench.pg.port}, folder {bench.folder}")
    start_load = loadavg()
    bench.roost_cli("admin", "create", ADMIN_EMAIL, stdin=ADMIN_PASSWORD + "\n")
    bench.start_roost()
    bench.sign_in()
    bench.create_collection()
    seeded = bench.seed()
    bench.probe()

    sql, params, _ = bench.capture_list_sql()
    log(f"list SQL: {sql}\n  parameters: {params}")
    no_index = explain(bench, "no index", inline(sql, params))
    index = bench.declare_index()
    indexes = bench.indexes()
    log(f"index: {index}; {indexes}")
    sql_after, params_after, statements = bench.capture_list_sql()
    if sql_after != sql:
        log("NOTE: the list SQL changed after the index was declared")
    literal = inline(sql_after, params_after)
    with_index = explain(bench, "index", literal)
    generic = explain_generic(bench, "generic plan", sql_after, params_after)
    for plan in (with_index, generic):
        if not plan.uses("ix_"):
            log(f"WARNING: {plan.label}: the declared index is not used:\n{plan.text}")
    plans = {
        "no_index": no_index,
        "index": with_index,
        "index_generic": generic,
        **explain_ordered_index(bench, literal),
    }
    bench.probe()

    script = wrk_script(bench)
    pg_script, pg_query = pgbench_script(bench, sql_after, params_after)
    runs = measure(
        {
            "wrk": lambda seconds: wrk(bench, script, seconds),
            "pgbench": lambda seconds: pgbench(bench, pg_script, seconds),
            "pgbench-pool": lambda seconds: pgbench(bench, pg_script, seconds, POOL),
        }
    )
    bench.probe()  # still right after the load
    roost, pg, pg_pool = (median_load(runs[k]) for k in ("wrk", "pgbench", "pgbench-pool"))

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git_state(),
        "nproc": os.cpu_count(),
        "loadavg_start": start_load,
        "loadavg_end": loadavg(),
        "versions": {
            "postgres": bench.sql("SHOW server_version"),
            "python": platform.python_version(),
            "wrk": first_line(["wrk", "-v"]),
            "pgbench": first_line([pgbench_binary(bench), "--version"]),
        },
        "settings": {
            "records": RECORDS,
            "tags": TAGS,
            "seed_clients": SEED_CLIENTS,
            "explain_runs": EXPLAIN_RUNS,
            "duration": DURATION,
            "warmup": WARMUP,
            "repeats": REPEATS,
            "conns": CONNS,
            "threads": THREADS,
            "roost_workers": WORKERS,
            "postgres_durable": bench.pg.durable,
        },
        "records": RECORDS,
        "seed": seeded,
        "path": urllib.parse.unquote(list_path(TAG)),
        "sql": sql_after,
        "parameters": {f"${n}": v for n, v in sorted(params_after.items())},
        "statements_per_request": statements,
        "indexes": indexes,
        "index": index,
        "explain": {key: plan.report() for key, plan in plans.items()},
        "index_used": with_index.uses("ix_"),
        "pgbench_script": pg_query,
        "roost": asdict(roost),
        "roost_runs": [asdict(r) for r in runs["wrk"]],
        "pgbench": asdict(pg),
        "pgbench_runs": [asdict(r) for r in runs["pgbench"]],
        "pgbench_pool": asdict(pg_pool),
        "pgbench_pool_runs": [asdict(r) for r in runs["pgbench-pool"]],
        "ratio": roost.rps / pg.rps,
        "ratio_per_round": per_round(runs["wrk"], runs["pgbench"]),
        "ratio_pool": roost.rps / pg_pool.rps,
        "ratio_pool_per_round": per_round(runs["wrk"], runs["pgbench-pool"]),
    }


def main() -> int:
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk (or make bench-postgres)")
    sys.path.insert(0, str(REPO / "tests"))
    from postgres_server import start_server

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="roost-bench-pg-"))
    bench: Bench | None = None
    try:
        bench = Bench(folder=folder, pg=start_server(durable=True))
        results = run(bench)
    finally:
        if bench is not None:
            bench.stop_roost()
            bench.pg.destroy()
        if os.environ.get("KEEP_DATA"):
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    results["wall_seconds"] = time.monotonic() - started
    out = RESULTS / f"postgres-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(table)
    print(f"\nSQL, parameters {results['parameters']}:\n{results['sql']}\n")
    for key, plan in results["explain"].items():
        print(f"EXPLAIN (ANALYZE, BUFFERS), {key}:\n{plan['text']}\n")
    print(table)
    log(f"wrote {out}/results.{{json,md}}; {results['wall_seconds']:.0f} s in all")
    if any(results[key]["errors"] for key in ("roost", "pgbench", "pgbench_pool")):
        log("FAILED: wrk saw non-2xx responses, or pgbench failed transactions")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
