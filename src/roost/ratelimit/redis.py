"""Counters shared by every instance in Redis: ``redis://host:port/db`` or ``rediss://``.

Each hit is one Lua script run by Redis, so concurrent hits from many instances never
let more than N through. Instances stamp hits with their own clock: keep clocks in sync.

**When Redis is unreachable the limiter fails open**: ``hit`` allows the request, logs one
warning, and for ``recheck_after`` seconds allows every hit without trying Redis (so an
outage costs each request nothing, not a timeout each). Refusing every sign-in while
Redis is down would turn a cache outage into a login outage; the cost is that brute-force
limits are off for the outage, which the warning makes visible. Every call is bounded by
``timeout``. ``clear`` and ``reset`` instead raise ``Unavailable`` (503): an admin asking
to unlock an account must not be told it worked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from roost.backends import MissingDependency
from roost.errors import Unavailable
from roost.ratelimit.base import (
    RateLimiter,
    hit_moving_window,
    parse_limit,
    storage_key,
)

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise MissingDependency("redis", extra="redis") from error

T = TypeVar("T")

DEFAULT_TIMEOUT = 0.25
"""Seconds one call may take (connecting included) before Redis counts as down."""
RECHECK_AFTER = 5.0
"""Seconds the limiter fails open without trying Redis after a failure."""
MAX_CONNECTIONS = 16
"""Connections per process; more hits at once queue for one (Redis answers in microseconds)."""
KEY_PREFIX = "roost-ratelimit"

FAILURES = (RedisError, StorageError, OSError, TimeoutError)

log = structlog.get_logger("roost.ratelimit")


class RedisRateLimiter(RateLimiter):
    """Moving-window counters in Redis, failing open when Redis cannot be reached."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        recheck_after: float = RECHECK_AFTER,
    ) -> None:
        self._timeout = timeout
        self._recheck_after = recheck_after
        self._failed_at: float | None = None
        """When the last call failed (monotonic); None while Redis answers."""
        self._pool: aioredis.ConnectionPool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,  # waiting for a connection counts against ``timeout`` below
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._client = aioredis.Redis(connection_pool=self._pool)

    async def hit(self, limit: str, *key: str) -> float | None:
        item = parse_limit(limit)
        if self._failing_open():
            return None
        try:
            wait = await self._call(hit_moving_window(self._strategy, item, key))
        except FAILURES as error:
            self._failed(error)
            return None
        return wait

    async def clear(self, limit: str, *key: str) -> None:
        item = parse_limit(limit)
        await self._or_unavailable(lambda: self._strategy.clear(item, *storage_key(key)))

    async def reset(self) -> None:
        await self._or_unavailable(self._storage.reset)

    async def ping(self) -> bool:
        try:
            await self._call(self._client.ping())
        except FAILURES as error:
            self._failed(error)
            return False
        return True

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _failing_open(self) -> bool:
        failed_at = self._failed_at
        return failed_at is not None and time.monotonic() < failed_at + self._recheck_after

    async def _call(self, operation: Awaitable[T]) -> T:
        started = time.monotonic()
        async with asyncio.timeout(self._timeout):
            result = await operation
        # A call begun before the last failure proves nothing about Redis now.
        if self._failed_at is not None and started > self._failed_at:
            self._failed_at = None
            log.info("ratelimit_redis_recovered")
        return result

    async def _or_unavailable(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self._call(operation())
        except FAILURES as error:
            self._failed(error)
            raise Unavailable("the rate limit store cannot be reached") from error

    def _failed(self, error: BaseException) -> None:
        if self._failed_at is None:
            log.warning(
                "ratelimit_redis_unavailable",
                error=type(error).__name__,
                detail=str(error),
                fail_open_seconds=self._recheck_after,
            )
        self._failed_at = time.monotonic()
