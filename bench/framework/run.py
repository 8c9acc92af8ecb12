#!/usr/bin/env python3
"""Reproduce the ASGI server/framework benchmark table, and measure Roost itself.

Usage:  python3 run.py [case-or-group ...]      (default: the framework cases)
        python3 run.py roost                    (bare ceiling + every Roost endpoint)
        python3 run.py --profile roost-read     (py-spy the worker under that load)
        python3 run.py --list                   (case and group names)
Env:    UVICORN_PY  python with uvicorn[standard] (default: <repo>/.venv/bin/python)
        GRANIAN_PY  python with granian + uvloop    (default: /tmp/gvenv/bin/python)
        VENV_PY     the project venv's python, for the Roost cases and the bare ceiling
                    next to them (default: <repo>/.venv/bin/python)
        DURATION=10 WARMUP=3 REPEATS=3 CONNS=50 THREADS=2 PORT=8765
        SEED_RECORDS=10000  KEEP_DATA=1 (keep the throwaway Roost data folder)
        PROFILE_OUT=/tmp/roost-profile (prefix of the py-spy files)

Each case: start one server worker on 127.0.0.1, check the response(s), run a
WARMUP-second wrk warm-up, then REPEATS runs of `wrk -tTHREADS -cCONNS
-dDURATIONs --latency [-s script.lua]`; the table shows the median of each metric.
A run with any non-2xx response or socket error in wrk's report exits with status 1.

Roost cases share one throwaway data folder (made once per run in $TMPDIR): an admin
(made with `roost admin create`) and its access token (from POST /api/auth/login, valid
for the whole run: ROOST_ACCESS_TOKEN_TTL_SECONDS is a day), a collection `items` (fields owner_tag,
score, title; an index on owner_tag; rules list/view public, writes admin-only) and
SEED_RECORDS records created over HTTP with /api/batch (100 creates per request).
Every Roost server runs with ROOST_LOG_LEVEL=warning, so the access log (an info
line per request) is filtered out and not written during the measurement.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness package

from harness.cpu import HZ, session_pids, thread_ticks, ticks
from harness.load import parse_wrk
from harness.pyspy import summarize

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
UVICORN_PY = os.environ.get("UVICORN_PY", str(REPO / ".venv/bin/python"))
GRANIAN_PY = os.environ.get("GRANIAN_PY", "/tmp/gvenv/bin/python")
VENV_PY = os.environ.get("VENV_PY", str(REPO / ".venv/bin/python"))
DURATION = int(os.environ.get("DURATION", 10))
WARMUP = int(os.environ.get("WARMUP", 3))
REPEATS = int(os.environ.get("REPEATS", 3))
CONNS = int(os.environ.get("CONNS", 50))
THREADS = int(os.environ.get("THREADS", 2))
PORT = int(os.environ.get("PORT", 8765))
SEED_RECORDS = int(os.environ.get("SEED_RECORDS", 10_000))
PROFILE_OUT = os.environ.get("PROFILE_OUT", "/tmp/roost-profile")
HOST = "127.0.0.1"
URL = f"http://{HOST}:{PORT}/"
ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench-password-not-secret"
TAGS = 100  # owner_tag values o0 .. o99


def uvicorn(app):
    return [
        UVICORN_PY,
        "-m",
        "uvicorn",
        f"apps:{app}",
        "--host",
        HOST,
        "--port",
        str(PORT),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def granian(app, python=GRANIAN_PY, factory=False):
    return [
        python,
        "-m",
        "granian",
        app,
        "--interface",
        "asgi",
        "--host",
        HOST,
        "--port",
        str(PORT),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        *(["--factory"] if factory else []),
    ]


ROOST_APP = granian("roost.cli.serve:app_factory", VENV_PY, factory=True)


@dataclass
class Case:
    cmd: list[str]
    check: Callable[[Roost | None], None]
    script: str | None = None  # Lua script name, written by Roost.scripts()
    env: dict[str, str] = field(default_factory=dict)
    roost: bool = False
    note: str = ""


# --- checks (one request of each kind the load makes, before any wrk run) ----------------


def get(path, headers=None):
    conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def request(method, path, body=None, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, PORT, timeout=60)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        if own:
            conn.close()


def check_hello(_fixture):
    status, _, body = get("/")
    assert status == 200 and body == b'{"message":"hello","ok":true}', (status, body)


def check_starlette(_fixture):
    status, headers, body = get("/")
    assert status == 200 and body == b'{"message":"hello","ok":true}', (status, body)
    lower = {k.lower() for k in headers}
    assert "x-request-id" in lower and "x-backend" in lower, headers


def check_health(_fixture):
    status, _, body = get("/api/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)


def _check_reads(fixture, headers):
    for record_id in fixture.ids[:3] + fixture.ids[-3:]:
        status, _, body = get(f"/api/collections/items/records/{record_id}", headers)
        doc = json.loads(body)
        assert status == 200 and doc["id"] == record_id and "owner_tag" in doc, (status, body)


def check_read(fixture):
    _check_reads(fixture, {})


def check_read_token(fixture):
    _check_reads(fixture, fixture.auth)


def check_list(fixture):
    for tag in ("o0", "o42", f"o{TAGS - 1}"):
        status, _, body = get(list_path(tag))
        doc = json.loads(body)
        assert status == 200 and len(doc["items"]) == 20, (status, body[:300])
        assert all(item["owner_tag"] == tag for item in doc["items"]), body[:300]
    fixture.explain_list()


def check_create(fixture):
    status, body = request(
        "POST",
        "/api/collections/items/records",
        {"owner_tag": "o1", "score": 1, "title": "probe"},
        fixture.auth,
    )
    assert status == 201 and json.loads(body)["version"] == 1, (status, body)


def list_path(tag):
    query = urllib.parse.urlencode({"filter": f'owner_tag="{tag}"', "limit": 20})
    return f"/api/collections/items/records?{query}"


CASES = {
    "bare-uvicorn": Case(uvicorn("bare"), check_hello),
    "bare-granian": Case(granian("apps:bare"), check_hello),
    "starlette-pure-mw-uvicorn": Case(uvicorn("star_pure"), check_starlette),
    "starlette-pure-mw-granian": Case(granian("apps:star_pure"), check_starlette),
    "starlette-basehttp-mw-uvicorn": Case(uvicorn("star_base"), check_starlette),
    # Roost, all on granian from the project venv
    "bare-venv-granian": Case(
        granian("apps:bare", VENV_PY), check_hello, note="bare ASGI hello (ceiling)"
    ),
    "roost-health": Case(
        ROOST_APP, check_health, script="health.lua", roost=True, note="GET /api/health"
    ),
    "roost-read": Case(
        ROOST_APP,
        check_read,
        script="read.lua",
        roost=True,
        note="GET record by random id, anonymous",
    ),
    "roost-read-token": Case(
        ROOST_APP,
        check_read_token,
        script="read_token.lua",
        roost=True,
        note="same, with admin Bearer token",
    ),
    "roost-list": Case(
        ROOST_APP,
        check_list,
        script="list.lua",
        roost=True,
        note='list filter owner_tag="oN" limit 20 (indexed)',
    ),
    "roost-create": Case(
        ROOST_APP,
        check_create,
        script="create.lua",
        roost=True,
        note="POST record, admin, synchronous=FULL",
    ),
    "roost-create-normal": Case(
        ROOST_APP,
        check_create,
        script="create.lua",
        roost=True,
        env={"ROOST_SQLITE_SYNCHRONOUS": "NORMAL"},
        note="POST record, admin, synchronous=NORMAL",
    ),
}
GROUPS = {
    "framework": [
        "bare-uvicorn",
        "bare-granian",
        "starlette-pure-mw-uvicorn",
        "starlette-pure-mw-granian",
        "starlette-basehttp-mw-uvicorn",
    ],
    "roost": [
        "bare-venv-granian",
        "roost-health",
        "roost-read",
        "roost-read-token",
        "roost-list",
        "roost-create",
        "roost-create-normal",
    ],
}
CEILING = {"roost": "bare-venv-granian"}


# --- the Roost fixture: data folder, admin token, seeded collection, Lua scripts ---------


class Roost:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="roost-bench-"))
        self.env = {
            "ROOST_DATA_DIR": str(self.dir / "data"),
            "ROOST_LOG_LEVEL": "warning",  # no access log lines during measurement
            "ROOST_CONFIG": str(self.dir / "no-roost.toml"),  # ignore any ./roost.toml
            "ROOST_ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600),  # outlives every run
        }
        self.token = ""
        self.ids: list[str] = []

    @property
    def auth(self):
        return {"Authorization": f"Bearer {self.token}"}

    def cli(self, *args, stdin=""):
        roost = str(Path(VENV_PY).parent / "roost")
        out = subprocess.run(
            [roost, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            check=True,
        )
        return out.stdout.strip()

    def prepare(self):
        print(f"roost data folder: {self.dir}", file=sys.stderr)
        self.cli("admin", "create", ADMIN_EMAIL, stdin=ADMIN_PASSWORD + "\n")
        with server(ROOST_APP, {**os.environ, **self.env}):
            self.sign_in()
            self.seed()
        self.scripts()

    def sign_in(self):
        """The admin signs in as any client does; the access token goes in every request."""
        status, body = request(
            "POST", "/api/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        assert status == 200, (status, body)
        self.token = json.loads(body)["access_token"]

    def seed(self):
        t0 = time.monotonic()
        status, body = request(
            "POST",
            "/api/collections",
            {
                "name": "items",
                "fields": {
                    "owner_tag": {"type": "string", "required": True},
                    "score": {"type": "integer"},
                    "title": {"type": "string", "max_length": 200},
                },
                "indexes": [{"fields": ["owner_tag"]}],
                "rules": {"list": "", "view": ""},
            },
            self.auth,
        )
        assert status == 201, (status, body)
        conn = http.client.HTTPConnection(HOST, PORT, timeout=60)
        for start in range(0, SEED_RECORDS, 100):
            ops = [
                {
                    "action": "create",
                    "collection": "items",
                    "data": {"owner_tag": f"o{i % TAGS}", "score": i, "title": f"item {i}"},
                }
                for i in range(start, min(start + 100, SEED_RECORDS))
            ]
            status, body = request("POST", "/api/batch", {"operations": ops}, self.auth, conn)
            results = json.loads(body)["results"] if status == 200 else None
            assert results and all(r["status"] == 201 for r in results), (status, body[:300])
            self.ids.extend(r["record"]["id"] for r in results)
        conn.close()
        print(f"seeded {len(self.ids)} records in {time.monotonic() - t0:.1f}s", file=sys.stderr)

    def scripts(self):
        """Lua scripts; requests are pre-formatted in init() so wrk spends little per request."""
        pick = (
            "local n = 0\nfunction setup(thread) n = n + 1; thread:set('tid', n) end\n"
            "function init(args)\n  math.randomseed(os.time() * 97 + tid)\n"
            "  for i, p in ipairs(paths) do reqs[i] = wrk.format(nil, p) end\nend\n"
            "request = function() return reqs[math.random(#reqs)] end\n"
        )
        auth = f'wrk.headers["Authorization"] = "Bearer {self.token}"\n'
        sample = self.ids[:: max(1, len(self.ids) // 2000)][:2000]  # 2,000 ids, spread
        reads = (
            "reqs = {}\npaths = {\n"
            + "".join(f'  "/api/collections/items/records/{i}",\n' for i in sample)
            + "}\n"
        )
        lists = (
            "reqs = {}\npaths = {\n"
            + "".join(f'  "{list_path(f"o{t}")}",\n' for t in range(TAGS))
            + "}\n"
        )
        body = json.dumps({"owner_tag": "o7", "score": 7, "title": "created by wrk"})
        files = {
            "health.lua": 'wrk.path = "/api/health"\n',
            "read.lua": reads + pick,
            "read_token.lua": auth + reads + pick,
            "list.lua": lists + pick,
            "create.lua": (
                auth + 'wrk.method = "POST"\nwrk.path = '
                '"/api/collections/items/records"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n"
            ),
        }
        for name, text in files.items():
            (self.dir / name).write_text(text)
        print(f"read scripts pick from {len(sample)} ids", file=sys.stderr)

    def explain_list(self):
        """Print SQLite's plan for the list query: it must search the owner_tag index."""
        code = (
            "import sqlite3, sys\n"
            "from roost.query.sql import compile_filter\n"
            "from roost.query.parser import parse\n"
            "from roost.query.sqlite import SQLiteDialect\n"
            "where, params = compile_filter(parse('owner_tag=\"o42\"'), SQLiteDialect(), {})\n"
            "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
            "sql = f'EXPLAIN QUERY PLAN SELECT * FROM r_items WHERE ({where})"
            " ORDER BY id ASC LIMIT 21'\n"
            "print('; '.join(row[-1] for row in db.execute(sql, params)))\n"
        )
        plan = subprocess.run(
            [VENV_PY, "-c", code, str(self.dir / "data/roost.db")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"  list query plan: {plan}", file=sys.stderr)
        assert "USING INDEX ix_items_" in plan, plan

    def cleanup(self):
        if os.environ.get("KEEP_DATA"):
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- measuring ---------------------------------------------------------------------------


def wait_port(timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, PORT), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not open port {PORT}")


class server:
    """Context manager: the server in its own session; SIGTERM to the session at exit."""

    def __init__(self, cmd, env=None):
        self.cmd, self.env = cmd, env

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, cwd=HERE, start_new_session=True, env=self.env)
        try:
            wait_port()
        except BaseException:
            self.__exit__()
            raise
        return self.proc

    def __exit__(self, *exc):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def server_cpu_seconds(sid):
    """utime+stime of every process in the server's session (master + workers)."""
    return sum(ticks(pid) or 0 for pid in session_pids(sid)) / HZ


def wrk(seconds, sid=None, script=None, path="/"):
    cpu0, t0 = (server_cpu_seconds(sid) if sid else 0.0), time.monotonic()
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(
        cmd + [URL.rstrip("/") + path], check=True, capture_output=True, text=True
    ).stdout
    cpu = (server_cpu_seconds(sid) - cpu0) / (time.monotonic() - t0) if sid else 0.0
    load = parse_wrk(out, {})
    return {
        "rps": load.rps_all,
        "p50": load.p50,
        "p99": load.p99,
        "requests": load.requests,
        "cpu": 100 * cpu,
        "non2xx": load.non2xx,
        "errors": load.note.removeprefix("socket errors: "),
    }


def start(name, fixture):
    case = CASES[name]
    env = {**os.environ, **(fixture.env if case.roost else {}), **case.env}
    script = fixture.dir / case.script if case.script else None
    return case, env, script


def bench(name, fixture):
    case, env, script = start(name, fixture)
    with server(case.cmd, env) as proc:
        case.check(fixture)
        wrk(WARMUP, script=script)
        runs = [wrk(DURATION, proc.pid, script) for _ in range(REPEATS)]
        case.check(fixture)  # still answering correctly after the load
    for r in runs:
        bad = f" NON-2XX={r['non2xx']}" if r["non2xx"] else ""
        bad += f" SOCKET-ERRORS({r['errors']})" if r["errors"] else ""
        print(
            f"  {name}: {r['rps']:.0f} req/s p50={r['p50']:.2f}ms "
            f"p99={r['p99']:.2f}ms cpu={r['cpu']:.0f}%{bad}",
            file=sys.stderr,
        )
    result = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "cpu")}
    result["non2xx"] = sum(r["non2xx"] for r in runs)
    result["errors"] = "; ".join(r["errors"] for r in runs if r["errors"])
    result["requests"] = sum(r["requests"] for r in runs)
    return result


def expand(args):
    names = []
    for arg in args or ["framework"]:
        if arg in GROUPS:
            names += GROUPS[arg]
        elif arg in CASES:
            names.append(arg)
        else:
            sys.exit(
                f"unknown case {arg!r}; cases: {', '.join(CASES)}; groups: {', '.join(GROUPS)}"
            )
    return list(dict.fromkeys(names))


def main():
    args = sys.argv[1:]
    if args[:1] == ["--list"]:
        for group, members in GROUPS.items():
            print(f"{group}: {' '.join(members)}")
        return 0
    if args[:1] == ["--profile"]:
        return profile(args[1] if len(args) > 1 else "roost-read")
    names = expand(args)
    print(
        f"wrk -t{THREADS} -c{CONNS} -d{DURATION}s --latency, warm-up {WARMUP}s, "
        f"median of {REPEATS}, nproc={os.cpu_count()}",
        file=sys.stderr,
    )
    fixture = Roost() if any(CASES[n].roost for n in names) else None
    try:
        if fixture:
            fixture.prepare()
        rows = [(n, bench(n, fixture)) for n in names]
    finally:
        if fixture:
            fixture.cleanup()
    ceiling = next((m["rps"] for n, m in rows if n in CEILING.values()), None)
    print(
        f"\nwrk -t{THREADS} -c{CONNS} -d{DURATION}s --latency, warm-up {WARMUP}s, "
        f"median of {REPEATS}, nproc={os.cpu_count()}\n"
    )
    print(
        "| case | what | req/s | p50 (ms) | p99 (ms) | vs ceiling | server CPU | non-2xx |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    failed = False
    for name, m in rows:
        ratio = f"{m['rps'] / ceiling:.2f}" if ceiling else "-"
        bad = m["non2xx"] + (1 if m["errors"] else 0)
        failed |= bool(bad)
        errs = f" ({m['errors']})" if m["errors"] else ""
        print(
            f"| {name} | {CASES[name].note} | {m['rps']:,.0f} | {m['p50']:.2f} | "
            f"{m['p99']:.2f} | {ratio} | {m['cpu']:.0f}% | {m['non2xx']}{errs} |"
        )
    if failed:
        print("\nFAILED: some responses were not 2xx, or wrk saw socket errors", file=sys.stderr)
    return 1 if failed else 0


# --- profiling ---------------------------------------------------------------------------


def profile(name):
    """py-spy the busiest server process (the worker) for DURATION s under `name`'s load."""
    pyspy = str(Path(VENV_PY).parent / "py-spy")
    fixture = Roost() if CASES[name].roost else None
    raw = Path(f"{PROFILE_OUT}.txt")
    try:
        if fixture:
            fixture.prepare()
        case, env, script = start(name, fixture)
        with server(case.cmd, env) as proc:
            case.check(fixture)
            wrk(WARMUP, script=script)
            before = {pid: ticks(pid) or 0 for pid in session_pids(proc.pid)}
            time.sleep(1)
            load = subprocess.Popen(
                [
                    "wrk",
                    f"-t{THREADS}",
                    f"-c{CONNS}",
                    f"-d{DURATION + 4}s",
                    "--latency",
                    *(["-s", str(script)] if script else []),
                    URL.rstrip("/") + "/",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)
            busiest = max(
                session_pids(proc.pid), key=lambda pid: (ticks(pid) or 0) - before.get(pid, 0)
            )
            print(f"profiling pid {busiest} ({name}) for {DURATION}s", file=sys.stderr)
            ticks0, t0 = thread_ticks(busiest), time.monotonic()
            # --gil: only samples of the thread holding the GIL, i.e. Python actually running.
            # (Without it, aiosqlite threads blocked in SimpleQueue.get, a C call, count as busy.)
            subprocess.run(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(busiest),
                    "--duration",
                    str(DURATION),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--threads",
                    "--function",
                    "--gil",
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                check=True,
                capture_output=True,
            )
            ticks1, t1 = thread_ticks(busiest), time.monotonic()
            subprocess.run(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(busiest),
                    "--duration",
                    "3",
                    "--rate",
                    "250",
                    "--output",
                    f"{PROFILE_OUT}.svg",
                    "--nonblocking",
                ],
                check=True,
                capture_output=True,
            )
            out = load.communicate()[0]
            print(
                "  "
                + " | ".join(
                    line.strip()
                    for line in out.splitlines()
                    if "Requests/sec" in line or "Non-2xx" in line
                ),
                file=sys.stderr,
            )
    finally:
        if fixture:
            fixture.cleanup()
    print(
        f"\nworker CPU by thread over the sampled {t1 - t0:.1f}s (from /proc, incl. py-spy's"
        " own pauses):"
    )
    for tid, (comm, spent) in sorted(ticks1.items(), key=lambda kv: -kv[1][1]):
        used = 100 * (spent - ticks0.get(tid, (comm, 0))[1]) / HZ / (t1 - t0)
        if used >= 0.5:
            print(f"  {used:5.1f}%  {comm} ({tid})")
    print("\n" + summarize(raw, seconds=t1 - t0), end="")
    print(f"\nraw stacks: {raw}   flame graph: {PROFILE_OUT}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
