"""The realtime protocol against a real ``roost serve``, over real sockets, on SQLite and
PostgreSQL: rules at delivery time, resume without gap or duplicate, limits, slow
consumers, Server-Sent Events."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import LiveServer, free_port
from guarantees.live import admin_token, create_collection
from metrics.scrape import scrape, value
from postgres_server import PostgresServer
from realtime.client import RealtimeClient, ws_url

pytestmark = pytest.mark.slow

NOTES = {
    "name": "notes",
    "fields": {"secret": {"type": "string", "hidden": True}},
    "rules": {
        "list": "owner = @auth.id || shared = true",
        "view": "owner = @auth.id || shared = true",
        "create": "@auth.id != null",
        "update": "owner = @auth.id",
        "delete": "owner = @auth.id",
    },
}
PASSWORD = "a-long-enough-password"
METRICS_TOKEN = "metrics-token-of-the-realtime-tests"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = {
        "ROOST_PASSWORD_MEMORY_KIB": "1024",
        "ROOST_PASSWORD_TIME_COST": "1",
        "ROOST_PASSWORD_PARALLELISM": "1",
        "ROOST_AUTH_RATE_LIMIT_IP": "10000/minute",
        "ROOST_REALTIME_SEND_QUEUE": "50",
        "ROOST_REALTIME_MAX_SUBSCRIPTIONS": "5",
        "ROOST_REALTIME_MAX_CONNECTIONS_PER_USER": "8",
        "ROOST_METRICS_TOKEN": METRICS_TOKEN,
    }
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        env["ROOST_DATABASE_URL"] = postgres.url_for(postgres.create_database())
    live = LiveServer(
        data_dir=tmp_path_factory.mktemp("realtime") / "data", port=free_port(), env=env
    )
    live.start()
    try:
        token = admin_token(live)
        create_collection(live.url, token, NOTES)
        yield live
    finally:
        live.kill(signal.SIGTERM)


class User:
    def __init__(self, server: LiveServer, email: str) -> None:
        self.http = httpx.AsyncClient(base_url=server.url, timeout=30)
        self.email = email
        self.token = ""
        self.id = ""

    async def signup(self) -> User:
        response = await self.http.post(
            "/api/auth/signup", json={"email": self.email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        self.token, self.id = body["access_token"], body["user"]["id"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self

    async def create(self, **data: Any) -> dict[str, Any]:
        response = await self.http.post("/api/collections/notes/records", json=data)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def update(self, record_id: str, **data: Any) -> None:
        response = await self.http.patch(f"/api/collections/notes/records/{record_id}", json=data)
        assert response.status_code == 200, response.text

    async def delete(self, record_id: str) -> None:
        response = await self.http.delete(f"/api/collections/notes/records/{record_id}")
        assert response.status_code == 204, response.text


@pytest.fixture
async def users(server: LiveServer) -> AsyncIterator[tuple[User, User]]:
    suffix = os.urandom(4).hex()
    alice = await User(server, f"alice-{suffix}@example.com").signup()
    bob = await User(server, f"bob-{suffix}@example.com").signup()
    yield alice, bob
    await alice.http.aclose()
    await bob.http.aclose()


def events(client: RealtimeClient, sub: str) -> list[tuple[str, str, int]]:
    return [(m["op"], m["id"], m["version"]) for m in client.events(sub)]


async def settle(*clients: RealtimeClient, seconds: float = 0.5) -> None:
    """Let in-flight events arrive (delivery is asynchronous to the writes)."""
    await asyncio.sleep(seconds)


async def test_each_user_gets_exactly_what_the_rules_allow(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, bob = users
    async with (
        RealtimeClient.connect(server.url, alice.token) as a,
        RealtimeClient.connect(server.url, bob.token) as b,
    ):
        await a.subscribe("s", "notes")
        await b.subscribe("s", "notes")
        mine = await alice.create(title="alice's", secret="alice only")
        theirs = await bob.create(title="bob's")
        await alice.update(mine["id"], shared=True)  # enters bob's view
        await alice.update(mine["id"], title="renamed")
        await alice.update(mine["id"], shared=False)  # leaves bob's view
        await bob.delete(theirs["id"])
        await a.wait_for(lambda m: m.get("op") == "update" and m["version"] == 4, timeout=5)
        await b.wait_for(lambda m: m.get("op") == "delete", timeout=5)
        await settle(a, b)
        assert events(a, "s") == [
            ("create", mine["id"], 1),
            ("update", mine["id"], 2),
            ("update", mine["id"], 3),
            ("update", mine["id"], 4),
        ]
        assert events(b, "s") == [
            ("create", theirs["id"], 1),
            ("enter", mine["id"], 2),
            ("update", mine["id"], 3),
            ("leave", mine["id"], 4),
            ("delete", theirs["id"], 2),
        ]
        seen_by_bob = [m["record"] for m in b.events("s") if m["record"] is not None]
        assert all("secret" not in record for record in seen_by_bob)
        assert b.events("s")[3]["record"] is None  # a leave is a tombstone
        assert a.events("s")[0]["record"]["secret"] == "alice only"  # hidden from others only


async def test_a_filter_narrows_and_a_matching_update_enters(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, _ = users
    async with RealtimeClient.connect(server.url, alice.token) as a:
        await a.subscribe("pinned", "notes", filter="pinned = true")
        note = await alice.create(title="x")
        await alice.update(note["id"], pinned=True)
        await alice.update(note["id"], pinned=False)
        await a.wait_for(lambda m: m.get("op") == "leave", timeout=5)
        assert events(a, "pinned") == [("enter", note["id"], 2), ("leave", note["id"], 3)]


async def test_resume_replays_exactly_the_visible_missed_changes_then_goes_live(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, bob = users
    async with RealtimeClient.connect(server.url, alice.token) as a:
        await a.subscribe("s", "notes")
        first = await alice.create(title="before the drop")
        await a.wait_for(lambda m: m.get("id") == first["id"], timeout=5)
        cursor = a.events("s")[-1]["cursor"]
    mine: list[str] = []
    theirs: list[str] = []
    expected: list[tuple[str, str, int]] = []
    versions: dict[str, int] = {}
    for i in range(500):
        step = i % 10
        if step < 4 or not mine:
            note = await alice.create(n=i)
            mine.append(note["id"])
            versions[note["id"]] = 1
            expected.append(("create", note["id"], 1))
        elif step < 6:
            theirs.append((await bob.create(n=i))["id"])  # never visible to alice
        elif step < 8:
            target = mine[i % len(mine)]
            await alice.update(target, n=i)
            versions[target] += 1
            expected.append(("update", target, versions[target]))
        elif step == 8:
            target = mine.pop()
            await alice.delete(target)
            expected.append(("delete", target, versions[target] + 1))
        else:
            await bob.update(theirs[-1], n=i)
    async with RealtimeClient.connect(server.url, alice.token) as a:
        await a.subscribe("s", "notes", since=cursor, timeout=30)
        assert events(a, "s") == expected
        replayed = len(a.events("s"))
        live = await alice.create(title="live")
        await a.wait_for(lambda m: m.get("id") == live["id"], timeout=5)
        await settle(a)
        assert events(a, "s")[replayed:] == [("create", live["id"], 1)]
        cursors = [int(m["cursor"].rsplit(".", 1)[1]) for m in a.events("s")]
        assert cursors == sorted(set(cursors))


async def test_bad_cursors_and_subscriptions_get_errors_not_closes(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, _ = users
    async with RealtimeClient.connect(server.url, alice.token) as a:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"collection": "notes", "since": "nonsense"}, "invalid_cursor"),
            ({"collection": "notes", "since": "0123456789abcdef.1"}, "resync_required"),
            ({"collection": "nope"}, "not_found"),
            ({"collection": "users", "filter": "email = 'x'"}, "invalid_filter"),
            ({"collection": "notes", "filter": "title = "}, "invalid_filter"),
            ({"collection": "notes", "filter": "secret = 'x'"}, "invalid_filter"),
            ({"collection": 7}, "validation_failed"),
        ]
        for i, (fields, code) in enumerate(cases):
            await a.send({"type": "subscribe", "id": f"bad{i}", **fields})
            reply = await a.wait_for(lambda m, i=i: m.get("id") == f"bad{i}", timeout=5)
            assert (reply["type"], reply["code"]) == ("error", code), (fields, reply)
        await a.send({"type": "launch"})
        reply = await a.wait_for(lambda m: m["type"] == "error" and "id" not in m, timeout=5)
        assert reply["code"] == "validation_failed"
        await a.connection.send("{not json")
        for i in range(5):
            await a.subscribe(f"ok{i}", "notes")
        await a.send({"type": "subscribe", "id": "sixth", "collection": "notes"})
        reply = await a.wait_for(lambda m: m.get("id") == "sixth", timeout=5)
        assert reply["code"] == "limit_exceeded"
        await a.send({"type": "unsubscribe", "id": "ok0"})
        await a.wait_for(lambda m: m.get("of") == "unsubscribe", timeout=5)
        await a.subscribe("sixth", "notes")
        assert a.close_code is None


async def test_auth_is_required_first_and_cannot_switch_users(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, bob = users
    async with RealtimeClient.connect(server.url, auth=False) as anonymous:
        await anonymous.send({"type": "subscribe", "id": "s", "collection": "notes"})
        assert (await anonymous.wait_closed(timeout=5))[0] == 4001
    async with RealtimeClient.connect(server.url, auth=False) as forged:
        await forged.send({"type": "auth", "token": "not-a-token"})
        assert (await forged.wait_closed(timeout=5))[0] == 4001
    async with RealtimeClient.connect(server.url, alice.token) as a:
        await a.auth(alice.token)  # a refresh with the same user is fine
        await a.send({"type": "auth", "token": bob.token})
        assert (await a.wait_closed(timeout=5))[0] == 4003


async def test_connections_per_user_are_limited(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, _ = users
    clients = [RealtimeClient.connect(server.url, alice.token) for _ in range(8)]
    opened = [await client.__aenter__() for client in clients]
    try:
        async with RealtimeClient.connect(server.url, auth=False) as ninth:
            await ninth.send({"type": "auth", "token": alice.token})
            assert (await ninth.wait_closed(timeout=5))[0] == 4029
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    assert len(opened) == 8


@asynccontextmanager
async def small_window_client(server: LiveServer, token: str) -> AsyncIterator[RealtimeClient]:
    """A client whose socket buffers little (the machine lets a socket buffer 32 MB, which
    would hide a slow reader for a long time)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    connection = await ws_connect(ws_url(server.url), sock=sock, ping_interval=None)
    client = RealtimeClient(connection)
    try:
        await client.auth(token)
        yield client
    finally:
        await client.close()


def rss_kib(server: LiveServer) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


async def test_a_slow_consumer_is_disconnected_and_memory_stays_bounded(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, _ = users
    big = "x" * 20_000
    counted = scrape(server.url, METRICS_TOKEN)
    async with RealtimeClient.connect(server.url, alice.token) as fast:
        await fast.subscribe("s", "notes")
        async with small_window_client(server, alice.token) as slow:
            await slow.subscribe("s", "notes")
            slow.connection.transport.pause_reading()  # stops reading: its socket fills up
            before = rss_kib(server)
            created = [(await alice.create(blob=big))["id"] for _ in range(1500)]
            grown = rss_kib(server) - before
            slow.connection.transport.resume_reading()  # to read what is left, then the close
            closed = await slow.wait_closed(timeout=30)
            received = len(slow.events("s"))
        await fast.wait_for(lambda m: m.get("id") == created[-1], timeout=10)
        assert [m["id"] for m in fast.events("s")][-1500:] == created
    assert closed[0] == 4009 and received < 1500
    then, now = counted, scrape(server.url, METRICS_TOKEN)
    slow = ("roost_realtime_closed_total", {"code": "4009"})
    assert value(now, slow[0], **slow[1]) - value(then, slow[0], **slow[1]) == 1
    dropped = "roost_realtime_events_dropped_total"
    assert value(now, dropped) - value(then, dropped) >= 1  # the event its full queue refused
    # 1,500 events of 20 kB are 30 MB; the slow client may hold at most its queue (50 events)
    # plus what the sockets buffer before it is dropped.
    assert grown < 6 * 1024, f"server RSS grew {grown} KiB"


async def test_server_sent_events_resume_with_last_event_id(
    server: LiveServer, users: tuple[User, User]
) -> None:
    alice, _ = users
    headers = {"Authorization": f"Bearer {alice.token}"}
    url = f"{server.url}/api/realtime/sse"
    first = await alice.create(title="one")

    async def read(extra: dict[str, str], want: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with alice.http.stream(
            "GET", url, params={"collection": "notes"}, headers={**headers, **extra}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event["id"] = line[4:]
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = orjson.loads(line[6:])
                elif line == "" and event:
                    got.append(event)
                    event = {}
                    if sum(1 for e in got if e["event"] in ("create", "update")) >= want:
                        return got
        return got

    reader = asyncio.create_task(read({}, 1))
    await asyncio.sleep(0.5)
    await alice.update(first["id"], title="two")
    got = await asyncio.wait_for(reader, 10)
    update = next(e for e in got if e["event"] == "update")
    assert update["data"]["record"]["title"] == "two"
    await alice.update(first["id"], title="three")
    second = await alice.create(title="four")
    resumed = await asyncio.wait_for(read({"Last-Event-ID": update["id"]}, 2), 10)
    replayed = [(e["event"], e["data"]["id"]) for e in resumed if "id" in e and "op" in e["data"]]
    assert replayed == [("update", first["id"]), ("create", second["id"])]
    bad = await alice.http.get(url, params={"collection": "notes", "filter": "("})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_filter"
    gone = await alice.http.get(url, params={"collection": "notes", "since": "ffff.1"})
    assert gone.status_code == 410 and gone.json()["code"] == "resync_required"
