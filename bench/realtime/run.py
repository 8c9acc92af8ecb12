#!/usr/bin/env python3
"""``make bench-realtime``: N WebSocket subscribers on one Roost, writers, delivery latency.

Usage:  .venv/bin/python bench/realtime/run.py [--quick]     (bench/README.md, "Realtime")
Env:    SUBSCRIBERS=1000,10000 PER_ROOM=10 RATE=20 DURATION=10 MATCH_WRITES=50
        MATCH_GAP=0.2 BURST=1000 BROADCAST_WRITES=5 IDLE_SECONDS=3 CONCURRENCY=200
        CLIENT_PROCESSES=1 STORES=sqlite (or postgres, or sqlite,postgres) CEILING=1
        KEEP_DATA=1  RAW=<folder> (every write and receipt, as JSON, for a closer look)
        Other ROOST_* variables reach Roost; ROOST_REALTIME_MAX_CONNECTIONS_PER_USER is
        100000 unless set (every subscriber is anonymous from 127.0.0.1: one "user").

The soft limit of open files is raised to the hard one (N client sockets in the
subscriber processes, N server sockets in Roost's worker; both inherit it). First the
ceiling (CEILING=0: none): a bare ASGI WebSocket app on Granian (``bare.py``) takes the
same N connections and the broadcast (D). Then for each store, and each N of
SUBSCRIBERS, a fresh ``roost serve --workers 1`` on the same throwaway data (collections
``msgs``: ``room``, ``sent``; ``news``: ``sent``; rules list/view anyone, writes
admin-only), then:

1. CLIENT_PROCESSES subscriber processes (``clients.py``, asyncio + uvloop + websockets)
   open N connections, CONCURRENCY handshakes at a time; subscriber i signs in
   anonymously and subscribes with ``room = "r<i mod N/PER_ROOM>"``. The server's RSS
   (all its processes, /proc VmRSS) before and after: memory per connection. Then
   IDLE_SECONDS with nothing to send: the server's CPU holding N idle connections.
2. (A) fan-out at a fixed rate: the admin creates RATE records a second for DURATION s
   over one keep-alive connection, each in a random room: each reaches that room's
   PER_ROOM subscribers. Delivery latency from the write's response and from its
   request, events expected and received, events/s delivered.
3. (B) matching cost: MATCH_WRITES single writes to a random room, MATCH_GAP s apart:
   time to the room's last subscriber. Flat from 1,000 to 10,000 subscribers when the
   hub only looks at the room's subscribers.
4. (C) burst: BURST creates back to back: the write rate one HTTP client reaches, and
   the events/s the server delivers meanwhile.
5. (D) broadcast: every connection also subscribes to all of ``news``; BROADCAST_WRITES
   creates there, each awaited until all N subscribers have it: time to the last one.
6. ``bench/results/realtime-<UTC time>/``: results.json, results.md (also printed).
Everything started is stopped and deleted at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: harness, realtime

from harness import dataset
from harness.backends import open_backend
from harness.client import Client
from harness.cpu import Meter
from harness.machine import cpu_model, first_line, git_state, loadavg
from harness.roost import VENV_PY, RoostServer, log

from realtime.ceiling import bare_server
from realtime.fleet import Fleet
from realtime.report import markdown
from realtime.stats import deliveries, summary
from realtime.writer import Write, Writer

RESULTS = Path(__file__).resolve().parents[1] / "results"
SETTLE_SECONDS = 1.0
"""Pause after connecting, before reading the server's RSS (its last acks are sent)."""
MODES: dict[str, dict[str, str]] = {
    "full": {
        "SUBSCRIBERS": "1000,10000",
        "DURATION": "10",
        "MATCH_WRITES": "50",
        "BURST": "1000",
        "BROADCAST_WRITES": "5",
        "IDLE_SECONDS": "3",
    },
    "quick": {
        "SUBSCRIBERS": "1000",
        "DURATION": "3",
        "MATCH_WRITES": "10",
        "BURST": "200",
        "BROADCAST_WRITES": "2",
        "IDLE_SECONDS": "1",
    },
}
RULES = {"list": "", "view": "", "create": None, "update": None, "delete": None}
COLLECTIONS: list[dict[str, Any]] = [
    {
        "name": "msgs",
        "fields": {"room": {"type": "string", "max_length": 20}, "sent": {"type": "string"}},
        "rules": RULES,
    },
    {"name": "news", "fields": {"sent": {"type": "string"}}, "rules": RULES},
]


@dataclass(frozen=True)
class Plan:
    mode: str
    subscribers: list[int]
    per_room: int
    rate: float
    duration: float
    match_writes: int
    match_gap: float
    burst: int
    broadcast_writes: int
    idle_seconds: float
    concurrency: int
    processes: int
    stores: list[str]
    keep: bool
    ceiling: bool
    raw: Path | None
    """Where to write every write and receipt (RAW=folder), for a closer look."""
    roost_env: dict[str, str]


def plan_from(env: dict[str, str], mode: str) -> Plan:
    def get(name: str, default: str = "") -> str:
        return env.get(name) or MODES[mode].get(name, default)

    return Plan(
        mode=mode,
        subscribers=[int(n) for n in get("SUBSCRIBERS").split(",") if n.strip()],
        per_room=int(get("PER_ROOM", "10")),
        rate=float(get("RATE", "20")),
        duration=float(get("DURATION")),
        match_writes=int(get("MATCH_WRITES")),
        match_gap=float(get("MATCH_GAP", "0.2")),
        burst=int(get("BURST")),
        broadcast_writes=int(get("BROADCAST_WRITES")),
        idle_seconds=float(get("IDLE_SECONDS")),
        concurrency=int(get("CONCURRENCY", "200")),
        processes=int(get("CLIENT_PROCESSES", "1")),
        stores=[s.strip() for s in get("STORES", "sqlite").split(",") if s.strip()],
        keep=bool(env.get("KEEP_DATA")),
        ceiling=get("CEILING", "1") != "0",
        raw=Path(env["RAW"]) if env.get("RAW") else None,
        roost_env={
            "ROOST_REALTIME_MAX_CONNECTIONS_PER_USER": env.get(
                "ROOST_REALTIME_MAX_CONNECTIONS_PER_USER", "100000"
            ),
        },
    )


# --- the machine -------------------------------------------------------------------------


def raise_fd_limit(plan: Plan) -> dict[str, int]:
    """The soft RLIMIT_NOFILE up to the hard limit (the server and the subscriber
    processes inherit it); exits when it cannot hold the largest N."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    largest = max(plan.subscribers)
    needed = largest + 200  # the server: one socket per subscriber, plus its own files
    file_max = int(Path("/proc/sys/fs/file-max").read_text())
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    found = {"soft": target, "hard": hard, "needed": needed, "file_max": file_max}
    if target < needed:
        sys.exit(f"RLIMIT_NOFILE {target} (hard {hard}) < {needed}: raise `ulimit -Hn` first")
    if file_max < 2 * largest + 1000:
        sys.exit(f"fs.file-max {file_max} is too low for {largest} subscribers: raise it")
    if high - low < largest + 1000:
        sys.exit(f"net.ipv4.ip_local_port_range {low}-{high} has too few ports for {largest}")
    return found


def rss_kib(pids: list[int]) -> int:
    """The resident memory of ``pids`` together, in KiB (VmRSS)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


# --- one store, one N --------------------------------------------------------------------


def prepare(server: RoostServer) -> str:
    """The admin's access token, and the collections (on a freshly created store)."""
    server.cli("admin", "create", dataset.ADMIN_EMAIL, stdin=dataset.PASSWORD + "\n")
    server.start()
    try:
        with Client(server.port) as client:
            credentials = {"email": dataset.ADMIN_EMAIL, "password": dataset.PASSWORD}
            status, body = client.call("POST", "/api/auth/login", credentials)
            assert status == 200, (status, body)
            token: str = body["access_token"]
        with Client(server.port, token) as admin:
            for definition in COLLECTIONS:
                status, body = admin.call("POST", "/api/collections", definition)
                assert status == 201, (status, body)
    finally:
        server.stop()
    return token


class Target(Protocol):
    """A server the subscribers connect to: ``roost serve`` or the bare ceiling."""

    port: int

    def pids(self) -> list[int]: ...


def measure(
    plan: Plan, server: Target, token: str, n: int, work: Path, scenarios: str = "ABCD"
) -> dict[str, Any]:
    rooms = max(1, n // plan.per_room)
    row: dict[str, Any] = {"subscribers": n, "rooms": rooms}
    fleet = Fleet(
        server.port,
        n,
        rooms,
        processes=plan.processes,
        concurrency=plan.concurrency,
        log_path=work / "clients.log",
    )
    groups = {"server": server.pids, "clients": fleet.pids}
    with fleet, Writer(server.port, token) as writer:
        fleet.command("warm")  # the first WebSocket and the first create, before measuring
        writer.create("warm", "msgs", "warm")
        time.sleep(SETTLE_SECONDS)
        row["rss_before_kib"] = rss_kib(server.pids())
        log(f"  {n:,} subscribers in {rooms:,} rooms: connecting")
        with Meter(groups) as meter:
            connect = fleet.connect()
        connected = connect["connected"]
        row["connect"] = {
            "connected": len(connected),
            "failed": connect["failed"],
            "errors": connect["errors"],
            "seconds": connect["seconds"],
            "per_second": len(connected) / connect["seconds"],
            "open_ms": summary([s * 1000 for s in connect["open_seconds"]]),
            "cpu": meter.shares(),
        }
        time.sleep(SETTLE_SECONDS)
        row["rss_after_kib"] = rss_kib(server.pids())
        row["client_rss_kib"] = rss_kib(fleet.pids())
        row["kib_per_connection"] = (row["rss_after_kib"] - row["rss_before_kib"]) / max(
            1, len(connected)
        )
        log(
            f"  {len(connected):,} connected in {connect['seconds']:.1f} s,"
            f" {connect['failed']} failed; server RSS {row['rss_before_kib'] / 1024:.0f}"
            f" -> {row['rss_after_kib'] / 1024:.0f} MiB"
        )
        with Meter(groups) as meter:
            time.sleep(plan.idle_seconds)
        row["idle_cpu"] = meter.shares()

        members: dict[str | None, list[int]] = defaultdict(list)
        for index in connected:
            members[f"r{index % rooms}"].append(index)
        writes = []
        expected = 0

        def delivered(batch: list[Write], name: str) -> None:
            nonlocal expected
            writes.extend(batch)
            expected += sum(len(members[w.room]) for w in batch if w.id is not None)
            waited = fleet.wait_for(expected)
            log(f"  {name}: {len(batch)} writes, delivered {waited:.1f} s after the last")

        cpu: dict[str, dict[str, float]] = {}
        if "A" in scenarios:
            log(f"  (A) {plan.rate:g} writes/s for {plan.duration:g} s")
            with Meter(groups) as meter:
                delivered(writer.paced("A", plan.rate, plan.duration, rooms), "(A)")
            cpu["A"] = meter.shares()
        if "B" in scenarios:
            log(f"  (B) {plan.match_writes} writes {plan.match_gap:g} s apart")
            with Meter(groups) as meter:
                delivered(writer.spaced("B", plan.match_writes, plan.match_gap, rooms), "(B)")
            cpu["B"] = meter.shares()
        if "C" in scenarios:
            log(f"  (C) {plan.burst} writes back to back")
            with Meter(groups) as meter:
                delivered(writer.burst("C", plan.burst, rooms), "(C)")
            cpu["C"] = meter.shares()
        if "D" in scenarios and plan.broadcast_writes > 0:
            subscribed = fleet.command("subscribe news")
            row["broadcast_subscribed"] = sum(a["subscribed"] for a in subscribed)
            members[None] = list(connected)
            log(f"  (D) {plan.broadcast_writes} writes to all {len(connected):,}")
            with Meter(groups) as meter:
                for _ in range(plan.broadcast_writes):
                    delivered([writer.create("D", "news", None)], "(D)")
                    time.sleep(plan.match_gap)
            cpu["D"] = meter.shares()
        row["rss_end_kib"] = rss_kib(server.pids())
        row["client_rss_end_kib"] = rss_kib(fleet.pids())
        receipts, seen = fleet.dump(work)
    row["clients"] = seen
    if plan.raw is not None:
        raw = {"writes": [asdict(w) for w in writes], "receipts": receipts}
        (plan.raw / f"raw-{n}-{time.monotonic_ns()}.json").write_text(json.dumps(raw))
    row["scenarios"] = {}
    for scenario in scenarios:
        batch = [w for w in writes if w.scenario == scenario]
        if batch:
            row["scenarios"][scenario] = {
                **deliveries(batch, receipts, members),
                "cpu": cpu[scenario],
            }
    return row


def run_ceiling(plan: Plan, work: Path) -> list[dict[str, Any]]:
    """The bare ASGI WebSocket app on Granian (``bare.py``) under each N: connections,
    memory, idle CPU and the broadcast (D)."""
    rows = []
    for n in plan.subscribers:
        log(f"ceiling: bare ASGI WebSocket app on Granian, {n:,} subscribers")
        with bare_server(work / "bare.log") as server:
            row = measure(plan, server, "", n, work, scenarios="D")
        row["server"] = "bare Granian"
        row["server_log"] = {"under_load": 0, "at_stop": 0, "first": []}
        rows.append(row)
    return rows


def run_store(plan: Plan, store: str, work: Path) -> list[dict[str, Any]]:
    rows = []
    log(f"{store}: starting a throwaway store")
    with open_backend(store, keep=plan.keep) as backend:
        server = RoostServer(backend.folder / "roost", {**plan.roost_env, **backend.environment})
        token = prepare(server)
        for n in plan.subscribers:
            server.start()
            try:
                row = measure(plan, server, token, n, work)
            finally:
                under_load = server.errors() + server.warnings()
                server.stop()
                logged = server.errors() + server.warnings()
            row["server"] = backend.version().split()[0]
            row["store"] = backend.version()
            row["server_log"] = {
                "under_load": len(under_load),
                "at_stop": len(logged) - len(under_load),
                "first": [line[:2000] for line in logged[:6]],
            }
            rows.append(row)
    return rows


# --- main --------------------------------------------------------------------------------


def describe(plan: Plan, fds: dict[str, int]) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git": git_state(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg_start": loadavg(),
        "plan": asdict(plan),
        "fds": fds,
        "versions": {
            "python": f"Python {platform.python_version()}",
            **{
                name: first_line([VENV_PY, "-c", f"import {name}; print({name}.__version__)"])
                for name in ("websockets", "granian")
            },
        },
    }


def environment_mode(argv: list[str]) -> str:
    return "quick" if "--quick" in argv or os.environ.get("BENCH_MODE") == "quick" else "full"


def main() -> int:
    plan = plan_from(dict(os.environ), environment_mode(sys.argv[1:]))
    fds = raise_fd_limit(plan)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    started = time.monotonic()
    out = RESULTS / f"realtime-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="roost-bench-realtime-"))
    log(
        f"{plan.mode} realtime run: {plan.subscribers} subscribers, {plan.per_room} per room,"
        f" stores {plan.stores}; open files {fds['soft']}; results in {out}"
    )
    results: dict[str, Any] = {"meta": describe(plan, fds), "runs": []}
    try:
        if plan.ceiling:
            results["runs"] += run_ceiling(plan, work)
        for store in plan.stores:
            results["runs"] += run_store(plan, store, work)
    finally:
        if plan.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["meta"]["wall_seconds"] = time.monotonic() - started
    results["meta"]["loadavg_end"] = loadavg()
    table = markdown(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(table)
    print(table)
    log(f"wrote {out}/ (results.json, results.md); {results['meta']['wall_seconds']:.0f} s")
    bad = [
        f"{run['subscribers']} ({name})"
        for run in results["runs"]
        for name, scenario in run["scenarios"].items()
        if scenario["lost"] or scenario["duplicates"] or scenario["failed_writes"]
    ]
    bad += [f"{r['subscribers']} (connect)" for r in results["runs"] if r["connect"]["failed"]]
    if bad:
        log(f"FAILED: lost, duplicated or failed deliveries, writes or connects: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
