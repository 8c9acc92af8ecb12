"""Roost rides out a PostgreSQL outage under load, without being restarted itself.

A real ``roost serve`` runs on a private PostgreSQL that keeps ``fsync`` on (an
acknowledged write is on disk), with a short ``postgres_timeout_seconds``. Concurrent
clients create records with their own UUIDv7 ids and read them back while a prober polls
``/api/ready`` and ``/api/health``; meanwhile PostgreSQL is crashed (``pg_ctl -m
immediate``), stopped cleanly (``-m fast``) or frozen (SIGSTOP: connections stay open and
nothing answers), kept down for a while, and started (or thawed) again.
Just before it goes, the test locks the collection's table, so writers are waiting in the
middle of their INSERTs (inside their transactions) when their connections die.

- Every response, at any time, is a success or a 503 ``application/problem+json`` with code
  ``unavailable`` (and ``Retry-After`` on the API): never a 500, never a reset connection.
- No request takes longer than the PostgreSQL timeout plus a margin: nothing hangs.
- While PostgreSQL is down nothing that needs it succeeds, ``/api/ready`` says the database
  is down and ``/api/health`` stays up (an orchestrator must not restart Roost for it).
- Once PostgreSQL is back, the API and readiness recover within a bound, served by the same
  Roost processes (the pool reconnects; no worker was respawned).
- Every acknowledged (201) create is there afterwards, exactly once: by id, in the listing
  of the collection (no duplicates, nothing that no client sent) and in the change log. A
  create answered 503 may be there too (its COMMIT reached the disk, the reply did not).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from conftest import CHEAP_PASSWORDS, LiveServer, free_port
from guarantees.live import SECRET, admin_token, create_collection
from postgres_server import PostgresServer
from roost.ids import new_id
from roost.settings import Settings
from roost.storage.base import open_storage, table_name

pytestmark = pytest.mark.slow

COLLECTION = "notes"
PATH = f"/api/collections/{COLLECTION}/records"
TIMEOUT_SECONDS = 2.0
"""``ROOST_POSTGRES_TIMEOUT_SECONDS``: connect, wait for a pooled connection, one command."""
STATEMENT_TIMEOUT_MS = 1500
"""``ROOST_POSTGRES_STATEMENT_TIMEOUT_MS``: below the client timeout, as settings.py asks."""
MARGIN_SECONDS = 1.5
"""On top of the timeout: scheduling on a loaded 2-core machine, HTTP, JSON."""
DOWN_SECONDS = {"crash": 2.0, "stop": 2.0, "freeze": 3 * TIMEOUT_SECONDS + 1.0}
"""How long PostgreSQL stays down; frozen, each request takes the timeout, so longer: the
outage must hold complete requests of every kind."""
RECOVERY_SECONDS = TIMEOUT_SECONDS + 3.0
"""After ``start()`` (``resume()``) returns: the API and readiness answer again within this,
and from then on every request succeeds."""
AFTER_RECOVERY_SECONDS = 2.0
"""Load kept running once recovered, so failures that come back late are seen."""
WARMUP_ACKS = 30
BLOCK_SECONDS = 1.0
"""Longest wait for writers to queue behind the lock: below the statement timeout."""
WRITERS = 6
READERS = 2
CUT_WRITERS = WRITERS // 2
"""Writers caught in the middle of an INSERT when PostgreSQL goes (at least one is asserted)."""
PROBE_EVERY = 0.1
BACKOFF_SECONDS = 0.05
"""A client's pause after a 503 (a real one would honour Retry-After; these keep probing)."""
CLIENT_TIMEOUT = 30.0
"""httpx's own timeout: far above the bound, so a hang is measured, not cut short."""

Kind = Literal["create", "get", "list", "ready", "health"]
Outage = Literal["crash", "stop", "freeze"]
NEEDS_DATABASE: tuple[Kind, ...] = ("create", "get", "list", "ready")


@dataclass(frozen=True)
class Sample:
    """One request as a client saw it; ``status`` None: no response (transport error)."""

    kind: Kind
    started: float
    ended: float
    status: int | None
    code: str | None = None
    retry_after: str | None = None
    checks: Any = None
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def unavailable(self) -> bool:
        """A well-formed "retry later": 503 problem ``unavailable``; on the API with a
        ``Retry-After`` in seconds, on the readiness probe naming the database as down."""
        if self.status != 503 or self.code != "unavailable":
            return False
        if self.kind == "ready":
            return isinstance(self.checks, dict) and self.checks.get("database") == "down"
        return self.retry_after is not None and self.retry_after.isdigit()

    def __str__(self) -> str:
        return (
            f"{self.kind} at +{self.started:.2f}s took {self.seconds:.2f}s: {self.status}"
            f" {self.code} Retry-After={self.retry_after} {self.error}"
        )


@dataclass
class Timeline:
    """Monotonic times of the outage, relative to the start of the load."""

    locked: float = 0.0  # the test holds a lock that makes every INSERT wait
    stopping: float = 0.0  # crash(), stop() or pause() called
    down: float = 0.0  # it returned: PostgreSQL is gone (or frozen)
    starting: float = 0.0  # start() or resume() called
    up: float = 0.0  # it returned: PostgreSQL answers again


@dataclass
class Load:
    http: httpx.AsyncClient
    origin: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.origin

    async def request(
        self, kind: Kind, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = self.now()
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:  # reset, refused, timed out: never acceptable
            self.samples.append(Sample(kind, started, self.now(), None, error=repr(exc)))
            return None
        ended = self.now()
        sample = Sample(kind, started, ended, response.status_code)
        if response.status_code >= 400:
            body: Any = None
            if response.headers.get("content-type", "").startswith("application/problem+json"):
                body = response.json()
            sample = Sample(
                kind,
                started,
                ended,
                response.status_code,
                code=body.get("code") if isinstance(body, dict) else None,
                retry_after=response.headers.get("retry-after"),
                checks=body.get("checks") if isinstance(body, dict) else None,
                error=response.text[:200],
            )
        self.samples.append(sample)
        return response

    async def writer(self, number: int) -> None:
        for step in itertools.count():
            if self.done.is_set():
                return
            record_id = new_id()
            data = {"writer": number, "step": step}
            self.sent.add(record_id)
            response = await self.request("create", "POST", PATH, json={"id": record_id, **data})
            if response is not None and response.status_code == 201:
                assert response.json()["id"] == record_id
                self.acked[record_id] = data
            else:
                await asyncio.sleep(BACKOFF_SECONDS)

    async def reader(self, number: int) -> None:
        rng = random.Random(number)
        for step in itertools.count(number):
            if self.done.is_set():
                return
            if self.acked and step % 2 == 0:
                record_id = rng.choice(list(self.acked))
                response = await self.request("get", "GET", f"{PATH}/{record_id}")
            else:
                response = await self.request("list", "GET", PATH, params={"limit": "20"})
            if response is None or response.status_code != 200:
                await asyncio.sleep(BACKOFF_SECONDS)

    async def prober(self) -> None:
        while not self.done.is_set():
            await self.request("ready", "GET", "/api/ready")
            await self.request("health", "GET", "/api/health")
            await asyncio.sleep(PROBE_EVERY)

    async def wait_until(self, condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def first_ok(self, kind: Kind, since: float) -> Sample | None:
        found = [s for s in self.samples if s.kind == kind and s.ok and s.started >= since]
        return min(found, key=lambda s: s.ended, default=None)


def processes(parent: int) -> set[int]:
    """``parent`` and every process below it (read from ``/proc``; Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [parent]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def log_tail(server: LiveServer, lines: int = 40) -> str:
    path = server.data_dir.parent / "server.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def database(postgres_server_factory: Callable[..., PostgresServer]) -> PostgresServer:
    return postgres_server_factory(durable=True)


@pytest.fixture
def roost(tmp_path: Path, database: PostgresServer) -> Iterator[LiveServer]:
    server = LiveServer(
        data_dir=tmp_path / "data",
        port=free_port(),
        env={
            "ROOST_DATABASE_URL": database.url,
            "ROOST_POSTGRES_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "ROOST_POSTGRES_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
            "ROOST_POSTGRES_POOL_MAX": str(WRITERS + READERS + 8),
            **{f"ROOST_{name.upper()}": str(value) for name, value in CHEAP_PASSWORDS.items()},
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)


async def run_load(
    server: LiveServer, database: PostgresServer, token: str, how: Outage
) -> tuple[Load, Timeline, int]:
    """Load the server, take PostgreSQL down in the middle and bring it back, and stop once
    recovered for a while; also return how many INSERTs were waiting in their transactions
    when PostgreSQL went."""
    limits = httpx.Limits(max_connections=WRITERS + READERS + 2)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, timeout=CLIENT_TIMEOUT, limits=limits
    ) as http:
        load = Load(http)
        timeline = Timeline()
        tasks = [
            *(asyncio.create_task(load.writer(n)) for n in range(WRITERS)),
            *(asyncio.create_task(load.reader(n)) for n in range(READERS)),
            asyncio.create_task(load.prober()),
        ]
        try:
            assert await load.wait_until(lambda: len(load.acked) >= WARMUP_ACKS, 30), [
                str(s) for s in load.samples[-10:]
            ]
            timeline.locked = load.now()
            async with writers_waiting(database) as cut:
                timeline.stopping = load.now()
                # from a thread, so the clients keep sending while PostgreSQL goes
                outage: dict[Outage, Callable[[PostgresServer], None]] = {
                    "crash": PostgresServer.crash,
                    "stop": PostgresServer.stop,
                    "freeze": PostgresServer.pause,
                }
                await asyncio.to_thread(outage[how], database)
                timeline.down = load.now()
            assert database.running == (how == "freeze")
            await asyncio.sleep(DOWN_SECONDS[how])
            timeline.starting = load.now()
            await asyncio.to_thread(database.resume if how == "freeze" else database.start)
            timeline.up = load.now()
            await load.wait_until(
                lambda: all(load.first_ok(kind, timeline.up) for kind in NEEDS_DATABASE),
                RECOVERY_SECONDS + 5,  # past the bound: measured and asserted below
            )
            await asyncio.sleep(AFTER_RECOVERY_SECONDS)
        finally:
            load.done.set()
            await asyncio.wait_for(asyncio.gather(*tasks), CLIENT_TIMEOUT + 5)
    return load, timeline, cut


@asynccontextmanager
async def writers_waiting(database: PostgresServer) -> AsyncIterator[int]:
    """Lock the collection's table against writes (reads go on) until ``CUT_WRITERS`` of
    Roost's INSERTs wait for it, or ``BLOCK_SECONDS``; yield how many wait. The lock is held
    until the block ends: stop PostgreSQL inside it, and those statements die mid-flight."""
    conn = await asyncpg.connect(database.url, timeout=10)
    try:
        await conn.execute("BEGIN")
        await conn.execute(f"LOCK TABLE {table_name(COLLECTION)} IN SHARE ROW EXCLUSIVE MODE")
        deadline = time.monotonic() + BLOCK_SECONDS
        while True:
            waiting: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'roost' AND wait_event_type = 'Lock'"
            )
            if waiting >= CUT_WRITERS or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        yield waiting
    finally:
        conn.terminate()  # closing it first would end the transaction and free the writers


async def read_back(server: LiveServer, token: str, load: Load) -> list[str]:
    """Every acknowledged record read by id (concurrently); the ids of the listing, in order."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        pending = list(load.acked)
        missing: list[str] = []

        async def fetch() -> None:
            while pending:
                record_id = pending.pop()
                response = await http.get(f"{PATH}/{record_id}")
                if response.status_code != 200:
                    missing.append(f"{record_id}: {response.status_code} {response.text[:200]}")
                    continue
                record = response.json()
                assert record["id"] == record_id and record["version"] == 1
                data = {k: record[k] for k in ("writer", "step")}
                assert data == load.acked[record_id], record

        await asyncio.gather(*(fetch() for _ in range(8)))
        assert missing == [], "acknowledged writes lost"

        listed: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            response = await http.get(PATH, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            listed += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return listed


async def change_log(database: PostgresServer, data_dir: Path) -> list[str]:
    """The record ids of every change of the collection, read with a fresh storage."""
    settings = Settings(
        data_dir=data_dir, database_url=database.url, secret_key=SecretStr(SECRET), env="dev"
    )
    storage = open_storage(settings)
    await storage.open()
    try:
        changes = await storage.changes_since(0, [COLLECTION], 1_000_000)
    finally:
        await storage.aclose()
    assert {c.op for c in changes} <= {"create"}
    return [c.record_id for c in changes]


@pytest.mark.parametrize("how", ["crash", "stop", "freeze"])
async def test_roost_rides_out_a_postgres_outage(
    roost: LiveServer, database: PostgresServer, tmp_path: Path, how: Outage
) -> None:
    token = admin_token(roost)
    create_collection(roost.url, token, {"name": COLLECTION})
    assert roost.process is not None
    serving = processes(roost.process.pid)

    load, timeline, cut = await run_load(roost, database, token, how)
    assert cut >= 1, "no INSERT was waiting in its transaction when PostgreSQL went"
    samples = load.samples

    # the same processes serve throughout: Roost was not restarted, no worker respawned
    assert roost.process.poll() is None, log_tail(roost)
    assert processes(roost.process.pid) == serving, log_tail(roost)

    # every answer is a success or a well-formed "retry later"; no 500, no reset
    wrong = [str(s) for s in samples if not (s.ok or s.unavailable)]
    assert wrong == [], f"{wrong[:20]}\n--- server log ---\n{log_tail(roost)}"
    health = [s for s in samples if s.kind == "health"]
    assert all(s.status == 200 for s in health), "liveness must not depend on the database"

    # nothing hangs past the timeout
    bound = TIMEOUT_SECONDS + MARGIN_SECONDS
    slow = [str(s) for s in samples if s.seconds > bound]
    assert slow == [], f"requests slower than {bound} s: {slow[:20]}"

    # the load really was running before, during and after the outage
    before = [s for s in samples if s.ended < timeline.locked]
    assert before and all(s.ok for s in before), [str(s) for s in before if not s.ok][:10]
    down = [s for s in samples if s.started >= timeline.down and s.ended <= timeline.starting]
    for kind in NEEDS_DATABASE:
        answers = [s for s in down if s.kind == kind]
        assert answers, f"no {kind} answered while PostgreSQL was down"
        assert not any(s.ok for s in answers), f"a {kind} succeeded with PostgreSQL down"

    # back within the bound, without restarting Roost, and healthy from then on
    recovered = timeline.up
    for kind in NEEDS_DATABASE:
        first = load.first_ok(kind, timeline.up)
        assert first is not None, f"{kind} never succeeded again"
        assert first.ended - timeline.up <= RECOVERY_SECONDS, f"{kind} recovered late: {first}"
        recovered = max(recovered, first.ended)
    settled = [s for s in samples if s.started >= recovered]
    assert len(settled) > 50, "too little load after the recovery"
    failed_late = [str(s) for s in settled if not s.ok]
    assert failed_late == [], f"failures after recovery: {failed_late[:20]}"

    # every acknowledged write is there, exactly once, and nothing else
    listed = await read_back(roost, token, load)
    assert len(listed) == len(set(listed)), "a record is listed twice"
    assert load.acked.keys() <= set(listed), "an acknowledged write is not listed"
    assert set(listed) <= load.sent, "a record that no client sent"
    logged = await change_log(database, tmp_path)
    assert sorted(logged) == sorted(listed), "each stored record appears in the log once"

    statuses: dict[tuple[str, int | None], int] = {}
    for s in samples:
        statuses[s.kind, s.status] = statuses.get((s.kind, s.status), 0) + 1
    print(
        f"\n{how}: {len(samples)} requests, {cut} INSERTs cut,"
        f" {len(load.acked)} acknowledged creates,"
        f" {len(listed) - len(load.acked)} unacknowledged but stored;"
        f" down {timeline.down - timeline.stopping:.2f}s to go, coming back took"
        f" {timeline.up - timeline.starting:.2f}s;"
        f" slowest {max(s.seconds for s in samples):.3f}s, slowest while down"
        f" {max((s.seconds for s in down), default=0):.3f}s;"
        f" recovered create +{_recovered(load, 'create', timeline):.3f}s"
        f" ready +{_recovered(load, 'ready', timeline):.3f}s after it was back;"
        f" statuses {sorted(statuses.items(), key=str)}"
    )


def _recovered(load: Load, kind: Kind, timeline: Timeline) -> float:
    first = load.first_ok(kind, timeline.up)
    return -1.0 if first is None else first.ended - timeline.up
