"""The database ceiling: the raw driver running one SQL statement as fast as it can.

Run as a script (one process per Roost worker), it prints one JSON object::

    python dbload.py sqlite PATH "SELECT ... WHERE id = ?" keys.txt --tasks 50 --seconds 10 \
        --warmup 2
    python dbload.py postgres URL "SELECT ... WHERE id = $1" keys.txt --connections 10

TASKS concurrent asyncio tasks (uvloop, as under Granian) share CONNECTIONS connections
(asyncpg: Roost's ``postgres_pool_max``, handed out through a queue with no reset
between uses; SQLite: the stdlib driver on the event loop, read-only and memory-mapped,
as Roost reads, ``storage/sqlite.py``); each task
runs the statement with a random key from KEYS (one per line), fetches every row, and
records its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

Query = Callable[[Any, str], Awaitable[int]]


async def _sqlite(target: str, sql: str, count: int) -> tuple[list[Any], Query]:
    connections = []
    for _ in range(count):
        conn = sqlite3.connect(target, isolation_level=None)
        for pragma in ("busy_timeout = 5000", "query_only = ON", "mmap_size = 268435456"):
            conn.execute(f"PRAGMA {pragma}")
        connections.append(conn)

    async def query(conn: Any, key: str) -> int:
        return len(conn.execute(sql, (key,)).fetchall())

    return connections, query


async def _postgres(target: str, sql: str, count: int) -> tuple[list[Any], Query]:
    import asyncpg

    connections = [await asyncpg.connect(target) for _ in range(count)]

    async def query(conn: Any, key: str) -> int:
        return len(await conn.fetch(sql, key))

    return connections, query


async def run(args: argparse.Namespace) -> dict[str, Any]:
    keys = [line.strip() for line in Path(args.keys).read_text().splitlines() if line.strip()]
    opener = _sqlite if args.driver == "sqlite" else _postgres
    connections, query = await opener(args.target, args.sql, args.connections)
    pool: asyncio.Queue[Any] = asyncio.Queue()
    for conn in connections:
        pool.put_nowait(conn)
    latencies: list[float] = []
    rows = errors = 0
    warm_until = time.monotonic() + args.warmup
    stop = warm_until + args.seconds

    async def task() -> None:
        nonlocal rows, errors
        rng = random.Random()
        while time.monotonic() < warm_until:  # warm-up: run, keep nothing
            conn = await pool.get()
            try:
                await query(conn, rng.choice(keys))
            finally:
                pool.put_nowait(conn)
            await asyncio.sleep(0)
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn = await pool.get()
            try:
                rows += await query(conn, rng.choice(keys))
            except Exception:  # a failed query is counted, the load goes on
                errors += 1
            finally:
                pool.put_nowait(conn)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0)  # let the woken waiter take the connection: no barging

    await asyncio.gather(*(task() for _ in range(args.tasks)))
    seconds = time.monotonic() - warm_until
    for conn in connections:
        closed = conn.close()
        if inspect.isawaitable(closed):
            await closed
    latencies.sort()

    def percentile(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "queries": len(latencies),
        "seconds": seconds,
        "rows": rows,
        "errors": errors,
        "p50": percentile(0.50) if latencies else 0.0,
        "p99": percentile(0.99) if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("driver", choices=["sqlite", "postgres"])
    parser.add_argument("target", help="SQLite file or PostgreSQL URL")
    parser.add_argument("sql", help="one statement with one parameter")
    parser.add_argument("keys", help="file of parameter values, one per line")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=0, help="seconds run first, not kept")
    args = parser.parse_args()
    print(json.dumps(uvloop.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
