"""The cache in Redis (``redis://host:port/db``, ``rediss://``) or in a Redis Cluster
(``redis+cluster://host:port,host:port``, ``rediss+cluster://``; the cluster's nodes
are found from any of the listed ones).

Every call is bounded by ``timeout`` seconds, connecting and waiting for a pooled
connection included (``DEFAULT_TIMEOUT``, or the URL's ``timeout`` query parameter, taken
off before the URL reaches redis-py)::

    redis://redis.internal:6379/0?timeout=0.5
    rediss+cluster://user:secret@10.0.0.1:6379,10.0.0.2:6379?timeout=0.5

redis-py never retries: a call that fails for any reason (refused, timed out, cluster
down, redirected too often, any exception from the driver) raises ``CacheUnavailable``
at once and makes the cache unhealthy, with one warning per outage. While it is unhealthy,
reads (``get``, ``get_many``, ``claim``) are shed: within ``RETRY_SECONDS`` of the last
failure they raise at once without trying, and after that one read at a time tries the
store. Writes (``set``, ``delete``) always try, within the timeout: a write to the cache
may be an invalidation that other instances depend on. The first call that succeeds
makes the cache healthy again, with one info line, so recovery needs no restart. A call
that began before the last failure proves nothing about Redis now and does not count as
a recovery.

Keys are strings (UTF-8 in Redis). On a cluster, ``get_many`` of keys that share a
``{hash tag}`` is one MGET on one node; keys spread over several slots cost one MGET per
slot, sent in one pipeline per node (not atomic, which a cache does not need).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from roost.backends import MissingDependency
from roost.cache.base import Cache, CacheUnavailable

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise MissingDependency("redis", extra="redis") from error

T = TypeVar("T")

DEFAULT_TIMEOUT = 0.25
"""Seconds one call may take (connecting included) before the cache counts as down."""
MAX_CONNECTIONS = 64
"""Calls in flight per process (per node on a cluster); more wait for one, within the
timeout (Redis answers in microseconds)."""
DEFAULT_PORT = 6379
RETRY_SECONDS = 1.0
"""After a failure, calls fail at once for this long (no request waits out a timeout on
a store known to be down); then the next call tries the store again."""


log = structlog.get_logger("roost.cache")


class _RedisCacheBase(Cache):
    """What both Redis caches share: the commands, health, timeouts and logging."""

    backend = "redis"
    shared = True

    def __init__(self, client: aioredis.Redis | RedisCluster, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._healthy = True
        """Healthy until a call fails: a cache never used has not failed."""
        self._failed_at = -math.inf
        """When the last call failed (``time.monotonic``)."""
        self._probing = False
        """Whether a read is trying the store while it is unhealthy."""

    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._read(lambda: self._client.get(key)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return cast("list[bytes | None]", await self._read(lambda: self._client.mget(keys)))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = _milliseconds(ttl)
        await self._call(lambda: self._client.set(key, value, px=milliseconds))

    async def delete(self, *keys: str) -> None:
        if keys:  # on a cluster, one DEL per slot, in one pipeline per node
            await self._call(lambda: self._client.delete(*keys))

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes:
        milliseconds = _milliseconds(ttl)
        # SET NX GET (Redis 7): the old value, or nil when this call stored ``value``.
        current = await self._read(
            lambda: self._client.set(key, value, px=milliseconds, nx=True, get=True)
        )
        return value if current is None else cast("bytes", current)

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _read(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``_call``, shed while the store is known to be down: within ``RETRY_SECONDS``
        of the last failure every read fails at once, and after that one read at a time
        tries the store until one succeeds."""
        if self._healthy:
            return await self._call(operation)
        if self._probing or time.monotonic() - self._failed_at < RETRY_SECONDS:
            raise CacheUnavailable(f"the cache ({self.backend}) is down; retrying soon")
        self._probing = True
        try:
            return await self._call(operation)
        finally:
            self._probing = False

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` within the timeout; CacheUnavailable when it fails."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._run(operation)
        except Exception as error:  # whatever the driver raises, the store is not usable
            self._failed(error)
            raise CacheUnavailable(
                f"the cache ({self.backend}) did not answer: {type(error).__name__}"
            ) from error
        if started > self._failed_at and not self._healthy:
            self._healthy = True
            log.info("cache_redis_recovered", backend=self.backend)
        return result

    async def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await operation()

    def _failed(self, error: BaseException) -> None:
        self._failed_at = time.monotonic()
        if self._healthy:
            self._healthy = False
            log.warning(
                "cache_redis_unavailable",
                backend=self.backend,
                error=type(error).__name__,
                detail=str(error),
            )


class RedisCache(_RedisCacheBase):
    """One Redis server (or a proxy in front of several), through a bounded pool."""

    def __init__(self, url: str) -> None:
        redis_url, timeout = split_timeout(url)
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,  # waiting for a connection counts against the call's timeout
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One retry: a pooled connection that Redis closed (a restart) reconnects at
            # once instead of failing the call; the call's timeout still bounds both.
            retry=Retry(NoBackoff(), 1),
        )
        super().__init__(aioredis.Redis.from_pool(pool), timeout)


class RedisClusterCache(_RedisCacheBase):
    """A Redis Cluster: each key on the node that owns its slot."""

    backend = "redis-cluster"

    def __init__(self, url: str) -> None:
        cluster_url, timeout = split_timeout(url)
        first, others = cluster_nodes(cluster_url)
        self._cluster = RedisCluster.from_url(
            first,
            startup_nodes=[ClusterNode(host, port) for host, port in others],
            # The semaphore below bounds the calls in flight, each holding at most one
            # connection per node; the headroom covers connections still closing.
            max_connections=2 * MAX_CONNECTIONS,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # a failed call refreshes the slots on the next
        )
        super().__init__(self._cluster, timeout)
        self._in_flight = asyncio.Semaphore(MAX_CONNECTIONS)
        self._topology = asyncio.Lock()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        cluster = self._cluster
        if len({cluster.keyslot(key) for key in keys}) == 1:
            values = await self._call(lambda: cluster.mget(keys))
        else:  # one MGET per slot, in one pipeline per node
            values = await self._call(lambda: cluster.mget_nonatomic(keys))
        return cast("list[bytes | None]", values)

    async def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        # redis-py's cluster pools raise at once when full instead of waiting.
        async with self._in_flight:
            # Learning the slots (at first, and after a failure) one call at a time:
            # redis-py 8.1 breaks connections when several calls do it at once.
            async with self._topology:
                await self._cluster.initialize()  # at once when the slots are known
            return await operation()


def _milliseconds(ttl: float) -> int:
    if not ttl > 0:
        raise ValueError(f"a cache entry's ttl must be positive, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


def split_timeout(url: str) -> tuple[str, float]:
    """``url`` without its ``timeout`` query parameter, and the timeout it names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "timeout"]
    timeout = DEFAULT_TIMEOUT
    if named:
        try:
            timeout = float(named[-1])
        except ValueError:
            timeout = math.nan
        if not 0 < timeout < math.inf:
            raise ValueError(f"the cache URL's timeout must be positive seconds: {named[-1]!r}")
    rest = urlencode([(key, value) for key, value in query if key != "timeout"])
    return urlunsplit(parts._replace(query=rest)), timeout


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """From ``redis+cluster://[user:password@]host:port,host:port[/0][?options]``: a
    ``redis://`` URL for the first node (credentials and options kept, for redis-py), and
    the other nodes' addresses. ValueError when the URL is not one."""
    scheme, separator, rest = url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster") or not separator:
        raise ValueError(f"not a Redis Cluster URL: {url!r}")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    path, _, query = tail.partition("?")
    if path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {path!r}")
    credentials, _, hosts = netloc.rpartition("@")
    nodes = [_address(host) for host in hosts.split(",")]
    host, port = nodes[0]
    shown = f"[{host}]" if ":" in host else host
    userinfo = f"{credentials}@" if credentials else ""
    first = f"{scheme.removesuffix('+cluster')}://{userinfo}{shown}:{port}"
    return (f"{first}?{query}" if query else first), nodes[1:]


def _address(text: str) -> tuple[str, int]:
    """``host:port``, ``host`` or ``[v6 address]:port`` as (host, port)."""
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        if after:
            if not after.startswith(":"):
                raise ValueError(f"invalid Redis Cluster node {text!r}")
            port = after[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid Redis Cluster node {text!r}")
    return host, int(port)
