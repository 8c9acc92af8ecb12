"""Realtime across processes: real ``roost serve`` processes, real sockets.

- Two instances on one PostgreSQL and one Redis: a subscriber on B sees a write made
  through A within 2 s; with Redis stopped, every write still succeeds and every event
  still reaches B (each feed reads the change log on its timer), once, in order; Redis
  comes back and events keep coming. ``/api/ready`` never answers 500 meanwhile.
- The embedded default (SQLite) with two workers: subscribers on both workers get every
  write, made through either worker, exactly once and in one order.
- Drop and resume across instances: a subscriber that left B reconnects to B and to A
  with its last cursor and gets exactly the changes it missed that it may read (creates,
  updates, deletes, records entering and leaving its view), once each, in order, then
  live events.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CHEAP_PASSWORDS, LiveServer, free_port
from guarantees.live import SECRET, admin_token, create_collection
from realtime.client import Message, RealtimeClient
from redis_server import RedisServer

pytestmark = pytest.mark.slow

COLLECTION = "posts"
PATH = f"/api/collections/{COLLECTION}/records"
LATENCY_BOUND = 2.0
"""Seconds from sending a write to one instance to its event on another."""
DELIVERY_TIMEOUT = 15.0
"""Seconds to wait for a whole run of events (generous: a loaded CI machine)."""
BASE_ENV = {
    "ROOST_SECRET_KEY": SECRET,  # one key for every instance: a token from A works on B
    **{f"ROOST_{name.upper()}": str(value) for name, value in CHEAP_PASSWORDS.items()},
}
OWNED_OR_PUBLIC = "public = true || owner = @auth.id"


def make_server(root: Path, env: dict[str, str], workers: int = 1) -> LiveServer:
    """A server whose data folder and log (``root/server.log``) are its own."""
    return LiveServer(
        data_dir=root / "data", port=free_port(), workers=workers, env={**BASE_ENV, **env}
    )


def user_visible(user_id: str) -> Callable[[dict[str, Any]], bool]:
    """Whether ``user_id`` may read a record under the ``OWNED_OR_PUBLIC`` rules."""
    return lambda record: record.get("public") is True or record["owner"] == user_id


def sees_all(record: dict[str, Any]) -> bool:
    return True


# Writes and the events they should cause


@dataclass(frozen=True)
class Write:
    """One acknowledged write: the record before and after it (None: absent)."""

    op: str
    id: str
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def expected_events(writes: list[Write], sees: Callable[[dict[str, Any]], bool]) -> list[Message]:
    """What a reader that ``sees`` records should get for ``writes``, in order: the op
    table of ``roost.realtime.changes`` (create/enter, update, delete/leave, nothing)."""
    events = []
    for write in writes:
        now = write.after is not None and sees(write.after)
        then = write.before is not None and sees(write.before)
        if now:
            op = "update" if then else ("create" if write.op == "create" else "enter")
        elif then:
            op = "delete" if write.op == "delete" else "leave"
        else:
            continue
        events.append({"op": op, "id": write.id, "version": write.version, "after": write.after})
    return events


def event_of(record_id: str) -> Callable[[Message], bool]:
    return lambda message: message["type"] == "event" and message["id"] == record_id


def position(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])


def assert_delivered(got: list[Message], expected: list[Message], who: str) -> None:
    """``got`` holds exactly ``expected``, in order, each once, with the right records and
    strictly increasing cursors."""
    seen = [(e["op"], e["id"], e["version"]) for e in got]
    wanted = [(e["op"], e["id"], e["version"]) for e in expected]
    assert len(set(seen)) == len(seen), f"{who}: duplicate events"
    if seen != wanted:
        differ = next(
            (i for i, (a, b) in enumerate(zip(seen, wanted, strict=False)) if a != b),
            min(len(seen), len(wanted)),
        )
        raise AssertionError(
            f"{who}: got {len(seen)} events, expected {len(wanted)}; first difference at"
            f" {differ}: got {seen[differ : differ + 3]}, expected {wanted[differ : differ + 3]}"
        )
    positions = [position(e["cursor"]) for e in got]
    assert positions == sorted(set(positions)), f"{who}: cursors not strictly increasing"
    for event, want in zip(got, expected, strict=True):
        if event["op"] in ("delete", "leave"):
            assert event["record"] is None, event
        else:
            record = event["record"]
            assert record["id"] == want["id"] and record["version"] == want["version"], event
            assert record["n"] == want["after"]["n"], event
            assert "password_hash" not in str(record)


class Writer:
    """Writes to ``COLLECTION`` over HTTP, one new connection per request (so requests
    spread over workers), and keeps what it wrote. Any failed write fails the test."""

    def __init__(
        self, url: str, tokens: dict[str, str], user_ids: dict[str, str], seed: int = 7
    ) -> None:
        self.url = url
        self.tokens = tokens
        """Who may write (a name) and their access token."""
        self.owners = {user_id: who for who, user_id in user_ids.items()}
        self.records: dict[str, dict[str, Any]] = {}
        """The live records, as the server returned them."""
        self.writes: list[Write] = []
        self.rng = random.Random(seed)
        self._n = seed * 100_000  # distinct ``n`` values across writers

    @asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as http:
            yield http

    async def _send(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        async with self._http() as http:
            response = await http.request(method, path, headers=headers, **kwargs)
        assert response.status_code in (200, 201, 204), (
            f"{method} {path} -> {response.status_code}: {response.text}"
        )
        return response

    async def create(self, who: str, public: bool) -> Write:
        self._n += 1
        body = {"n": self._n, "public": public}
        record = (await self._send(who, "POST", PATH, json=body)).json()
        self.records[record["id"]] = record
        return self._log(Write("create", record["id"], record["version"], None, record))

    async def update(self, record_id: str, public: bool) -> Write:
        before = self.records[record_id]
        self._n += 1
        who = self._owner_name(before)
        patch = {"n": self._n, "public": public}
        after = (await self._send(who, "PATCH", f"{PATH}/{record_id}", json=patch)).json()
        assert after["version"] == before["version"] + 1, after
        self.records[record_id] = after
        return self._log(Write("update", record_id, after["version"], before, after))

    async def delete(self, record_id: str) -> Write:
        before = self.records.pop(record_id)
        await self._send(self._owner_name(before), "DELETE", f"{PATH}/{record_id}")
        return self._log(Write("delete", record_id, before["version"] + 1, before, None))

    async def random_write(self) -> Write:
        """A create while few records live, else mostly updates (that may flip
        ``public``), some deletes; made by any of the writer's users."""
        roll = self.rng.random()
        if len(self.records) < 5 or roll < 0.35:
            who = self.rng.choice(sorted(self.tokens))
            return await self.create(who, public=self.rng.random() < 0.5)
        record_id = self.rng.choice(sorted(self.records))
        if roll < 0.85:
            return await self.update(record_id, public=self.rng.random() < 0.5)
        return await self.delete(record_id)

    async def run(self, count: int) -> list[Write]:
        """``count`` random writes, one after another (so the log has their order)."""
        return [await self.random_write() for _ in range(count)]

    def _owner_name(self, record: dict[str, Any]) -> str:
        return self.owners[record["owner"]]

    def _log(self, write: Write) -> Write:
        self.writes.append(write)
        return write


def user_id_of(url: str, token: str) -> str:
    response = httpx.get(
        f"{url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    found: str = response.json()["id"]
    return found


def sign_up(url: str, email: str) -> str:
    response = httpx.post(
        f"{url}/api/auth/signup",
        json={"email": email, "password": "a-long-enough-password"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["access_token"]
    return token


# Readiness, watched throughout


@dataclass
class ReadyProbe:
    """Polls ``/api/ready`` on every server until stopped; keeps each answer's status
    (None: no answer at all)."""

    urls: list[str]
    statuses: list[tuple[str, int | None, str]] = field(default_factory=list)
    broker: dict[str, str] = field(default_factory=dict)
    """Each server's broker check in its latest 200 answer."""
    broker_down: int = 0
    """Answers that reported the broker down."""

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not stop.is_set():
                for url in self.urls:
                    try:
                        response = await http.get(f"{url}/api/ready")
                    except httpx.HTTPError as exc:
                        self.statuses.append((url, None, type(exc).__name__))
                        continue
                    self.statuses.append((url, response.status_code, response.text[:200]))
                    if response.status_code == 200:
                        self.broker[url] = response.json()["checks"].get("broker", "?")
                        self.broker_down += self.broker[url] == "down"
                await asyncio.sleep(0.05)

    def assert_no_failures(self) -> None:
        bad = [s for s in self.statuses if s[1] not in (200, 503)]
        assert not bad, f"readiness answered badly: {bad[:5]}"
        assert len(self.statuses) > 20


@asynccontextmanager
async def probing(*servers: LiveServer) -> AsyncIterator[ReadyProbe]:
    probe = ReadyProbe([server.url for server in servers])
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    try:
        yield probe
    finally:
        stop.set()
        await task
    probe.assert_no_failures()


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# Two instances on PostgreSQL and Redis


@dataclass
class Pair:
    a: LiveServer
    b: LiveServer
    redis: RedisServer
    admin: str
    """An admin's access token (valid on both instances)."""


@pytest.fixture
def pair(
    tmp_path: Path, postgres_url: str, redis_server_factory: Callable[[], RedisServer]
) -> Iterator[Pair]:
    redis = redis_server_factory()
    env = {"ROOST_DATABASE_URL": postgres_url, "ROOST_BROKER_URL": redis.url}
    a = make_server(tmp_path / "a", env)
    b = make_server(tmp_path / "b", env)
    try:
        a.start()  # migrates the empty database first; then B finds it ready
        b.start()
        token = admin_token(a)
        create_collection(
            a.url,
            token,
            {
                "name": COLLECTION,
                "fields": {"n": {"type": "integer"}, "public": {"type": "boolean"}},
                "rules": {
                    "list": OWNED_OR_PUBLIC,
                    "view": OWNED_OR_PUBLIC,
                    "create": "@auth.id != null",
                    "update": "owner = @auth.id",
                    "delete": "owner = @auth.id",
                },
            },
        )
        yield Pair(a, b, redis, token)
    finally:
        a.kill(signal.SIGTERM)
        b.kill(signal.SIGTERM)


async def test_events_cross_instances_and_survive_a_redis_outage(pair: Pair) -> None:
    tokens = {"admin": pair.admin}
    writer = Writer(pair.a.url, tokens, {"admin": user_id_of(pair.a.url, pair.admin)})
    async with (
        probing(pair.a, pair.b) as probe,
        RealtimeClient.connect(pair.b.url, pair.admin) as subscriber,
    ):
        await subscriber.subscribe("s1", COLLECTION)

        # Redis up: each write through A reaches B's subscriber within the bound.
        await wait_until(lambda: probe.broker.get(pair.b.url) == "ok", 10, "B's broker healthy")
        latencies = []
        for _ in range(8):
            start = time.monotonic()
            write = await writer.create("admin", public=True)
            await subscriber.wait_for(event_of(write.id), LATENCY_BOUND)
            latencies.append(time.monotonic() - start)
        print(
            f"\nA→B latency, Redis up: median {statistics.median(latencies) * 1000:.0f} ms,"
            f" max {max(latencies) * 1000:.0f} ms (write request included)"
        )
        assert max(latencies) < LATENCY_BOUND

        # Redis stopped: writes keep succeeding (Writer asserts it) and events keep coming.
        pair.redis.stop()
        start = time.monotonic()
        await writer.run(50)
        written = time.monotonic() - start
        expected = expected_events(writer.writes, sees_all)
        got = await subscriber.wait_events("s1", len(expected), DELIVERY_TIMEOUT)
        print(
            f"Redis down: 50 writes in {written:.2f} s, all delivered"
            f" {time.monotonic() - start - written:.2f} s after the last one"
        )
        assert {"update", "delete"} <= {w.op for w in writer.writes[-50:]}

        # Redis back: the brokers recover and events keep coming. (The first write after
        # the restart may wait for B's 1 s poll: A's first PUBLISH goes out on a pooled
        # connection from before the outage and is lost.)
        pair.redis.start()
        recovered = await wait_until(
            lambda: probe.broker.get(pair.a.url) == probe.broker.get(pair.b.url) == "ok",
            15,
            "brokers healthy again",
        )
        print(
            f"brokers healthy {recovered:.2f} s after Redis restarted;"
            f" {probe.broker_down} readiness answers reported the broker down"
        )
        latencies = []
        for _ in range(10):
            start = time.monotonic()
            write = await writer.random_write()
            await subscriber.wait_events("s1", len(writer.writes), LATENCY_BOUND)
            latencies.append(time.monotonic() - start)
        each = ", ".join(f"{x * 1000:.0f}" for x in latencies)
        print(
            f"A→B latency, Redis back: median {statistics.median(latencies) * 1000:.0f} ms,"
            f" max {max(latencies) * 1000:.0f} ms ({each})"
        )
        await asyncio.sleep(0.5)  # room for a late duplicate to show up
        got = subscriber.events("s1")
        assert_delivered(got, expected_events(writer.writes, sees_all), "subscriber on B")
        assert subscriber.close_code is None
    assert any(s[1] == 200 for s in probe.statuses)


async def test_resume_on_either_instance_after_missing_changes(pair: Pair) -> None:
    user = sign_up(pair.a.url, "reader@example.com")
    tokens = {"admin": pair.admin, "user": user}
    user_ids = {who: user_id_of(pair.a.url, token) for who, token in tokens.items()}
    writer = Writer(pair.a.url, tokens, user_ids)
    sees = user_visible(user_ids["user"])

    async with RealtimeClient.connect(pair.b.url, user) as first:
        await first.subscribe("s1", COLLECTION)
        await writer.run(20)
        before_drop = expected_events(writer.writes, sees)
        got = await first.wait_events("s1", len(before_drop), DELIVERY_TIMEOUT)
        await asyncio.sleep(0.3)
        assert_delivered(first.events("s1"), before_drop, "first connection")
        cursor = first.cursor("s1")
        assert cursor is not None and cursor == got[-1]["cursor"]

    dropped = len(writer.writes)
    await writer.run(200)
    missed = expected_events(writer.writes[dropped:], sees)
    ops = {e["op"] for e in missed}
    assert {"create", "update", "delete", "enter", "leave"} <= ops, ops
    assert len(missed) < 200  # some changes were not the reader's to see

    async with (
        RealtimeClient.connect(pair.b.url, user) as on_b,
        RealtimeClient.connect(pair.a.url, user) as on_a,
    ):
        start = time.monotonic()
        await on_b.subscribe("r", COLLECTION, since=cursor, synced=False)
        await on_a.subscribe("r", COLLECTION, since=cursor, synced=False)
        live = asyncio.create_task(writer.run(30))  # writes while the replays run
        await live
        expected = expected_events(writer.writes[dropped:], sees)
        for name, client in (("resumed on B", on_b), ("resumed on A", on_a)):
            await client.wait_events("r", len(expected), DELIVERY_TIMEOUT)
            synced = await client.wait_for(lambda m: m["type"] == "synced", DELIVERY_TIMEOUT)
            await asyncio.sleep(0.3)
            got = client.events("r")
            assert_delivered(got, expected, name)
            # The replay holds at least every missed change; the rest came live.
            replayed = client.messages.index(synced)
            assert sum(1 for m in client.messages[:replayed] if m["type"] == "event") >= len(
                missed
            ), name
            assert position(synced["cursor"]) >= position(got[len(missed) - 1]["cursor"])
        print(
            f"\nresume: {len(missed)} missed events of 200 writes replayed, then"
            f" {len(expected) - len(missed)} more; {time.monotonic() - start:.2f} s"
        )


# The embedded default with two workers


async def test_two_workers_deliver_every_write_to_every_subscriber(tmp_path: Path) -> None:
    per_worker = 4
    server = make_server(
        tmp_path,
        {"ROOST_REALTIME_MAX_CONNECTIONS_PER_USER": str(per_worker)},
        workers=2,
    )
    server.start()
    try:
        token = admin_token(server)
        create_collection(
            server.url,
            token,
            {"name": COLLECTION, "fields": {"n": {"type": "integer"}}},
        )
        async with AsyncExitStack() as stack:
            # A worker takes at most per_worker of this user's connections and refuses more
            # (4029): twice that many open connections hold per_worker on each worker.
            subscribers: list[RealtimeClient] = []
            refused = 0
            for _ in range(80):
                try:
                    client = await stack.enter_async_context(
                        RealtimeClient.connect(server.url, token)
                    )
                except ConnectionError:
                    refused += 1
                    continue
                subscribers.append(client)
                if len(subscribers) == 2 * per_worker:
                    break
            assert len(subscribers) == 2 * per_worker, (
                f"{len(subscribers)} connections accepted, {refused} refused: one worker takes"
                " every connection?"
            )
            for client in subscribers:
                await client.subscribe("s1", COLLECTION)

            user_ids = {"admin": user_id_of(server.url, token)}
            writers = [Writer(server.url, {"admin": token}, user_ids, seed) for seed in range(4)]
            start = time.monotonic()
            await asyncio.gather(*(writer.run(20) for writer in writers))
            writes = [w for writer in writers for w in writer.writes]
            for client in subscribers:
                await client.wait_events("s1", len(writes), DELIVERY_TIMEOUT)
            print(
                f"\n2 workers: {len(writes)} writes from 4 concurrent writers reached"
                f" {len(subscribers)} subscribers ({refused} connections refused on a full"
                f" worker) in {time.monotonic() - start:.2f} s"
            )
            await asyncio.sleep(0.5)  # room for a late duplicate to show up

            # One order for everybody, each write once, each record's versions in order.
            first = subscribers[0].events("s1")
            by_key = {(w.id, w.version): w for w in writes}
            assert len(first) == len(by_key)
            in_log_order = sorted(first, key=lambda e: position(e["cursor"]))
            ordered = [by_key[(e["id"], e["version"])] for e in in_log_order]
            assert_delivered(first, expected_events(ordered, sees_all), "subscriber 0")
            order = [(e["op"], e["id"], e["version"], e["cursor"]) for e in first]
            for index, client in enumerate(subscribers[1:], 1):
                got = [(e["op"], e["id"], e["version"], e["cursor"]) for e in client.events("s1")]
                assert got == order, f"subscriber {index} saw another stream"
            versions: dict[str, int] = {}
            for event in first:
                assert event["version"] == versions.get(event["id"], 0) + 1, event
                versions[event["id"]] = event["version"]
            assert all(client.close_code is None for client in subscribers)
    finally:
        server.kill(signal.SIGTERM)
