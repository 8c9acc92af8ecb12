"""The broker contract: every backend passes this suite unchanged.

The Redis parameter runs against a throwaway ``redis-server`` (``tests/redis_server.py``);
the tests after the suite cover what only a networked backend can do: carry wake-ups
between instances, and lose its server and find it again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import pytest
import structlog

from redis_server import RedisServer
from roost.broker.base import Broker, open_broker
from roost.broker.memory import MemoryBroker
from roost.broker.redis import CHANNEL, DEAD_AFTER, RedisBroker, split_channel

BACKENDS = ["memory", "redis"]
WITHIN = 5.0
"""Seconds a condition polled by ``eventually`` may take before the test fails."""
QUIET = 0.2
"""Seconds without a wake-up after which no more are expected (only to count them)."""


async def eventually(condition: Callable[[], bool], within: float = WITHIN) -> float:
    """Wait until ``condition()`` holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


class Wakes:
    """A ``wake`` callable that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1

    async def settle(self) -> int:
        """The count once no wake-up came for ``QUIET`` seconds."""
        while True:
            seen = self.count
            await asyncio.sleep(QUIET)
            if self.count == seen:
                return seen


async def opened(broker: Broker) -> Broker:
    await broker.open()
    await eventually(lambda: broker.healthy)
    return broker


@pytest.fixture(params=BACKENDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    backend: Broker
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = RedisBroker(server.url)
    else:
        backend = open_broker("memory://")
    try:
        yield await opened(backend)
    finally:
        await backend.aclose()


async def test_a_publish_wakes_every_listener(broker: Broker) -> None:
    first, second = Wakes(), Wakes()
    broker.listen(first)
    broker.listen(second)
    broker.publish()
    await eventually(lambda: first.count >= 1 and second.count >= 1)


async def test_a_burst_wakes_listeners_after_its_last_publish(broker: Broker) -> None:
    wakes = Wakes()
    broker.listen(wakes)
    for _ in range(20):
        for _ in range(50):
            broker.publish()
        await asyncio.sleep(0)  # let earlier wake-ups be in flight while publishing
    broker.publish()
    after_last = wakes.count
    await eventually(lambda: wakes.count > after_last)
    assert await wakes.settle() >= 1


async def test_publish_without_listeners_does_not_raise(broker: Broker) -> None:
    broker.publish()
    broker.publish()
    wakes = Wakes()
    broker.listen(wakes)
    broker.publish()
    await eventually(lambda: wakes.count >= 1)


async def test_aclose_stops_wake_ups(broker: Broker) -> None:
    wakes = Wakes()
    broker.listen(wakes)
    await broker.aclose()
    broker.publish()  # still never raises
    assert await wakes.settle() == 0


async def test_the_url_scheme_picks_the_backend(redis_server: RedisServer) -> None:
    memory = open_broker("memory://")
    redis = open_broker(redis_server.url)
    secure = open_broker(f"rediss://127.0.0.1:{redis_server.port}/0")
    try:
        assert isinstance(memory, MemoryBroker)
        assert isinstance(redis, RedisBroker)
        assert isinstance(secure, RedisBroker)
        await opened(redis)
    finally:
        for backend in (memory, redis, secure):
            await backend.aclose()


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported broker URL scheme"):
        open_broker("nats://localhost:4222")


# Redis only: wake-ups between instances, and a server that goes away.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0", ("redis://h:6379/0", CHANNEL)),
        ("redis://h/1?channel=roost:staging", ("redis://h/1", "roost:staging")),
        (
            "rediss://u:p@h/0?ssl_cert_reqs=none&channel=c",
            ("rediss://u:p@h/0?ssl_cert_reqs=none", "c"),
        ),
    ],
)
def test_the_channel_comes_from_the_url(url: str, expected: tuple[str, str]) -> None:
    assert split_channel(url) == expected


def test_an_empty_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="channel"):
        split_channel("redis://h/0?channel=")


@pytest.fixture
async def brokers(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisBroker]]:
    """Open as many brokers on ``redis_server`` as a test needs; all are closed after it."""
    made: list[RedisBroker] = []

    def make(url: str = redis_server.url) -> RedisBroker:
        made.append(RedisBroker(url))
        return made[-1]

    try:
        yield make
    finally:
        for broker in made:
            await broker.aclose()


async def test_a_publish_wakes_every_instance(brokers: Callable[..., RedisBroker]) -> None:
    a, b = brokers(), brokers()
    await opened(a)
    await opened(b)
    a_wakes, b_wakes = Wakes(), Wakes()
    a.listen(a_wakes)
    b.listen(b_wakes)
    a.publish()
    await eventually(lambda: a_wakes.count == 1 and b_wakes.count == 1)
    b.publish()
    await eventually(lambda: a_wakes.count == 2 and b_wakes.count == 2)


async def test_a_burst_costs_one_message(brokers: Callable[..., RedisBroker]) -> None:
    a, b = brokers(), brokers()
    await opened(a)
    await opened(b)
    wakes = Wakes()
    b.listen(wakes)
    for _ in range(1000):
        a.publish()
    assert await wakes.settle() == 1


async def test_channels_keep_deployments_apart(
    brokers: Callable[..., RedisBroker], redis_server: RedisServer
) -> None:
    staging = brokers(f"{redis_server.url}?channel=roost:staging")
    production = brokers()
    await opened(staging)
    await opened(production)
    staging_wakes, production_wakes = Wakes(), Wakes()
    staging.listen(staging_wakes)
    production.listen(production_wakes)
    staging.publish()
    await eventually(lambda: staging_wakes.count == 1)
    assert await production_wakes.settle() == 0


def kill(server: RedisServer) -> None:
    """SIGKILL: no shutdown at all; the kernel closes the connections."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    server.stop()  # forgets the process


OUTAGES: dict[str, Callable[[RedisServer], None]] = {"stop": RedisServer.stop, "kill": kill}


@pytest.mark.slow
@pytest.mark.parametrize("outage", OUTAGES)
async def test_an_outage_is_seen_and_survived(
    brokers: Callable[..., RedisBroker], redis_server: RedisServer, outage: str
) -> None:
    listener, publisher = brokers(), brokers()
    await opened(listener)
    await opened(publisher)
    wakes = Wakes()
    listener.listen(wakes)

    OUTAGES[outage](redis_server)
    assert await eventually(lambda: not listener.healthy) < 2.0
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            publisher.publish()  # never raises; dropped and logged once
            await asyncio.sleep(0.02)
        await eventually(lambda: events(logs, "broker_publish_failed") != [])
    assert len(events(logs, "broker_publish_failed")) == 1
    before = wakes.count

    redis_server.start()
    await eventually(lambda: listener.healthy and publisher.healthy)
    await eventually(lambda: wakes.count == before + 1)  # messages may have been lost
    publisher.publish()
    await eventually(lambda: wakes.count == before + 2)
    assert await wakes.settle() == before + 2  # woken once on reconnect, once by the publish


@pytest.mark.slow
async def test_a_hanging_redis_is_seen_within_dead_after(
    brokers: Callable[..., RedisBroker], redis_server: RedisServer
) -> None:
    broker = await opened(brokers())
    wakes = Wakes()
    broker.listen(wakes)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        with structlog.testing.capture_logs() as logs:
            broker.publish()  # times out in the background
            took = await eventually(lambda: not broker.healthy)
            assert took < DEAD_AFTER + 1.0
            await eventually(lambda: events(logs, "broker_publish_failed") != [])
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert len(events(logs, "broker_redis_unavailable")) == 1
    await eventually(lambda: broker.healthy, within=WITHIN)
    await eventually(lambda: wakes.count >= 1)


@pytest.mark.slow
async def test_open_does_not_wait_for_an_absent_redis(
    brokers: Callable[..., RedisBroker], redis_server: RedisServer
) -> None:
    redis_server.stop()
    broker = brokers()
    wakes = Wakes()
    broker.listen(wakes)
    started = time.monotonic()
    await broker.open()
    assert time.monotonic() - started < 0.1
    assert not broker.healthy
    broker.publish()
    await asyncio.sleep(0.3)  # several failed attempts to subscribe
    assert not broker.healthy

    redis_server.start()
    await eventually(lambda: broker.healthy)
    await eventually(lambda: wakes.count == 1)
    broker.publish()
    await eventually(lambda: wakes.count == 2)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]
