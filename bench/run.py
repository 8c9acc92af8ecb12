#!/usr/bin/env python3
"""``make bench`` / ``make bench-quick``: Roost under six workloads, beside its ceilings
and (with ``PEER_PARSE_URL``) Parse Server, all measured in the same run.

Usage:  .venv/bin/python bench/run.py [--quick]      (see bench/README.md for every knob)

1. HTTP ceilings: the bare ASGI hello world on Granian (``harness/hello.py``) with each
   worker count of the plan.
2. For each store (SQLite in a throwaway folder; a throwaway durable PostgreSQL): the
   admin is made with ``roost admin create``; one ``roost serve`` seeds the data
   (``harness/dataset.py``) and answers a probe of each workload; the database ceilings
   run on that data (raw driver for (a) and (b), ``pgbench -S`` on PostgreSQL); then each
   configuration (1 worker, 2 workers) serves the workloads (a) (b) (f) (e) (c) (d) in
   turn, a warm-up then REPEATS runs of ``wrk`` each, the probe again, and on SQLite with
   one worker a py-spy profile of the worker under (a) and under (b).
3. The peer, if asked: the same workloads against Parse Server's REST API.
4. ``bench/results/<UTC time>/``: results.json, results.md (printed), chart.png, profiles.
Everything started is stopped and deleted at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness import ceilings, dataset, hashing
from harness.backends import Backend, open_backend
from harness.chart import draw
from harness.client import HOST
from harness.cpu import Meter, wait_idle
from harness.load import WRK_TIMEOUT, Load, measure, wrk
from harness.machine import cpu_model, first_line, git_state, loadavg
from harness.peer import ParsePeer
from harness.plan import Config, Plan, environment_mode, plan_from
from harness.pyspy import profile
from harness.report import markdown
from harness.results import HTTP, PGBENCH, Results
from harness.roost import RoostServer, log

HERE = Path(__file__).resolve().parent
LUA = HERE / "lua"
RESULTS = HERE / "results"
NOTES = [
    "Roost's requests carry a user's JWT and pass the collection's rules (view/list/update"
    " `owner = @auth.id`); Parse's use the REST key without a session (its peer's request"
    " shapes), so Parse checks no user per request.",
    "(e) on Parse is a `PUT` without a precondition: Parse's REST API has no If-Match.",
    "Each store is seeded once; its configurations then run one after the other on the same"
    " data, so (c), (e), (f) and (d) of the 1-worker run leave records, versions and"
    " sessions that the 2-worker run finds.",
    "Redis: `CONFIGS=...,postgres+redis-1` starts a throwaway Redis and gives Roost"
    " ROOST_CACHE_URL / ROOST_BROKER_URL (`make bench-cache` measures the cache on and off).",
]


def lua_env(workload: str, folder: Path, plan: Plan) -> dict[str, str]:
    return {
        "BENCH_LUA": str(LUA),
        "BENCH_DATA": str(folder),
        "BENCH_WORKLOAD": workload,
        "BENCH_THREADS": str(plan.threads),
    }


def wrk_runner(
    plan: Plan,
    url: str,
    groups: Mapping[str, Callable[[], list[int]]],
    script: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Callable[[int], Load]:
    """One wrk run; then, until the server is idle, a wait: the requests wrk left in
    flight (50 logins are seconds of hashing) must not weigh on the next run, nor a PATCH
    still running change a version the next run starts from."""

    def run(seconds: int) -> Load:
        meter = Meter(dict(groups))
        load = wrk(
            url, seconds, meter, script=script, threads=plan.threads, conns=plan.conns, env=env
        )
        wait_idle(groups["server"])
        return load

    return run


def measured(
    plan: Plan,
    name: str,
    runner: Callable[[int], Load],
    *,
    warmup: bool = True,
    workload: str = "",
) -> list[Load]:
    """A warm-up (unless the runner warms up itself), then REPEATS runs of DURATION s."""
    log(f"{name}:")
    seconds = max(plan.duration, plan.login_seconds) if workload == "d" else plan.duration
    runs = measure(
        {name: runner},
        warmup=plan.warmup if warmup else 0,
        repeats=plan.repeats,
        duration=seconds,
    )
    return runs[name]


def warm_up_server(plan: Plan, mixed: Callable[[int], Load]) -> None:
    """SERVER_WARMUP seconds of the mixed workload once, when a server has just started."""
    if plan.server_warmup > 0:
        log(f"warming the server up: {plan.server_warmup} s of (f)")
        mixed(plan.server_warmup)


# --- ceilings ----------------------------------------------------------------------------


def http_ceilings(plan: Plan, results: Results, work: Path) -> None:
    for workers in plan.workers():
        with ceilings.hello_server(workers, work / "hello.log") as hello:
            runner = wrk_runner(plan, hello.url, {"server": hello.pids})
            runs = measured(plan, f"HTTP ceiling, {workers} worker(s)", runner)
        results.add("ceiling", HTTP, "-", workers, runs)


def db_ceilings(
    plan: Plan, backend: Backend, server: RoostServer, data: dataset.Dataset, results: Results
) -> None:
    store = backend.label
    target = backend.target(server)
    keys = {"a": data.folder / "ids.txt", "b": data.folder / "owners.txt"}
    for workers in plan.workers(store):
        for workload in (w for w in "ab" if w in plan.workloads):
            warm = [plan.warmup]  # the first run warms up in its own processes

            def run(
                seconds: int,
                workload: str = workload,
                workers: int = workers,
                warm: list[int] = warm,
            ) -> Load:
                return ceilings.db_load(
                    backend,
                    target,
                    workload,
                    keys[workload],
                    workers=workers,
                    seconds=seconds,
                    conns=plan.conns,
                    warmup=warm.pop() if warm else 0,
                )

            name = f"DB ceiling ({workload}), {store}, {workers} process(es)"
            runs = measured(plan, name, run, warmup=False)
            results.add("ceiling", f"db-{workload}", store, workers, runs)
    if backend.pg is not None:
        ceilings.prepare_pgbench(backend, plan.pgbench_scale)

        def select(seconds: int) -> Load:
            return ceilings.pgbench_select(
                backend, seconds=seconds, conns=plan.conns, threads=plan.threads
            )

        runs = measured(plan, f"pgbench -S, scale {plan.pgbench_scale}", select)
        results.add("ceiling", PGBENCH, store, 1, runs)


# --- Roost -------------------------------------------------------------------------------


def roost_config(
    plan: Plan,
    backend: Backend,
    server: RoostServer,
    data: dataset.Dataset,
    config: Config,
    results: Results,
    out: Path,
) -> None:
    url = f"http://{HOST}:{server.port}/"
    script = LUA / "roost.lua"
    warm_up_server(
        plan, wrk_runner(plan, url, backend.groups(server), script, lua_env("f", data.folder, plan))
    )
    for workload in plan.workloads:
        env = lua_env(workload, data.folder, plan)
        runner = wrk_runner(plan, url, backend.groups(server), script, env)
        if workload == "e":
            patch = runner

            def runner(seconds: int, patch: Callable[[int], Load] = patch) -> Load:
                data.write_versions(backend.versions(server))  # start from current versions
                return patch(seconds)

        runs = measured(plan, f"Roost {config.name} ({workload})", runner, workload=workload)
        results.add("roost", workload, config.store, config.workers, runs)
    dataset.probe(server.port, data)  # still right after the load
    if config == Config("sqlite", False, 1) and plan.profile_seconds > 0:
        for workload in (w for w in "ab" if w in plan.workloads):
            env = {**os.environ, **lua_env(workload, data.folder, plan)}

            def start(seconds: int, env: dict[str, str] = env) -> subprocess.Popen[str]:
                command = ["wrk", f"-t{plan.threads}", f"-c{plan.conns}", f"-d{seconds}s"]
                command += ["--timeout", WRK_TIMEOUT, "-s", str(LUA / "roost.lua"), url]
                return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)

            log(f"profiling the worker under ({workload}) for {plan.profile_seconds} s")
            found = profile(server.pids(), start, plan.profile_seconds, out / f"profile-{workload}")
            results.meta["profiles"][f"{config.name} ({workload})"] = found
            wait_idle(server.pids)


def stop_and_report(server: RoostServer, config: Config, results: Results) -> None:
    """Stop the server; keep what it logged at error or warning level, apart for what came
    while it served the load and what came once it was told to stop (SIGTERM while wrk's
    last requests were still being served)."""
    under_load = server.errors() + server.warnings()
    started = time.monotonic()
    server.stop()
    stop_seconds = time.monotonic() - started
    at_stop = (server.errors() + server.warnings())[len(under_load) :]
    results.meta["server_log"][config.name] = {
        "under_load": len(under_load),
        "at_stop": len(at_stop),
        "stop_seconds": stop_seconds,
        "first": [line[:3000] for line in (under_load + at_stop)[:6]],
    }
    if under_load or at_stop or stop_seconds > 3:
        log(
            f"  {config.name}: {len(under_load)} errors/warnings logged under load,"
            f" {len(at_stop)} once stopped (in {stop_seconds:.1f} s)"
        )


def roost_store(plan: Plan, store: str, results: Results, out: Path) -> None:
    backend_name, _, _ = store.partition("+")
    log(f"{store}: starting a throwaway store")
    with open_backend(backend_name, redis="+redis" in store, keep=plan.keep) as backend:
        log(f"{store}: {backend.version()} ready; creating the admin")
        environment = {**plan.roost_env, **backend.environment}
        server = RoostServer(backend.folder / "roost", environment)
        server.cli("admin", "create", dataset.ADMIN_EMAIL, stdin=dataset.PASSWORD + "\n")
        server.start()
        try:
            log(f"{store}: seeding {dataset.RECORDS:,} records of {dataset.USERS} users")
            data = dataset.seed(server.port, backend.folder / "lua")
            backend.analyze()
            dataset.probe(server.port, data)
        finally:
            server.stop()
        log(f"  seeded in {sum(data.seconds.values()):.1f} s ({data.seconds})")
        results.meta["seed_seconds"][store] = data.seconds
        results.meta["versions"][store] = backend.version()
        db_ceilings(plan, backend, server, data, results)
        for config in (c for c in plan.configs if c.store == store):
            server.workers = config.workers
            server.start()
            try:
                roost_config(plan, backend, server, data, config, results, out)
            finally:
                stop_and_report(server, config, results)


# --- the peer ----------------------------------------------------------------------------


def parse_peer(plan: Plan, results: Results, work: Path) -> None:
    assert plan.peer is not None
    settings = plan.peer
    peer = ParsePeer(
        url=settings.url,
        app_id=settings.app_id,
        rest_key=settings.rest_key,
        master_key=settings.master_key,
        password=settings.password,
        folder=work / "parse",
        directory=settings.directory,
    )
    try:
        for workers in settings.workers:
            peer.restart(workers)
            peer.clean()
            found = peer.prepare()
            peer.probe()
            log(
                f"Parse Server {peer.version()} at {settings.url}, {workers} process(es):"
                f" {found:,} objects"
            )
            results.meta["peer_version"] = peer.version()
            groups = {"server": peer.pids, "postgres": peer.postgres_pids}
            mixed = {**lua_env("f", peer.folder, plan), **peer.lua_env()}
            warm_up_server(plan, wrk_runner(plan, peer.root, groups, LUA / "parse.lua", mixed))
            for workload in plan.workloads:
                env = {**lua_env(workload, peer.folder, plan), **peer.lua_env()}
                runner = wrk_runner(plan, peer.root, groups, LUA / "parse.lua", env)
                name = f"Parse, {workers} process(es) ({workload})"
                runs = measured(plan, name, runner, workload=workload)
                results.add("peer", workload, "parse", workers, runs)
    finally:
        peer.restart(1)
        peer.clean()


# --- main --------------------------------------------------------------------------------


def describe(plan: Plan) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": plan.mode,
        "git": git_state(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg_start": loadavg(),
        "settings": {
            "duration": plan.duration,
            "warmup": plan.warmup,
            "server_warmup": plan.server_warmup,
            "repeats": plan.repeats,
            "login_seconds": plan.login_seconds,
            "threads": plan.threads,
            "conns": plan.conns,
            "configs": [c.name for c in plan.configs],
            "workloads": plan.workloads,
            "pgbench_scale": plan.pgbench_scale,
            "roost_env": plan.roost_env,
            "peer": plan.peer.url if plan.peer else None,
        },
        "versions": {
            "python": f"Python {platform.python_version()}",
            "granian": f"Granian {importlib.metadata.version('granian')}",
            "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        },
        "dataset": (
            f"Collection `items`: {dataset.RECORDS:,} records of {dataset.USERS} users"
            f" ({dataset.RECORDS // dataset.USERS} each, signed up with POST /api/auth/signup),"
            " an index on `owner`, rules list/view/update `owner = @auth.id`, create"
            " `@auth.id != null`."
        ),
        "hashing": {
            "bench": hashing.verify_ms(
                int(plan.roost_env["ROOST_PASSWORD_TIME_COST"]),
                int(plan.roost_env["ROOST_PASSWORD_MEMORY_KIB"]),
                int(plan.roost_env["ROOST_PASSWORD_PARALLELISM"]),
            ),
            "roost_default": hashing.verify_ms(**hashing.ROOST_DEFAULT),
            "parse": hashing.PARSE,
        },
        "notes": NOTES,
        "seed_seconds": {},
        "server_log": {},
        "profiles": {},
    }


def main() -> int:
    plan = plan_from(os.environ, environment_mode(sys.argv[1:]))
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk (make bench installs it)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    started = time.monotonic()
    out = RESULTS / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="roost-bench-"))
    log(
        f"{plan.mode} run: {[c.name for c in plan.configs]}, workloads {plan.workloads},"
        f" {plan.repeats} x {plan.duration} s after {plan.warmup} s; results in {out}"
    )
    results = Results(meta=describe(plan))
    try:
        http_ceilings(plan, results, work)
        for store in plan.stores:
            roost_store(plan, store, results, out)
        if plan.peer is not None:
            parse_peer(plan, results, work)
    finally:
        if plan.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results.meta["wall_seconds"] = time.monotonic() - started
    results.meta["loadavg_end"] = loadavg()
    table = markdown(results)
    (out / "results.json").write_text(json.dumps(results.report(), indent=2) + "\n")
    (out / "results.md").write_text(table)
    draw(results, out / "chart.png")
    print(table)
    log(
        f"wrote {out}/ (results.json, results.md, chart.png, profiles);"
        f" {results.meta['wall_seconds']:.0f} s in all"
    )
    failed = [f"{row.config} ({row.name})" for row in results.of("roost") if row.load.errors]
    if failed:
        log(f"FAILED: Roost answered errors (non-2xx other than 412, or socket errors): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
