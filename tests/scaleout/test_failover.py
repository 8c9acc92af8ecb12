"""Losing or restarting instances behind the shipped HAProxy, under load.

Three instances on one PostgreSQL and Redis behind ``deploy/haproxy.cfg``; writers send
records through HAProxy while realtime followers, connected through HAProxy too, keep a
subscription open and, whenever their connection ends, reconnect (through HAProxy, so to
a live instance) and resume from the last cursor they received.

- SIGKILL one instance mid-load: the writers retry failed writes with their
  ``Idempotency-Key``; every write is then in the database exactly once, HAProxy stops
  sending to the dead instance, and every follower has every write's event, once.
- SIGTERM one instance mid-load (main process only, as ``docker stop`` does): it drains
  and exits 0, and no request of a client that does not retry fails; its followers were
  told to reconnect (close code 1012).
- Rolling restart, one instance after the other, under load: no request fails.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from guarantees.live import admin_token, create_collection
from realtime.client import Message, RealtimeClient
from redis_server import RedisServer
from scaleout.cluster import Cluster, answered, running_cluster

pytestmark = pytest.mark.slow

RECORDS = "/api/collections/items/records"
RECORDS_ROUTE = "/api/collections/{name}/records"
WRITERS = 6
WRITES = 240
FOLLOWERS = 6
DRAIN_SECONDS = 3
"""Above HAProxy's two failed checks a second apart (``inter 1s fall 2``)."""
RETRYABLE = {502, 503, 504}
"""What HAProxy answers for a request the instance it went to could not answer."""


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, redis_server: RedisServer) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path, postgres_url, redis_server.url, drain_seconds=str(DRAIN_SECONDS)
    ) as running:
        yield running


def prepare(cluster: Cluster) -> dict[str, str]:
    """The ``items`` collection; an admin's headers."""
    token = admin_token(cluster.servers[0])
    create_collection(
        cluster.url,
        token,
        {
            "name": "items",
            "fields": {"n": {"type": "integer"}},
            "indexes": [{"fields": ["n"], "unique": True}],
            "rules": {"list": "", "view": "", "create": None, "update": None, "delete": None},
        },
    )
    return {"Authorization": f"Bearer {token}"}


class Follower:
    """A realtime client that outlives its connections: when one ends (the instance died
    or asked it to reconnect), it connects again through the balancer and subscribes from
    the last cursor it received."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ended: list[Message] = []
        """The events of connections that have ended."""
        self.close_codes: list[int | None] = []
        self.current: RealtimeClient | None = None
        self.cursor: str | None = None
        self.subscribed = asyncio.Event()

    def events(self) -> list[Message]:
        current = self.current.events("s") if self.current is not None else []
        return [*self.ended, *current]

    def numbers(self) -> list[int]:
        return [event["record"]["n"] for event in self.events() if event["op"] == "create"]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with RealtimeClient.connect(self.url, self.token) as client:
                    await client.subscribe("s", "items", since=self.cursor)
                    self.current = client
                    self.subscribed.set()
                    await _first(client.wait_closed(timeout=3600), stop.wait())
                    if stop.is_set():
                        return
                    self.close_codes.append(client.close_code)
            except (OSError, ConnectionError, ConnectionClosed, TimeoutError, AssertionError):
                pass  # the balancer had no live instance for it yet, or it closed at once
            finally:
                if self.current is not None:
                    self.ended += self.current.events("s")
                    self.cursor = self.current.cursor("s") or self.cursor
                    self.current = None
            await asyncio.sleep(0.2)


async def _first(*waits: Any) -> None:
    """Wait until the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with suppress(BaseException):
                await task


@asynccontextmanager
async def following(url: str, headers: dict[str, str]) -> AsyncIterator[list[Follower]]:
    """``FOLLOWERS`` followers, subscribed before the block starts, stopped after it."""
    token = headers["Authorization"].removeprefix("Bearer ")
    followers = [Follower(url, token) for _ in range(FOLLOWERS)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(follower.run(stop)) for follower in followers]
    try:
        async with asyncio.timeout(15):
            await asyncio.gather(*(follower.subscribed.wait() for follower in followers))
        yield followers
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def all_heard(followers: list[Follower], numbers: set[int]) -> None:
    """Wait until every follower has an event for each of ``numbers``."""
    deadline = time.monotonic() + 30
    while any(not numbers <= set(f.numbers()) for f in followers):
        missing = [len(numbers - set(f.numbers())) for f in followers]
        assert time.monotonic() < deadline, f"events missing per follower: {missing}"
        await asyncio.sleep(0.1)


async def write_with_retries(http: httpx.AsyncClient, n: int, headers: dict[str, str]) -> None:
    """Create record ``n``; retry (same key) until acknowledged, as a phone would."""
    keyed = {**headers, "Idempotency-Key": f"item-{n}"}
    deadline = time.monotonic() + 30
    while True:
        try:
            response = await http.post(RECORDS, json={"n": n}, headers=keyed)
        except httpx.TransportError:
            pass
        else:
            if response.status_code == 201:
                assert response.json()["n"] == n
                return
            assert response.status_code in RETRYABLE, response.text
        assert time.monotonic() < deadline, f"write {n} never acknowledged"
        await asyncio.sleep(0.1)


async def stored_numbers(http: httpx.AsyncClient, headers: dict[str, str]) -> Counter[int]:
    """How many times each ``n`` is in the database (paged through HAProxy)."""
    found: Counter[int] = Counter()
    cursor = ""
    while True:
        response = await http.get(
            RECORDS, params={"limit": 500, "sort": "n", "cursor": cursor}, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found.update(item["n"] for item in page["items"])
        if page["next_cursor"] is None:
            return found
        cursor = page["next_cursor"]


async def test_an_instance_killed_under_load_loses_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    headers = prepare(cluster)
    victim = cluster.servers[1]
    acknowledged: set[int] = set()
    async with (
        following(cluster.url, headers) as followers,
        httpx.AsyncClient(base_url=cluster.url, timeout=10) as http,
    ):

        async def writer(numbers: range) -> None:
            for n in numbers:
                if n == WRITES // 3:
                    victim.kill()  # SIGKILL, mid-load: some writes are in flight on it
                await write_with_retries(http, n, headers)
                acknowledged.add(n)

        await asyncio.gather(*(writer(range(w, WRITES, WRITERS)) for w in range(WRITERS)))
        assert acknowledged == set(range(WRITES))
        assert await stored_numbers(http, headers) == Counter(range(WRITES))  # once each
        await all_heard(followers, acknowledged)
        for follower in followers:
            assert sorted(follower.numbers()) == list(range(WRITES)), "an event came twice"
        assert any(f.close_codes for f in followers), "no follower was on the killed instance"
        # HAProxy has marked it down: nothing fails, the others answer everything.
        before = sum(answered(s, route="/api/health") for s in cluster.servers if s is not victim)
        for _ in range(30):
            assert (await http.get("/api/health")).status_code == 200
        after = sum(answered(s, route="/api/health") for s in cluster.servers if s is not victim)
        assert after - before == 30


class Load:
    """Clients that do not retry: reads of one record and writes, through the balancer,
    until stopped; every response and transport error is kept."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str], record: str) -> None:
        self.http = http
        self.headers = headers
        self.record = record
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.written: list[int] = []

    async def run(self, first: int, stop: asyncio.Event) -> None:
        n = first
        while not stop.is_set():
            try:
                read = await self.http.get(f"{RECORDS}/{self.record}", headers=self.headers)
                self.statuses[read.status_code] += 1
                written = await self.http.post(RECORDS, json={"n": n}, headers=self.headers)
                self.statuses[written.status_code] += 1
                if written.status_code == 201:
                    self.written.append(n)
            except httpx.TransportError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            n += WRITERS

    def assert_no_failure(self) -> None:
        assert not self.failures, self.failures[:5]
        assert set(self.statuses) == {200, 201}, self.statuses
        assert self.statuses[201] > 50, "too little load to prove anything"


@asynccontextmanager
async def loaded(cluster: Cluster, headers: dict[str, str]) -> AsyncIterator[Load]:
    """``WRITERS`` clients loading the cluster for the block's duration."""
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as http:
        response = await http.post(RECORDS, json={"n": -1}, headers=headers)
        assert response.status_code == 201, response.text
        load = Load(http, headers, response.json()["id"])
        stop = asyncio.Event()
        tasks = [asyncio.create_task(load.run(first, stop)) for first in range(WRITERS)]
        try:
            await asyncio.sleep(1)
            yield load
            await asyncio.sleep(1)
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def test_sigterm_under_load_drains_without_failing_a_request(cluster: Cluster) -> None:
    headers = prepare(cluster)
    victim = cluster.servers[2]
    async with following(cluster.url, headers) as followers:
        async with loaded(cluster, headers) as load:
            started = time.monotonic()
            assert await asyncio.to_thread(victim.stop) == 0
            assert time.monotonic() - started >= DRAIN_SECONDS
            served = len(load.written)
        load.assert_no_failure()
        assert len(load.written) > served, "the others stopped answering"
        await all_heard(followers, set(load.written))
    asked = [code for f in followers for code in f.close_codes]
    assert asked and set(asked) == {1012}, asked  # "restarting: reconnect and resume"


async def test_a_rolling_restart_under_load_fails_no_request(cluster: Cluster) -> None:
    headers = prepare(cluster)
    async with loaded(cluster, headers) as load:
        for server in cluster.servers:
            assert await asyncio.to_thread(server.stop) == 0
            await asyncio.to_thread(server.start)
            await asyncio.sleep(3)  # HAProxy takes it back after two good checks
    load.assert_no_failure()
    assert all(answered(server, route=RECORDS_ROUTE) > 0 for server in cluster.servers)
