"""Read replicas of the PostgreSQL primary: which one may serve a read, and when.

A monitor samples, every ``CHECK_INTERVAL`` seconds, the primary's WAL position
(``pg_current_wal_lsn()``) and each replica's replayed position
(``pg_last_wal_replay_lsn()``). A replica's **lag** is how long ago the primary was first
seen past the position the replica has replayed (0 when it has replayed all the primary
had written at the last sample). A replica that did not answer the last check, is not in
recovery (it was promoted), or lags more than the bound is skipped.

**Read-your-writes.** After a write commits, the storage records the primary's position in
the request's ``Consistency``; the HTTP layer returns it to the client (``Roost-Position``)
and the client sends it with its next requests. A read that carries a position goes to a
replica only if the monitor has seen that replica replay past it, else to the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from roost.storage.base import parse_lsn

CHECK_INTERVAL = 0.2
"""Seconds between checks: a replica is seen to catch up at most this late."""

log = structlog.get_logger("roost.storage")


@dataclass
class Replica:
    pool: asyncpg.Pool
    replayed: int = 0
    usable: bool = False


class Replicas:
    """The replicas' pools and what the monitor last saw of them."""

    def __init__(self, pools: Sequence[asyncpg.Pool], max_lag: float, timeout: float) -> None:
        self._replicas = [Replica(pool) for pool in pools]
        self._max_lag = max_lag
        self._timeout = timeout
        self._samples: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def pools(self) -> list[asyncpg.Pool]:
        return [replica.pool for replica in self._replicas]

    def start(self, primary: asyncpg.Pool) -> None:
        self._task = asyncio.create_task(self._monitor(primary), name="roost-replicas")

    def choose(self, after: int) -> asyncpg.Pool | None:
        """A usable replica that has replayed past ``after``, or None (use the primary)."""
        ready = [r.pool for r in self._replicas if r.usable and r.replayed >= after]
        return random.choice(ready) if ready else None

    def skip(self, pool: asyncpg.Pool) -> None:
        """Stop using a replica that failed a read, until the next check finds it well."""
        for replica in self._replicas:
            if replica.pool is pool:
                replica.usable = False

    async def _monitor(self, primary: asyncpg.Pool) -> None:
        while True:
            try:
                await self.check(primary)
            except Exception:  # the primary is down: keep the last verdicts, try again
                log.warning("replica check failed", exc_info=True)
            await asyncio.sleep(CHECK_INTERVAL)

    async def check(self, primary: asyncpg.Pool) -> None:
        """Sample the primary's position, then each replica's replayed position."""
        async with asyncio.timeout(self._timeout):
            position = parse_lsn(await primary.fetchval("SELECT pg_current_wal_lsn()::text"))
        now = time.monotonic()
        self._samples.append((now, position))
        while len(self._samples) > 1 and self._samples[1][0] < now - self._max_lag - 1:
            self._samples.popleft()
        await asyncio.gather(*(self._check(replica, now) for replica in self._replicas))

    async def _check(self, replica: Replica, now: float) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                replayed = await replica.pool.fetchval("SELECT pg_last_wal_replay_lsn()::text")
        except Exception as exc:  # down, or refusing connections: skipped until it answers
            if replica.usable:
                log.warning("replica unavailable", error=str(exc) or type(exc).__name__)
            replica.usable = False
            return
        if replayed is None:  # not in recovery: promoted, or not a replica at all
            replica.usable = False
            return
        replica.replayed = parse_lsn(replayed)
        behind = [at for at, position in self._samples if position > replica.replayed]
        lag = now - behind[0] if behind else 0.0
        replica.usable = lag <= self._max_lag

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self._replicas:
            replica.pool.terminate()
