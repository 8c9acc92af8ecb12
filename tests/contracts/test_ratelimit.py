"""The rate-limit contract: every backend passes this suite unchanged.

The Redis parameter runs against a throwaway ``redis-server`` (``tests/redis_server.py``);
the tests after the suite cover what only a networked backend can do: fail open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import structlog

from redis_server import RedisServer
from roost.errors import Unavailable
from roost.ratelimit.base import RateLimiter, open_ratelimiter
from roost.ratelimit.memory import MemoryRateLimiter
from roost.ratelimit.redis import RedisRateLimiter

BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    backend: RateLimiter
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        # A generous timeout: this suite checks counting, not latency, and must not fail
        # open on a busy test machine. The outage tests below use a short one.
        backend = RedisRateLimiter(server.url, timeout=5)
    else:
        backend = open_ratelimiter("memory://")
    try:
        yield backend
    finally:
        await backend.aclose()


async def hits(limiter: RateLimiter, count: int, limit: str, *key: str) -> list[float | None]:
    return [await limiter.hit(limit, *key) for _ in range(count)]


async def test_allows_n_hits_then_tells_how_long_to_wait(limiter: RateLimiter) -> None:
    assert await hits(limiter, 5, "5/minute", "login", "a@example.com") == [None] * 5
    wait = await limiter.hit("5/minute", "login", "a@example.com")
    assert wait is not None
    assert 0 < wait <= 60
    again = await limiter.hit("5/minute", "login", "a@example.com")
    assert again is not None and again <= wait


async def test_keys_and_limits_count_apart(limiter: RateLimiter) -> None:
    assert await hits(limiter, 2, "2/minute", "login", "a") == [None, None]
    assert await limiter.hit("2/minute", "login", "a") is not None
    assert await limiter.hit("2/minute", "login", "b") is None
    assert await limiter.hit("2/minute", "signup", "a") is None
    assert await limiter.hit("3/minute", "login", "a") is None
    assert await limiter.hit("2/minute", "login/a") is None  # no collision through "/"
    assert await limiter.hit("2/minute", "login%2Fa") is None


async def test_the_window_moves_on(limiter: RateLimiter) -> None:
    assert await hits(limiter, 3, "3/second", "ip", "10.0.0.1") == [None] * 3
    wait = await limiter.hit("3/second", "ip", "10.0.0.1")
    assert wait is not None and 0 < wait <= 1
    await asyncio.sleep(wait + 0.05)
    # Refused hits were not counted: the whole limit is available again.
    assert await hits(limiter, 3, "3/second", "ip", "10.0.0.1") == [None] * 3
    assert await limiter.hit("3/second", "ip", "10.0.0.1") is not None


async def test_concurrent_hits_never_exceed_the_limit(limiter: RateLimiter) -> None:
    results = await asyncio.gather(*(limiter.hit("10/minute", "ip", "x") for _ in range(100)))
    assert results.count(None) == 10
    assert all(r is not None and 0 < r <= 60 for r in results if r is not None)


async def test_clear_forgets_one_key(limiter: RateLimiter) -> None:
    await hits(limiter, 2, "1/minute", "login", "a")
    await hits(limiter, 2, "1/minute", "login", "b")
    await limiter.clear("1/minute", "login", "a")
    assert await limiter.hit("1/minute", "login", "a") is None
    assert await limiter.hit("1/minute", "login", "b") is not None


async def test_reset_forgets_every_key(limiter: RateLimiter) -> None:
    await hits(limiter, 2, "1/minute", "login", "a")
    await hits(limiter, 2, "1/hour", "ip", "b")
    await limiter.reset()
    assert await limiter.hit("1/minute", "login", "a") is None
    assert await limiter.hit("1/hour", "ip", "b") is None


async def test_ping_answers(limiter: RateLimiter) -> None:
    assert await limiter.ping() is True


@pytest.mark.parametrize(
    "limit", ["", "ten/minute", "0/minute", "10/fortnight", "5/second;10/minute", "5/second|6/hour"]
)
async def test_an_invalid_limit_is_refused(limiter: RateLimiter, limit: str) -> None:
    with pytest.raises(ValueError, match="invalid rate limit"):
        await limiter.hit(limit, "k")


async def test_the_url_scheme_picks_the_backend(redis_server: RedisServer) -> None:
    memory = open_ratelimiter("memory://")
    redis = open_ratelimiter(redis_server.url)
    try:
        assert isinstance(memory, MemoryRateLimiter)
        assert isinstance(redis, RedisRateLimiter)
        assert await redis.ping() is True
    finally:
        await memory.aclose()
        await redis.aclose()


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported rate limit URL scheme"):
        open_ratelimiter("memcached://localhost")


# Redis only: the store can go away.

TIMEOUT = 0.2


@pytest.fixture
async def fragile(redis_server: RedisServer) -> AsyncIterator[RedisRateLimiter]:
    backend = RedisRateLimiter(redis_server.url, timeout=TIMEOUT, recheck_after=60)
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_a_stopped_redis_fails_open_quickly_and_warns_once(
    fragile: RedisRateLimiter, redis_server: RedisServer
) -> None:
    assert await fragile.hit("1/minute", "ip", "a") is None
    assert await fragile.hit("1/minute", "ip", "a") is not None
    redis_server.stop()
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        assert await fragile.hit("1/minute", "ip", "a") is None
        assert time.monotonic() - started < TIMEOUT + 0.5
        started = time.monotonic()
        assert await hits(fragile, 20, "1/minute", "ip", "a") == [None] * 20
        assert time.monotonic() - started < 0.1  # no further attempts while failing open
    assert [e["event"] for e in logs] == ["ratelimit_redis_unavailable"]
    assert logs[0]["log_level"] == "warning"
    assert await fragile.ping() is False
    with pytest.raises(Unavailable):
        await fragile.clear("1/minute", "ip", "a")


async def test_a_hanging_redis_fails_open_within_the_timeout(
    fragile: RedisRateLimiter, redis_server: RedisServer
) -> None:
    assert await fragile.hit("1/minute", "ip", "a") is None
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(fragile.hit("1/minute", "ip", "a") for _ in range(10)))
        assert results == [None] * 10
        assert time.monotonic() - started < TIMEOUT + 0.5
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


async def test_limits_apply_again_once_redis_is_back(redis_server: RedisServer) -> None:
    backend = RedisRateLimiter(redis_server.url, timeout=TIMEOUT, recheck_after=0.1)
    try:
        redis_server.stop()
        assert await backend.hit("1/minute", "ip", "a") is None
        redis_server.start()
        await asyncio.sleep(0.15)
        assert await backend.hit("1/minute", "ip", "a") is None
        assert await backend.hit("1/minute", "ip", "a") is not None
        assert await backend.ping() is True
    finally:
        await backend.aclose()
