"""The cache contract: every backend passes this suite unchanged.

The Redis parameters run against a throwaway ``redis-server`` (``tests/redis_server.py``)
and a throwaway three-master Redis Cluster (``tests/redis_cluster.py``). After the suite:
what only the memory backend does (evict), what only networked backends do (lose their
store and find it again), and the ``Loader`` (single flight, early refresh, outages)
against memory and Redis.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import redis
import structlog
from redis.crc import key_slot

from redis_cluster import RedisClusterServers
from redis_server import RedisServer
from roost.cache.base import Cache, CacheUnavailable, open_cache
from roost.cache.loader import ENVELOPE, VERSION, Loader
from roost.cache.memory import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryCache, parse_bounds
from roost.cache.redis import (
    DEFAULT_TIMEOUT,
    RETRY_SECONDS,
    RedisCache,
    RedisClusterCache,
    cluster_nodes,
    split_timeout,
)

BACKENDS = ["memory", "redis", "cluster"]
SUITE_TIMEOUT = "?timeout=5"
"""A generous timeout: the suite checks behaviour, not latency, and must not fail on a
busy test machine. The outage tests use the default (``DEFAULT_TIMEOUT``)."""
SHORT_TTL = 0.2
WITHIN = 10.0
"""Seconds a condition polled by ``eventually`` may take before the test fails."""


def url_of(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url + SUITE_TIMEOUT
    if backend == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return cluster.url + SUITE_TIMEOUT
    return "memory://"


@pytest.fixture(params=BACKENDS)
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    backend = open_cache(url_of(request, request.param))
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_an_absent_key_is_none(cache: Cache) -> None:
    assert await cache.get("absent") is None
    assert await cache.get_many(["absent", "also-absent"]) == [None, None]
    assert await cache.get_many([]) == []


async def test_set_stores_and_replaces(cache: Cache) -> None:
    await cache.set("user:1", b"first", 60)
    assert await cache.get("user:1") == b"first"
    await cache.set("user:1", b"second", 60)
    assert await cache.get("user:1") == b"second"
    assert cache.healthy


async def test_get_many_answers_in_order(cache: Cache) -> None:
    keys = [f"record:{n}" for n in range(20)]  # spread over the cluster's slots
    for n, key in enumerate(keys):
        if n % 3:
            await cache.set(key, f"value {n}".encode(), 60)
    expected = [None if n % 3 == 0 else f"value {n}".encode() for n in range(20)]
    assert await cache.get_many(keys) == expected
    assert await cache.get_many(list(reversed(keys))) == list(reversed(expected))
    assert await cache.get_many(["record:1", "record:1"]) == [b"value 1", b"value 1"]


async def test_get_many_of_keys_sharing_a_hash_tag(cache: Cache) -> None:
    keys = ["{user:7}:profile", "{user:7}:posts", "{user:7}:absent", "{user:7}:settings"]
    assert len({key_slot(key.encode()) for key in keys}) == 1  # one slot: one MGET
    await cache.set(keys[0], b"profile", 60)
    await cache.set(keys[1], b"posts", 60)
    await cache.set(keys[3], b"", 60)
    assert await cache.get_many(keys) == [b"profile", b"posts", None, b""]


async def test_delete_removes_keys_and_ignores_absent_ones(cache: Cache) -> None:
    keys = [f"doomed:{n}" for n in range(10)]
    for key in keys:
        await cache.set(key, b"x", 60)
    await cache.set("kept", b"y", 60)
    await cache.delete(*keys, "never-set")
    await cache.delete()
    assert await cache.get_many([*keys, "kept"]) == [None] * 10 + [b"y"]
    await cache.delete("kept")
    assert await cache.get("kept") is None


async def test_claim_of_an_absent_key_stores_and_returns_its_value(cache: Cache) -> None:
    assert await cache.claim("leader", b"instance 1", 60) == b"instance 1"
    assert await cache.get("leader") == b"instance 1"
    assert await cache.get_many(["leader"]) == [b"instance 1"]
    await cache.delete("leader")
    assert await cache.claim("leader", b"instance 2", 60) == b"instance 2"
    assert await cache.get("leader") == b"instance 2"
    assert cache.healthy


async def test_claim_of_a_present_key_keeps_its_value_and_ttl(cache: Cache) -> None:
    await cache.set("short", b"set", SHORT_TTL)
    await cache.set("long", b"set", 60)
    assert await cache.claim("claimed", b"first", SHORT_TTL) == b"first"
    assert await cache.claim("short", b"other", 60) == b"set"  # not replaced, ttl kept
    assert await cache.claim("long", b"other", SHORT_TTL) == b"set"  # nor shortened
    assert await cache.claim("claimed", b"second", 60) == b"first"
    assert await cache.get_many(["short", "long", "claimed"]) == [b"set", b"set", b"first"]
    await asyncio.sleep(SHORT_TTL + 0.1)
    assert await cache.get_many(["short", "long", "claimed"]) == [None, b"set", None]


async def test_claim_after_expiry_stores_anew(cache: Cache) -> None:
    assert await cache.claim("lease", b"first", SHORT_TTL) == b"first"
    await asyncio.sleep(SHORT_TTL + 0.1)
    assert await cache.claim("lease", b"second", SHORT_TTL) == b"second"
    assert await cache.get("lease") == b"second"
    await asyncio.sleep(SHORT_TTL + 0.1)  # stored with the new claim's ttl
    assert await cache.get("lease") is None


async def test_concurrent_claims_of_an_absent_key_all_get_one_value(cache: Cache) -> None:
    offered = [b"claimant %d" % n for n in range(100)]
    claimed = await asyncio.gather(*(cache.claim("leader", value, 60) for value in offered))
    assert len(set(claimed)) == 1
    assert claimed[0] in offered
    assert await cache.get("leader") == claimed[0]


async def test_claim_is_binary_safe(cache: Cache) -> None:
    every_byte = bytes(range(256))
    values = {
        "every-byte": every_byte,
        "empty": b"",
        "nul": b"\x00",
        "resp-nil": b"$-1\r\n",
        "clé:ü:🙂": every_byte[::-1],
    }
    for key, value in values.items():
        assert await cache.claim(key, value, 60) == value
    for key, value in values.items():  # an empty value is present, not absent
        assert await cache.claim(key, b"other", 60) == value
    assert await cache.get_many(list(values)) == list(values.values())


async def test_entries_expire_after_their_ttl(cache: Cache) -> None:
    await cache.set("short", b"v", SHORT_TTL)
    await cache.set("long", b"w", 60)
    await cache.claim("claimed", b"c", SHORT_TTL)
    assert await cache.get_many(["short", "long", "claimed"]) == [b"v", b"w", b"c"]
    await asyncio.sleep(SHORT_TTL + 0.1)
    assert await cache.get("short") is None
    assert await cache.get_many(["short", "long", "claimed"]) == [None, b"w", None]


async def test_values_are_binary_safe(cache: Cache) -> None:
    every_byte = bytes(range(256))
    values = {"every-byte": every_byte, "empty": b"", "nul": b"\x00", "crlf": b"\r\n$-1\r\n"}
    for key, value in values.items():
        await cache.set(key, value, 60)
    for key, value in values.items():
        assert await cache.get(key) == value
    assert await cache.get_many(list(values)) == list(values.values())
    await cache.set("clé:ü:🙂", every_byte[::-1], 60)  # keys are any text
    assert await cache.get("clé:ü:🙂") == every_byte[::-1]


async def test_large_values(cache: Cache) -> None:
    large = random.randbytes(2 * 1024 * 1024)
    await cache.set("large", large, 60)
    assert await cache.get("large") == large
    assert await cache.get_many(["large", "absent"]) == [large, None]


@pytest.mark.parametrize("ttl", [0, -1.0, math.nan])
async def test_a_ttl_that_is_not_positive_is_refused(cache: Cache, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl)
    with pytest.raises(ValueError, match="ttl"):
        await cache.claim("k", b"v", ttl)
    assert await cache.get("k") is None
    assert cache.healthy


async def test_many_concurrent_calls_wait_for_a_connection(cache: Cache) -> None:
    await asyncio.gather(*(cache.set(f"k{n}", b"%d" % n, 60) for n in range(300)))
    values = await asyncio.gather(*(cache.get(f"k{n}") for n in range(300)))
    assert values == [b"%d" % n for n in range(300)]
    assert cache.healthy


async def test_the_url_scheme_picks_the_backend(
    redis_server: RedisServer, redis_cluster: RedisClusterServers
) -> None:
    made = [open_cache("memory://"), open_cache(redis_server.url), open_cache(redis_cluster.url)]
    try:
        assert [type(cache) for cache in made] == [MemoryCache, RedisCache, RedisClusterCache]
        for cache in made:
            await cache.set("k", b"v", 60)
            assert await cache.get("k") == b"v"
    finally:
        for cache in made:
            await cache.aclose()
    assert isinstance(open_cache("rediss://127.0.0.1:1/0"), RedisCache)
    assert isinstance(open_cache("rediss+cluster://127.0.0.1:1"), RedisClusterCache)
    with pytest.raises(ValueError, match="unsupported cache URL scheme"):
        open_cache("memcached://localhost")


# URLs.


def test_memory_bounds_come_from_the_url() -> None:
    assert parse_bounds("memory://") == (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    assert parse_bounds("memory://?max_entries=5") == (5, 64 * 1024 * 1024)
    assert parse_bounds("memory://?max_entries=5&max_bytes=100") == (5, 100)
    for bad in ("memory://?max_entries=0", "memory://?max_bytes=-1", "memory://?max_bytes=1e3"):
        with pytest.raises(ValueError, match="positive integer"):
            parse_bounds(bad)
    with pytest.raises(ValueError, match="unknown"):
        parse_bounds("memory://?max_entry=5")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1/0", ("redis://h:1/0", DEFAULT_TIMEOUT)),
        ("redis://h:1/0?timeout=0.5", ("redis://h:1/0", 0.5)),
        (
            "rediss://u:p@h/2?ssl_cert_reqs=none&timeout=2",
            ("rediss://u:p@h/2?ssl_cert_reqs=none", 2),
        ),
        ("redis+cluster://a:1,b:2?timeout=1", ("redis+cluster://a:1,b:2", 1.0)),
    ],
)
def test_the_timeout_comes_from_the_url(url: str, expected: tuple[str, float]) -> None:
    assert split_timeout(url) == expected


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "nan", "inf", ""])
def test_an_invalid_timeout_is_refused(timeout: str) -> None:
    with pytest.raises(ValueError, match="timeout"):
        split_timeout(f"redis://h/0?timeout={timeout}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://a:7000", ("redis://a:7000", [])),
        ("redis+cluster://a:7000,b:7001,c", ("redis://a:7000", [("b", 7001), ("c", 6379)])),
        ("rediss+cluster://u:p@a:1,b:2/0?x=y", ("rediss://u:p@a:1?x=y", [("b", 2)])),
        ("redis+cluster://[::1]:7000,[::2]", ("redis://[::1]:7000", [("::2", 6379)])),
    ],
)
def test_cluster_nodes_come_from_the_url(url: str, expected: tuple[str, list[Any]]) -> None:
    assert cluster_nodes(url) == expected


@pytest.mark.parametrize(
    "url", ["redis://a:1", "redis+cluster://", "redis+cluster://a:x", "redis+cluster://a:1/3"]
)
def test_an_invalid_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        cluster_nodes(url)


# Memory only: bounded by entries and bytes.


async def test_the_least_recently_used_entry_goes_first() -> None:
    cache = MemoryCache("memory://?max_entries=3")
    for key in "abc":
        await cache.set(key, b"v", 60)
    assert await cache.get("a") == b"v"  # a is now the most recently used
    await cache.set("d", b"v", 60)
    assert await cache.get_many(list("abcd")) == [b"v", None, b"v", b"v"]
    assert await cache.claim("e", b"e", 60) == b"e"  # a claim that stores evicts too
    assert await cache.get_many(list("acde")) == [None, b"v", b"v", b"e"]
    assert await cache.claim("c", b"other", 60) == b"v"  # a claim that reads uses c
    await cache.set("f", b"v", 60)
    assert await cache.get_many(list("cdef")) == [b"v", None, b"e", b"v"]
    assert cache.size[0] == 3


async def test_values_are_bounded_by_bytes() -> None:
    cache = MemoryCache("memory://?max_bytes=10")
    await cache.set("a", b"1234", 60)
    await cache.set("b", b"1234", 60)
    assert cache.size == (2, 8)
    await cache.set("c", b"1234", 60)  # 12 bytes: a goes
    assert await cache.get_many(list("abc")) == [None, b"1234", b"1234"]
    await cache.set("b", b"1", 60)  # replacing frees the old value's bytes
    assert cache.size == (2, 5)
    await cache.set("big", b"12345678901", 60)  # larger than the whole cache: not kept
    assert await cache.get("big") is None
    assert cache.size == (2, 5)
    await cache.delete("b", "c")
    assert cache.size == (0, 0)


async def test_claimed_values_count_against_the_bytes() -> None:
    cache = MemoryCache("memory://?max_bytes=10")
    assert await cache.claim("a", b"1234", 60) == b"1234"
    assert cache.size == (1, 4)
    assert await cache.claim("a", b"123456", 60) == b"1234"  # kept: no bytes change
    assert cache.size == (1, 4)
    assert await cache.claim("b", b"12345678", 60) == b"12345678"  # 12 bytes: a goes
    assert await cache.get_many(["a", "b"]) == [None, b"12345678"]
    assert cache.size == (1, 8)


# Redis only: the store can go away, and come back. After a failure the cache does not try
# the store for RETRY_SECONDS (the breaker): a test that brings Redis back waits that out.


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def eventually(condition: Callable[[], Any], within: float = WITHIN) -> None:
    """Wait until the awaitable ``condition()`` returns a true value."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await condition():
                return
        except CacheUnavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


def storing(cache: Cache, key: str, value: bytes) -> Callable[[], Awaitable[bool]]:
    """A condition for ``eventually``: ``value`` was stored at ``key``."""

    async def stored() -> bool:
        await cache.set(key, value, 60)
        return True

    return stored


async def all_fail_quickly(cache: Cache, key: str) -> None:
    """Every operation on ``key`` raises CacheUnavailable, each within a second."""
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: cache.get(key),
        lambda: cache.get_many([key, "{" + key + "}:other"]),
        lambda: cache.set(key, b"v", 60),
        lambda: cache.delete(key),
        lambda: cache.claim(key, b"v", 60),
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await operation()
        assert time.monotonic() - started < 1.0
    assert not cache.healthy


def commands_run(server: RedisServer) -> set[str]:
    """The commands ``server`` has run since it started, by name (``cmdstat_set``...)."""
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2) as client:
        return set(client.info("commandstats"))


@pytest.mark.slow
async def test_a_stopped_redis_fails_fast_and_recovers_without_restart(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisCache(redis_server.url)
    try:
        await cache.set("k", b"v", 60)
        redis_server.stop()
        with structlog.testing.capture_logs() as logs:
            with monkeypatch.context() as without_breaker:
                without_breaker.setattr("roost.cache.redis.RETRY_SECONDS", 0.0)
                await all_fail_quickly(cache, "k")  # each operation tries Redis, and fails
            await all_fail_quickly(cache, "k")  # each one fails at once, without trying
            redis_server.start()
            await eventually(storing(cache, "k", b"back"))  # the same cache: no restart
            assert await cache.get("k") == b"back"
            assert cache.healthy
        assert [e["event"] for e in logs] == ["cache_redis_unavailable", "cache_redis_recovered"]
        assert logs[0]["log_level"] == "warning"
        assert logs[1]["log_level"] == "info"
    finally:
        await cache.aclose()


@pytest.mark.slow
async def test_after_a_failure_calls_fail_at_once_for_retry_seconds(
    redis_server: RedisServer,
) -> None:
    cache = RedisCache(redis_server.url)
    try:
        await cache.set("k", b"v", 60)
        redis_server.stop()
        with structlog.testing.capture_logs() as logs:
            before = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await cache.get("k")
            after = time.monotonic()  # the failure happened in between
            redis_server.start()  # back at once (and empty); the cache does not try it yet
            assert time.monotonic() < before + RETRY_SECONDS, "Redis took too long to start"
            operations: list[Callable[[], Awaitable[object]]] = [
                lambda: cache.get("k"),
                lambda: cache.claim("k", b"w", 60),
            ]
            for operation in operations:
                started = time.monotonic()
                with pytest.raises(CacheUnavailable, match="retrying soon"):
                    await operation()
                assert time.monotonic() - started < 0.05
            assert not cache.healthy
            assert not commands_run(redis_server) & {"cmdstat_get", "cmdstat_set"}

            async def claimed() -> bool:
                return await cache.claim("k", b"back", 60) == b"back"

            await eventually(claimed)  # failing at once while polling does not delay it
            recovered = time.monotonic()
            assert before + RETRY_SECONDS <= recovered < after + RETRY_SECONDS + 0.5
            assert cache.healthy
            assert await cache.get("k") == b"back"
            assert "cmdstat_set" in commands_run(redis_server)
        assert [e["event"] for e in logs] == ["cache_redis_unavailable", "cache_redis_recovered"]
    finally:
        await cache.aclose()


@pytest.mark.slow
async def test_writes_are_not_shed_while_reads_are(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    try:
        redis_server.stop()
        with pytest.raises(CacheUnavailable):
            await cache.get("k")
        redis_server.start()
        with pytest.raises(CacheUnavailable, match="retrying soon"):
            await cache.get("k")
        await cache.set("k", b"invalidated", 60)  # an invalidation does not wait its turn
        assert cache.healthy
        assert await cache.get("k") == b"invalidated"
    finally:
        await cache.aclose()


@pytest.mark.slow
async def test_after_the_pause_one_read_at_a_time_tries_the_store(
    redis_server: RedisServer,
) -> None:
    cache = RedisCache(redis_server.url)
    assert redis_server.process is not None
    try:
        await cache.set("k", b"v", 60)
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(CacheUnavailable):
                await cache.get("k")  # waits out the timeout
            await asyncio.sleep(RETRY_SECONDS)

            async def seconds_to_fail() -> float:
                started = time.monotonic()
                with pytest.raises(CacheUnavailable):
                    await cache.get("k")
                return time.monotonic() - started

            waits = sorted(await asyncio.gather(*(seconds_to_fail() for _ in range(20))))
            assert waits[-1] >= DEFAULT_TIMEOUT * 0.9  # the one that tried
            assert waits[-2] < 0.05  # the others did not wait for the hanging store
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
    finally:
        await cache.aclose()


@pytest.mark.slow
async def test_a_hanging_redis_fails_within_the_timeout(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    try:
        await cache.set("k", b"v", 60)
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(cache.get("k") for _ in range(50)), return_exceptions=True
            )
            assert all(isinstance(result, CacheUnavailable) for result in results)
            assert time.monotonic() - started < DEFAULT_TIMEOUT + 0.5
            assert not cache.healthy
            # Then no call waits out the timeout until RETRY_SECONDS have passed; the first
            # call after that tries Redis again and, failing, starts another such wait.
            for waits in (False, True, False):
                if waits:
                    await asyncio.sleep(RETRY_SECONDS)
                started = time.monotonic()
                with pytest.raises(CacheUnavailable):
                    await cache.get("k")
                took = time.monotonic() - started
                assert took >= DEFAULT_TIMEOUT * 0.8 if waits else took < DEFAULT_TIMEOUT / 5
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        await eventually(lambda: cache.get("k"))
        assert cache.healthy
    finally:
        await cache.aclose()


@pytest.mark.slow
async def test_a_stopped_cluster_fails_fast_and_recovers_without_restart(
    redis_cluster: RedisClusterServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisClusterCache(redis_cluster.url)
    try:
        await eventually(storing(cache, "k", b"v"))  # a first call also maps the slots
        redis_cluster.stop_all()
        with structlog.testing.capture_logs() as logs:
            with monkeypatch.context() as without_breaker:
                without_breaker.setattr("roost.cache.redis.RETRY_SECONDS", 0.0)
                await all_fail_quickly(cache, "k")  # each operation tries the cluster
                await all_fail_quickly(cache, "other")
            await all_fail_quickly(cache, "k")  # each one fails at once, without trying
            redis_cluster.start_all()
            await eventually(lambda: cache.get_many(["a", "b", "c", "{a}:d"]))
            await cache.set("k", b"back", 60)
            assert await cache.get("k") == b"back"
            assert cache.healthy
        assert events(logs, "cache_redis_unavailable")[0]["backend"] == "redis-cluster"
        assert [e["event"] for e in logs] == ["cache_redis_unavailable", "cache_redis_recovered"]
    finally:
        await cache.aclose()


@pytest.mark.slow
async def test_a_stopped_cluster_node_fails_only_its_keys(
    redis_cluster: RedisClusterServers,
) -> None:
    cache = RedisClusterCache(redis_cluster.url)
    lost, kept = redis_cluster.key_on(0), redis_cluster.key_on(1)
    try:
        await eventually(storing(cache, lost, b"lost"))  # a first call also maps the slots
        await cache.set(kept, b"kept", 60)
        redis_cluster.stop_node(0)
        # Within the node timeout (2 s) the other nodes still serve their slots (after it,
        # a cluster without replicas refuses every key until the node is back).
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await cache.get(lost)
        assert time.monotonic() - started < 1.0
        assert not cache.healthy
        with pytest.raises(CacheUnavailable, match="retrying soon"):
            await cache.get(kept)  # the breaker is the whole cache's, not one node's
        await asyncio.sleep(RETRY_SECONDS)
        assert await cache.get(kept) == b"kept"
        assert cache.healthy
        with pytest.raises(CacheUnavailable):
            await cache.get(lost)
        redis_cluster.start_node(0)
        await eventually(storing(cache, lost, b"back"))
        assert await cache.get(lost) == b"back"
    finally:
        await cache.aclose()


# The loader: single flight, early refresh, outages.

LOADER_BACKENDS = ["memory", "redis"]


@pytest.fixture(params=LOADER_BACKENDS)
async def loader_cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    backend = open_cache(url_of(request, request.param))
    try:
        yield backend
    finally:
        await backend.aclose()


class Source:
    """A ``load`` that counts its calls, takes ``delay`` seconds, and can fail."""

    def __init__(self, delay: float = 0.05, error: Exception | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.error = error

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return b"value %d" % self.calls


async def test_concurrent_misses_share_one_load(loader_cache: Cache) -> None:
    loader, load = Loader(loader_cache), Source()
    values = await asyncio.gather(*(loader.get("hot", load, 60) for _ in range(200)))
    assert load.calls == 1
    assert values == [b"value 1"] * 200
    assert (loader.misses, loader.coalesced, loader.hits) == (1, 199, 0)
    assert loader.in_flight == 0
    assert await loader.get("hot", load, 60) == b"value 1"
    assert (load.calls, loader.hits) == (1, 1)
    stored = await loader_cache.get("hot")
    assert stored is not None
    version, expiry, delta = ENVELOPE.unpack_from(stored)
    assert (version, stored[ENVELOPE.size :]) == (VERSION, b"value 1")
    assert time.time() + 55 < expiry <= time.time() + 60
    assert 0.04 < delta < 1.0


async def test_a_failing_load_reaches_every_waiter_and_is_tried_again(loader_cache: Cache) -> None:
    loader, failing = Loader(loader_cache), Source(error=RuntimeError("database down"))
    results = await asyncio.gather(
        *(loader.get("k", failing, 60) for _ in range(20)), return_exceptions=True
    )
    assert failing.calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "database down" for r in results)
    working = Source()
    assert await loader.get("k", working, 60) == b"value 1"
    assert working.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_others(loader_cache: Cache) -> None:
    loader, load = Loader(loader_cache), Source(delay=0.1)
    first = asyncio.create_task(loader.get("k", load, 60))
    second = asyncio.create_task(loader.get("k", load, 60))
    await asyncio.sleep(0.02)
    first.cancel()
    assert await second == b"value 1"
    assert first.cancelled()
    assert load.calls == 1


async def test_a_value_that_is_not_an_envelope_is_a_miss(loader_cache: Cache) -> None:
    loader, load = Loader(loader_cache), Source(delay=0)
    await loader_cache.set("k", b"written by something else", 60)
    assert await loader.get("k", load, 60) == b"value 1"
    assert await loader.get("k", load, 60) == b"value 1"
    assert (loader.misses, loader.hits, load.calls) == (1, 1, 1)


async def test_early_refresh_follows_xfetch(loader_cache: Cache) -> None:
    monotonic, wall, draw = [100.0], [1_000_000.0], [1.0]
    loader = Loader(
        loader_cache, clock=lambda: monotonic[0], wall=lambda: wall[0], random=lambda: draw[0]
    )

    async def load() -> bytes:  # takes 2 s by the loader's clock
        monotonic[0] += 2.0
        return b"at %d" % wall[0]

    assert await loader.get("k", load, 60) == b"at 1000000"  # expires at 1000060
    wall[0] += 50  # 10 s before expiry: recompute when 2 s * beta * -log(draw) >= 10
    draw[0] = math.exp(-4)  # 8 < 10
    assert await loader.get("k", load, 60) == b"at 1000000"
    draw[0] = math.exp(-6)  # 12 >= 10
    assert await loader.get("k", load, 60) == b"at 1000050"  # expires at 1000110
    wall[0] += 50
    assert await loader.get("k", load, 60, beta=0.5) == b"at 1000050"  # 6 < 10
    assert await loader.get("k", load, 60, beta=2.0) == b"at 1000100"  # 24 >= 10
    wall[0] += 60  # at the expiry itself, even the least likely draw recomputes
    draw[0] = 1.0
    assert await loader.get("k", load, 60) == b"at 1000160"
    draw[0] = 0.0
    assert await loader.get("k", load, 60) == b"at 1000160"  # log(0): always early
    assert (loader.misses, loader.early_refreshes, loader.hits) == (1, 4, 2)


@pytest.mark.slow
async def test_hot_keys_are_refreshed_early_and_not_all_at_once(loader_cache: Cache) -> None:
    # Each load takes 0.05 s on the loader's clock, so with beta=3 a key R seconds from
    # expiry is recomputed with a chance of exp(-R / 0.15): never an hour early, ~5% at
    # R=0.45. The clocks are the test's, so the count does not depend on the machine.
    clock, wall = [0.0], [1_000_000.0]

    async def load() -> bytes:
        clock[0] += 0.05
        return b"v"

    loader = Loader(
        loader_cache,
        clock=lambda: clock[0],
        wall=lambda: wall[0],
        random=random.Random(7).random,
    )
    ttl, keys = 3600.0, [f"k{n}" for n in range(200)]
    await asyncio.gather(*(loader.get(key, load, ttl, beta=3) for key in keys))
    await asyncio.gather(*(loader.get(key, load, ttl, beta=3) for key in keys))
    assert (loader.misses, loader.hits, loader.early_refreshes) == (200, 200, 0)
    wall[0] += ttl - 0.45
    await asyncio.gather(*(loader.get(key, load, ttl, beta=3) for key in keys))
    assert loader.misses == 200  # none expired: the refreshes came early
    assert 2 <= loader.early_refreshes <= 30, loader.early_refreshes  # some (~5%), not all


async def test_a_cache_that_fails_on_set_still_serves_the_value() -> None:
    class ReadOnly(MemoryCache):
        async def set(self, key: str, value: bytes, ttl: float) -> None:
            raise CacheUnavailable("read-only")

    loader, load = Loader(ReadOnly()), Source()
    assert await loader.get("k", load, 60) == b"value 1"
    assert await loader.get("k", load, 60) == b"value 2"
    assert (loader.errors, loader.misses) == (2, 2)


@pytest.mark.slow
async def test_a_cache_outage_serves_from_load_one_per_key(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    loader = Loader(cache)
    try:
        redis_server.stop()
        load = Source(delay=0.1)
        values = await asyncio.gather(*(loader.get("k", load, 60) for _ in range(50)))
        assert values == [b"value 1"] * 50
        assert (load.calls, loader.errors, loader.coalesced) == (1, 1, 49)
        assert await loader.get("k", load, 60) == b"value 2"  # not cached: loaded again
        assert loader.errors == 2
        assert not cache.healthy
        redis_server.start()
        await asyncio.sleep(RETRY_SECONDS)  # then the loader's next call tries Redis again
        assert await loader.get("k", load, 60) == b"value 3"
        assert await loader.get("k", load, 60) == b"value 3"
        assert cache.healthy and loader.hits == 1
    finally:
        await cache.aclose()
