"""What a run measures and how long, from the environment (``make bench`` / ``make
bench-quick``; every knob is an environment variable, see bench/README.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKLOADS = {
    "a": "GET one record by id as its owner",
    "b": 'list filter=owner = "<id>" limit 20 as that owner',
    "c": "create a record as a random user",
    "d": "login (argon2id verify)",
    "e": "PATCH with If-Match as the owner",
    "f": "mixed: 80% a, 15% b, 5% c",
}
ORDER = "abfecd"
"""Reads first; the writes (PATCH, creates, logins' sessions) change the data after them."""
PARSE_WORKLOADS = {
    "a": "GET /parse/classes/Item/<id>",
    "b": 'GET /parse/classes/Item?where={"owner":"owner_N"}&limit=20',
    "c": "POST /parse/classes/Item",
    "d": "POST /parse/login (bcrypt verify)",
    "e": "PUT /parse/classes/Item/<id> (no If-Match in Parse)",
    "f": "mixed: 80% a, 15% b, 5% c",
}
MODES = {
    "full": {
        "DURATION": "3",
        "WARMUP": "1",
        "SERVER_WARMUP": "5",
        "LOGIN_SECONDS": "5",
        "REPEATS": "3",
        "CONFIGS": "sqlite-1,sqlite-2,postgres-1,postgres-2",
        "PROFILE_SECONDS": "5",
        "PGBENCH_SCALE": "10",
        "PEER_WORKERS": "1,2",
    },
    "quick": {
        "DURATION": "1",
        "WARMUP": "1",
        "SERVER_WARMUP": "2",
        "LOGIN_SECONDS": "3",
        "REPEATS": "1",
        "CONFIGS": "sqlite-1,postgres-1",
        "PROFILE_SECONDS": "1",
        "PGBENCH_SCALE": "1",
        "PEER_WORKERS": "1",
    },
}
CONFIG = re.compile(r"(sqlite|postgres)(\+redis)?-([1-9][0-9]*)")


@dataclass(frozen=True)
class Config:
    """One way to run Roost: ``sqlite-1``, ``postgres-2``, ``postgres+redis-1``."""

    backend: str
    redis: bool
    workers: int

    @classmethod
    def parse(cls, text: str) -> Config:
        found = CONFIG.fullmatch(text.strip())
        if found is None:
            raise ValueError(f"config {text!r}: BACKEND[+redis]-WORKERS, e.g. postgres-2")
        if found.group(1) == "sqlite" and found.group(2):
            raise ValueError(f"config {text!r}: Redis goes with PostgreSQL")
        return cls(found.group(1), bool(found.group(2)), int(found.group(3)))

    @property
    def store(self) -> str:
        return self.backend + ("+redis" if self.redis else "")

    @property
    def name(self) -> str:
        return f"{self.store}-{self.workers}"


@dataclass(frozen=True)
class Peer:
    url: str
    app_id: str
    rest_key: str
    master_key: str
    password: str
    directory: Path | None
    workers: list[int]


@dataclass(frozen=True)
class Plan:
    mode: str
    duration: int
    warmup: int
    server_warmup: int
    """Seconds of the mixed workload (f) once after a server starts, before any workload's
    own warm-up (Node's JIT needs seconds; the same for Roost and Parse)."""
    repeats: int
    login_seconds: int
    """Shortest run of (d): a login waits seconds in a queue (50 connections, a few
    dozen hashes a second), so a shorter run would count only the luckiest."""
    threads: int
    conns: int
    configs: list[Config]
    workloads: str
    profile_seconds: int
    pgbench_scale: int
    keep: bool
    peer: Peer | None
    roost_env: dict[str, str] = field(default_factory=dict)

    @property
    def stores(self) -> list[str]:
        """SQLite (the default) first, then PostgreSQL, then PostgreSQL with Redis."""
        return list(dict.fromkeys(c.store for c in self.configs))

    def workers(self, store: str | None = None) -> list[int]:
        return sorted({c.workers for c in self.configs if store in (None, c.store)})


def plan_from(env: Mapping[str, str], mode: str) -> Plan:
    """The plan of a ``mode`` run (``full`` or ``quick``), each default overridable."""

    def get(name: str) -> str:
        return env.get(name) or MODES[mode][name]

    configs = sorted(
        (Config.parse(c) for c in get("CONFIGS").split(",") if c.strip()),
        key=lambda c: (c.backend != "sqlite", c.redis, c.workers),  # the order they run in
    )
    workloads = "".join(w for w in ORDER if w in env.get("WORKLOADS", ORDER).replace(",", ""))
    peer = None
    if url := env.get("PEER_PARSE_URL", ""):
        directory = env.get("PEER_PARSE_DIR", "")
        running = env.get("PEER_PARSE_WORKERS", "1")
        peer = Peer(
            url=url.rstrip("/"),
            app_id=env.get("PEER_PARSE_APP_ID", "bench-app"),
            rest_key=env.get("PEER_PARSE_REST_KEY", "bench-rest-key"),
            master_key=env.get("PEER_PARSE_MASTER_KEY", "bench-master-key"),
            password=env.get("PEER_PARSE_PASSWORD", "bench-password-1"),
            directory=Path(directory) if directory else None,
            workers=[int(w) for w in (get("PEER_WORKERS") if directory else running).split(",")],
        )
    return Plan(
        mode=mode,
        duration=int(get("DURATION")),
        warmup=int(get("WARMUP")),
        server_warmup=int(get("SERVER_WARMUP")),
        repeats=int(get("REPEATS")),
        login_seconds=int(get("LOGIN_SECONDS")),
        threads=int(env.get("THREADS", "2")),
        conns=int(env.get("CONNS", "50")),
        configs=configs,
        workloads=workloads,
        profile_seconds=int(get("PROFILE_SECONDS")),
        pgbench_scale=int(get("PGBENCH_SCALE")),
        keep=bool(env.get("KEEP_DATA")),
        peer=peer,
        roost_env={
            # login at OWASP's argon2id strength (m=19 MiB, t=2, p=1), not Roost's default
            "ROOST_PASSWORD_MEMORY_KIB": env.get("ROOST_PASSWORD_MEMORY_KIB", "19456"),
            "ROOST_PASSWORD_TIME_COST": env.get("ROOST_PASSWORD_TIME_COST", "2"),
            "ROOST_PASSWORD_PARALLELISM": env.get("ROOST_PASSWORD_PARALLELISM", "1"),
            # a load test signs in thousands of times a second from one address
            "ROOST_AUTH_RATE_LIMIT_IP": env.get("ROOST_AUTH_RATE_LIMIT_IP", "1000000/minute"),
            "ROOST_AUTH_RATE_LIMIT_ACCOUNT": env.get(
                "ROOST_AUTH_RATE_LIMIT_ACCOUNT", "1000000/minute"
            ),
        },
    )


@dataclass(frozen=True)
class Rounds:
    """What the plans of ``make bench-cache`` and ``make bench-scaleout`` share: seconds of
    each run and of each warm-up, rounds, wrk's threads and connections, KEEP_DATA."""

    mode: str
    duration: int
    warmup: int
    repeats: int
    threads: int
    conns: int
    keep: bool


def rounds_from(
    env: Mapping[str, str], mode: str, modes: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """``Rounds``' fields from ``env``: DURATION, WARMUP and REPEATS default to
    ``modes[mode]``'s, THREADS to 2, CONNS to 50."""

    def get(name: str) -> int:
        return int(env.get(name) or modes[mode][name])

    return {
        "mode": mode,
        "duration": get("DURATION"),
        "warmup": get("WARMUP"),
        "repeats": get("REPEATS"),
        "threads": int(env.get("THREADS") or "2"),
        "conns": int(env.get("CONNS") or "50"),
        "keep": bool(env.get("KEEP_DATA")),
    }


def environment_mode(argv: list[str]) -> str:
    return "quick" if "--quick" in argv or os.environ.get("BENCH_MODE") == "quick" else "full"
