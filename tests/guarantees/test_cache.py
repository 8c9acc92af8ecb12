"""The server's cache across processes: two ``roost serve`` instances on one PostgreSQL
and one Redis cache, real sockets (see ``roost.records.cache`` for the design).

- Stale reads: writers and many readers through both instances for a while; no read
  returns a version older than the newest version of its record acknowledged before the
  read was sent, and both instances served reads from the cache meanwhile.
- Rules: users' private records, read by their owners (filling the cache), then read by
  everybody through both instances: a non-owner gets 404 and never a hidden field, a list
  page holds only what its caller may list; the same after records leave the public view.
- Redis killed and restarted under reads and writes: no 5xx, every answer within 2 s,
  readiness stays 200 (cache "down", then "ok"), caching resumes without restarting Roost
  and no read is older than a write acknowledged before it.
- A write made while its instance sheds cache reads (Redis froze a moment) still retires
  the cached version on the other instance.
- Stampede: 200 concurrent reads of a never-read record through each instance cost one
  database read of it per instance, counted by PostgreSQL.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CHEAP_PASSWORDS, LiveServer, free_port
from guarantees.live import SECRET, admin_token, create_collection
from postgres_server import PostgresServer
from redis_server import RedisServer

pytestmark = pytest.mark.slow

METRICS_TOKEN = "metrics-token-of-the-cache-guarantees"
BASE_ENV = {
    "ROOST_SECRET_KEY": SECRET,  # one key for every instance: a token from A works on B
    "ROOST_METRICS_TOKEN": METRICS_TOKEN,
    **{f"ROOST_{name.upper()}": str(value) for name, value in CHEAP_PASSWORDS.items()},
}
COUNTERS = "counters"
COUNTERS_PATH = f"/api/collections/{COUNTERS}/records"
COUNTERS_DEFINITION: dict[str, Any] = {
    "name": COUNTERS,
    "fields": {"n": {"type": "integer"}},
    "rules": {"list": "", "view": "", "create": None, "update": None, "delete": None},
}
"""Anyone reads, admins write."""
RESPONSE_BOUND = 2.0
"""Seconds within which every request is answered while Redis is killed and restarted."""


def make_server(root: Path, env: dict[str, str]) -> LiveServer:
    """A server whose data folder and log (``root/server.log``) are its own."""
    return LiveServer(data_dir=root / "data", port=free_port(), env={**BASE_ENV, **env})


@dataclass
class Pair:
    """Two instances on one PostgreSQL database and one Redis cache."""

    a: LiveServer
    b: LiveServer
    redis: RedisServer
    postgres: PostgresServer
    database: str
    admin: str
    """An admin's access token (valid on both instances)."""

    @property
    def servers(self) -> tuple[LiveServer, LiveServer]:
        return self.a, self.b


@pytest.fixture
def pair(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str, redis_server: RedisServer
) -> Iterator[Pair]:
    env = {"ROOST_DATABASE_URL": postgres_url, "ROOST_CACHE_URL": redis_server.url}
    a = make_server(tmp_path / "a", env)
    b = make_server(tmp_path / "b", env)
    try:
        a.start()  # migrates the empty database first; then B finds it ready
        b.start()
        database = urlsplit(postgres_url).path.lstrip("/")
        yield Pair(a, b, redis_server, postgres_server, database, admin_token(a))
    finally:
        a.kill(signal.SIGTERM)
        b.kill(signal.SIGTERM)


@asynccontextmanager
async def clients(pair: Pair, connections: int) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A keep-alive client per instance (``"A"``, ``"B"``), each up to ``connections``."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with (
        httpx.AsyncClient(base_url=pair.a.url, limits=limits, timeout=30) as a,
        httpx.AsyncClient(base_url=pair.b.url, limits=limits, timeout=30) as b,
    ):
        yield {"A": a, "B": b}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def cache_counts(http: httpx.AsyncClient) -> dict[str, float]:
    """The instance's cache counters from ``/metrics``, as ``"hits.record"``,
    ``"misses.page"``, ..., and ``"statements"`` (sent to the database)."""
    response = await http.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert response.status_code == 200, response.text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "roost_db_statements_total":
                counts["statements"] = sample.value
            elif sample.name.startswith("roost_cache_") and sample.name.endswith("_total"):
                kind = sample.name.removeprefix("roost_cache_").removesuffix("_total")
                counts[f"{kind}.{sample.labels['kind']}"] = sample.value
    assert "hits.record" in counts, f"no cache counters in /metrics:\n{response.text[:2000]}"
    return counts


async def all_counts(http: dict[str, httpx.AsyncClient]) -> dict[str, dict[str, float]]:
    return {name: await cache_counts(client) for name, client in http.items()}


def grown(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], key: str
) -> dict[str, float]:
    return {name: after[name][key] - before[name][key] for name in after}


async def create_counters(pair: Pair, count: int) -> list[str]:
    """The ``counters`` collection with ``count`` records (``n`` = 0); their ids."""
    create_collection(pair.a.url, pair.admin, COUNTERS_DEFINITION)
    ids = []
    async with httpx.AsyncClient(base_url=pair.a.url, timeout=30) as http:
        for _ in range(count):
            response = await http.post(COUNTERS_PATH, json={"n": 0}, headers=bearer(pair.admin))
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return ids


# What was acknowledged, what was read


@dataclass(frozen=True)
class Ack:
    id: str
    version: int
    at: float
    """``time.monotonic()`` when the acknowledgement was received."""
    via: str


@dataclass(frozen=True)
class Seen:
    id: str
    version: int
    sent: float
    """``time.monotonic()`` just before the request was sent."""
    via: str


@dataclass
class Verdict:
    reads: int
    compared: int
    """Reads sent after at least one acknowledged write of their record."""
    close: int
    """Of those, reads sent within 50 ms of the latest acknowledgement of their record."""
    ahead: int
    """Reads that returned a version newer than any acknowledged before they were sent
    (a write in flight)."""
    stale: list[tuple[Seen, Ack]]
    """Reads older than a write acknowledged before them, with that write."""


def newer(a: Ack, b: Ack) -> Ack:
    return b if b.version > a.version else a


@dataclass
class History:
    """Acknowledged writes and the reads made meanwhile, all timed on one clock."""

    acks: list[Ack] = field(default_factory=list)
    reads: list[Seen] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)
    """Times in messages are counted from here."""

    def created(self, ids: list[str]) -> None:
        """Records created (version 1) through A before now."""
        self.acks += [Ack(record_id, 1, time.monotonic(), "A") for record_id in ids]

    def acknowledged(self, record: dict[str, Any], via: str) -> None:
        self.acks.append(Ack(record["id"], record["version"], time.monotonic(), via))

    def read(self, record: dict[str, Any], sent: float, via: str) -> None:
        self.reads.append(Seen(record["id"], record["version"], sent, via))

    def verdict(self, since: float = 0.0) -> Verdict:
        """Each read sent at or after ``since`` against the newest version of its record
        acknowledged before the read was sent."""
        by_record: dict[str, list[Ack]] = defaultdict(list)
        for ack in sorted(self.acks, key=lambda ack: ack.at):
            by_record[ack.id].append(ack)
        times = {rid: [ack.at for ack in acks] for rid, acks in by_record.items()}
        newest: dict[str, list[Ack]] = {
            rid: list(itertools.accumulate(acks, newer)) for rid, acks in by_record.items()
        }
        verdict = Verdict(0, 0, 0, 0, [])
        for seen in self.reads:
            if seen.sent < since:
                continue
            verdict.reads += 1
            before = bisect.bisect_left(times.get(seen.id, []), seen.sent)
            if before == 0:
                continue
            verdict.compared += 1
            wanted = newest[seen.id][before - 1]
            verdict.close += seen.sent - times[seen.id][before - 1] < 0.05
            verdict.ahead += seen.version > wanted.version
            if seen.version < wanted.version:
                verdict.stale.append((seen, wanted))
        return verdict

    def assert_fresh(self, verdict: Verdict) -> None:
        stale = [
            f"v{seen.version} read via {seen.via} at {seen.sent - self.start:.3f} s, v{ack.version}"
            f" acknowledged via {ack.via} at {ack.at - self.start:.3f} s (record {seen.id[-6:]})"
            for seen, ack in verdict.stale
        ]
        assert not stale, (
            f"{len(stale)} of {verdict.compared} reads returned a version older than one"
            " acknowledged before they were sent:\n" + "\n".join(stale[:10])
        )


async def read_counter(http: httpx.AsyncClient, record_id: str, history: History, via: str) -> None:
    sent = time.monotonic()
    response = await http.get(f"{COUNTERS_PATH}/{record_id}")
    assert response.status_code == 200, f"GET via {via} -> {response.status_code}: {response.text}"
    history.read(response.json(), sent, via)


async def patch_counter(
    http: httpx.AsyncClient, record_id: str, n: int, admin: str, history: History, via: str
) -> None:
    response = await http.patch(
        f"{COUNTERS_PATH}/{record_id}", json={"n": n}, headers=bearer(admin)
    )
    assert response.status_code == 200, f"PATCH -> {response.status_code}: {response.text}"
    history.acknowledged(response.json(), via)


# 1. Stale reads


HUNT_SECONDS = 14.0
HUNT_WEIGHTS = (4, 1, 1)
"""How often writers pick each record: contention on one makes races likelier."""


async def test_no_read_is_older_than_a_write_acknowledged_before_it(pair: Pair) -> None:
    ids = await create_counters(pair, len(HUNT_WEIGHTS))
    history = History()
    history.created(ids)
    stop = asyncio.Event()
    numbers = itertools.count(1)

    async with clients(pair, 16) as http:
        before = await all_counts(http)

        async def writer(via: str, seed: int) -> int:
            """PATCHes through ``via``, each followed at once by reads through both."""
            rng = random.Random(seed)
            writes = 0
            while not stop.is_set():
                record_id = rng.choices(ids, weights=HUNT_WEIGHTS)[0]
                n = next(numbers)
                await patch_counter(http[via], record_id, n, pair.admin, history, via)
                writes += 1
                for name in rng.sample(sorted(http), 2):
                    await read_counter(http[name], record_id, history, name)
            return writes

        async def reader(via: str, seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                await read_counter(http[via], rng.choice(ids), history, via)

        async with asyncio.TaskGroup() as tasks:
            writers = [tasks.create_task(writer(via, seed)) for seed, via in enumerate("AB" * 4)]
            for seed, via in enumerate("AB" * 4):
                tasks.create_task(reader(via, 100 + seed))
            await asyncio.sleep(HUNT_SECONDS)
            stop.set()
        after = await all_counts(http)

    verdict = history.verdict()
    hits = grown(before, after, "hits.record")
    misses = grown(before, after, "misses.record")
    print(
        f"\nstale-read hunt: {sum(w.result() for w in writers)} writes, {verdict.reads} reads"
        f" ({verdict.compared} compared with an acknowledged write, {verdict.close} sent"
        f" within 50 ms of one, {verdict.ahead} ahead of every acknowledgement);"
        f" record hits {hits}, misses {misses}"
    )
    history.assert_fresh(verdict)
    assert verdict.compared > 1000 and verdict.close > 200, "too few reads to prove anything"
    assert all(count > 200 for count in hits.values()), f"the cache was hardly used: {hits}"


# 2. Rules


NOTES = "notes"
NOTES_PATH = f"/api/collections/{NOTES}/records"
OWN_OR_PUBLIC = "owner = @auth.id || public = true"
NOTES_DEFINITION: dict[str, Any] = {
    "name": NOTES,
    "fields": {
        "title": {"type": "string"},
        "secret": {"type": "string", "hidden": True},
        "public": {"type": "boolean"},
    },
    "rules": {
        "list": OWN_OR_PUBLIC,
        "view": OWN_OR_PUBLIC,
        "create": "@auth.id != null",
        "update": "owner = @auth.id",
        "delete": "owner = @auth.id",
    },
    "options": {"cache_lists": True},
}
"""A record's owner sees it whole; others see it only while public, without ``secret``."""


@dataclass(frozen=True)
class User:
    name: str
    id: str | None
    """None: nobody signed in."""
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token) if self.token is not None else {}


async def sign_up(http: httpx.AsyncClient, name: str) -> User:
    response = await http.post(
        "/api/auth/signup",
        json={"email": f"{name}@example.com", "password": "a-long-enough-password"},
    )
    assert response.status_code == 201, response.text
    signed_in = response.json()
    return User(name, signed_in["user"]["id"], signed_in["access_token"])


@dataclass
class Audit:
    """What readers were answered, checked against what each may see."""

    notes: dict[str, dict[str, Any]]
    """Every note as its owner last wrote it (all fields)."""
    problems: list[str] = field(default_factory=list)
    refused: int = 0
    """Reads of a note that was not the reader's to see, answered 404 as they should."""
    stripped: int = 0
    """Reads of another's public note, answered without its hidden field."""
    pages: int = 0

    def visible(self, user: User, note: dict[str, Any]) -> bool:
        return note["public"] is True or note["owner"] == user.id

    async def view(self, http: httpx.AsyncClient, via: str, user: User, note_id: str) -> None:
        note = self.notes[note_id]
        response = await http.get(f"{NOTES_PATH}/{note_id}", headers=user.headers)
        who = f"{user.name} via {via}, note of {note['title']}"
        if note["secret"] in response.text and note["owner"] != user.id:
            self.problems.append(f"{who}: the hidden field leaked: {response.text}")
        if not self.visible(user, note):
            if response.status_code != 404:
                self.problems.append(f"{who}: {response.status_code} {response.text}, not 404")
            self.refused += 1
            return
        if response.status_code != 200:
            self.problems.append(f"{who}: {response.status_code} {response.text}")
            return
        record = response.json()
        if record["version"] != note["version"] or record["public"] != note["public"]:
            self.problems.append(f"{who}: got {record}, not {note}")
        if note["owner"] == user.id:
            if record.get("secret") != note["secret"]:
                self.problems.append(f"{who}: the owner did not get the hidden field: {record}")
        elif "secret" in record:
            self.problems.append(f"{who}: a non-owner got the hidden field: {record}")
        else:
            self.stripped += 1

    async def list(self, http: httpx.AsyncClient, via: str, user: User) -> None:
        """Every page (3 records each) of the list, as ``user``."""
        items: list[dict[str, Any]] = []
        params = {"limit": "3"}
        while True:
            response = await http.get(NOTES_PATH, params=params, headers=user.headers)
            assert response.status_code == 200, response.text
            page = response.json()
            self.pages += 1
            items += page["items"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        who = f"{user.name}'s list via {via}"
        listed = [item["id"] for item in items]
        wanted = {i for i, note in self.notes.items() if self.visible(user, note)}
        if len(listed) != len(set(listed)) or set(listed) != wanted:
            extra = [self.notes[i]["title"] for i in set(listed) - wanted]
            missing = [self.notes[i]["title"] for i in wanted - set(listed)]
            self.problems.append(f"{who}: {extra} listed, {missing} missing ({len(listed)} items)")
        for item in items:
            mine = item["owner"] == user.id
            if ("secret" in item) != mine:
                self.problems.append(f"{who}: hidden field wrong in {item}")


async def test_a_cached_record_or_page_reaches_only_those_its_rules_admit(pair: Pair) -> None:
    create_collection(pair.a.url, pair.admin, NOTES_DEFINITION)
    async with clients(pair, 16) as http:
        users = [await sign_up(http["A"], f"user{i}") for i in range(4)]
        readers = [*users, User("anonymous", None, None)]
        notes: dict[str, dict[str, Any]] = {}
        for user in users:
            for i in range(4):
                body = {
                    "title": f"{user.name}#{i}",
                    "secret": f"secret-{os.urandom(8).hex()}",
                    "public": i == 0,
                }
                response = await http["B"].post(NOTES_PATH, json=body, headers=user.headers)
                assert response.status_code == 201, response.text
                notes[response.json()["id"]] = response.json()
        audit = Audit(notes)

        async def owners_fill() -> None:
            """Each owner reads its notes and its list through both instances."""
            for via, client in http.items():
                for user in users:
                    for note_id, note in notes.items():
                        if note["owner"] == user.id:
                            await audit.view(client, via, user, note_id)
                    await audit.list(client, via, user)

        async def everybody_reads(rounds: int) -> None:
            async def reader(via: str, user: User, seed: int) -> None:
                rng, order = random.Random(seed), sorted(notes)
                for _ in range(rounds):
                    rng.shuffle(order)
                    for note_id in order:
                        await audit.view(http[via], via, user, note_id)
                    await audit.list(http[via], via, user)

            await asyncio.gather(
                *(
                    reader(via, user, seed)
                    for seed, (via, user) in enumerate(itertools.product(http, readers))
                )
            )

        await owners_fill()
        before = await all_counts(http)
        await everybody_reads(rounds=2)
        after = await all_counts(http)
        first_refused, first_stripped = audit.refused, audit.stripped

        # The public notes leave the others' view: the cache must not keep showing them.
        for note_id, note in list(notes.items()):
            if note["public"]:
                owner = next(user for user in users if user.id == note["owner"])
                response = await http["A"].patch(
                    f"{NOTES_PATH}/{note_id}", json={"public": False}, headers=owner.headers
                )
                assert response.status_code == 200, response.text
                notes[note_id] = response.json()
        await owners_fill()
        await everybody_reads(rounds=1)

    record_hits = grown(before, after, "hits.record")
    page_hits = grown(before, after, "hits.page")
    print(
        f"\nrules: {len(notes)} notes of {len(users)} users; {audit.refused} reads refused"
        f" ({first_refused} while some notes were public), {first_stripped} public notes"
        f" shown without their hidden field, {audit.pages} list pages checked; record hits"
        f" {record_hits}, page hits {page_hits}"
    )
    assert not audit.problems, f"{len(audit.problems)} wrong answers:\n" + "\n".join(
        audit.problems[:10]
    )
    assert first_refused > 0 and first_stripped > 0 and audit.refused > first_refused
    assert all(count > 100 for count in record_hits.values()), record_hits
    assert all(count > 10 for count in page_hits.values()), page_hits


# 3. Redis killed and restarted


@dataclass(frozen=True)
class Answer:
    what: str
    """``GET A``, ``PATCH B``, ``ready A``, ..."""
    phase: str
    status: int | None
    """None: no answer (the error is in ``detail``)."""
    seconds: float
    detail: str = ""


@dataclass
class Outage:
    """The phase now (``up``, ``down``, ``back``) and every answer, timed."""

    phase: str = "up"
    answers: list[Answer] = field(default_factory=list)
    cache: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    """Per instance, the phase and cache check of each ``/api/ready`` answer."""

    async def send(
        self, what: str, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        phase, started = self.phase, time.monotonic()
        try:
            response = await http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            self.answers.append(Answer(what, phase, None, time.monotonic() - started, repr(error)))
            return None
        elapsed = time.monotonic() - started
        detail = response.text[:300] if response.status_code != 200 else ""
        self.answers.append(Answer(what, phase, response.status_code, elapsed, detail))
        return response if response.status_code == 200 else None

    def reported(self, via: str, check: str, phase: str) -> bool:
        return (phase, check) in self.cache[via]


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_reads_and_writes_go_on_while_redis_is_killed_and_restarted(pair: Pair) -> None:
    ids = await create_counters(pair, 4)
    history = History()
    history.created(ids)
    outage = Outage()
    stop = asyncio.Event()
    numbers = itertools.count(1)

    async with clients(pair, 16) as http:

        async def reader(via: str, seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                record_id = rng.choice(ids)
                sent = time.monotonic()
                path = f"{COUNTERS_PATH}/{record_id}"
                if response := await outage.send(f"GET {via}", http[via], "GET", path):
                    history.read(response.json(), sent, via)

        async def writer(via: str, seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                path = f"{COUNTERS_PATH}/{rng.choice(ids)}"
                body = {"n": next(numbers)}
                headers = bearer(pair.admin)
                if response := await outage.send(
                    f"PATCH {via}", http[via], "PATCH", path, json=body, headers=headers
                ):
                    history.acknowledged(response.json(), via)
                await asyncio.sleep(0.02)

        async def ready(via: str) -> None:
            while not stop.is_set():
                if response := await outage.send(f"ready {via}", http[via], "GET", "/api/ready"):
                    outage.cache[via].append((outage.phase, response.json()["checks"]["cache"]))
                await asyncio.sleep(0.1)

        async with asyncio.TaskGroup() as tasks:
            for seed, via in enumerate("AB" * 3):
                tasks.create_task(reader(via, seed))
            for seed, via in enumerate("AB"):
                tasks.create_task(writer(via, 100 + seed))
                tasks.create_task(ready(via))
            await until(
                lambda: all(outage.reported(via, "ok", "up") for via in http),
                5,
                "readiness reports the cache ok",
            )
            await asyncio.sleep(3)
            before = await all_counts(http)

            assert pair.redis.process is not None
            pair.redis.process.kill()  # SIGKILL
            pair.redis.process.wait()
            killed = time.monotonic()
            outage.phase = "down"
            await until(
                lambda: all(outage.reported(via, "down", "down") for via in http),
                5,
                "readiness reports the cache down",
            )
            await asyncio.sleep(3)
            during = await all_counts(http)

            await asyncio.to_thread(pair.redis.start)  # empty, on the same port
            restarted = time.monotonic()
            outage.phase = "back"
            recovered = await until(
                lambda: all(outage.reported(via, "ok", "back") for via in http),
                15,
                "readiness reports the cache ok again",
            )
            at_recovery = await all_counts(http)
            await asyncio.sleep(3)
            stop.set()
        after = await all_counts(http)

    answers = outage.answers
    failed = [a for a in answers if a.status is None or a.status >= 500]
    slow = sorted((a for a in answers if a.seconds > RESPONSE_BOUND), key=lambda a: -a.seconds)
    not_ok = [a for a in answers if a.status != 200]
    verdict = history.verdict()
    since_restart = history.verdict(since=restarted)
    writes_down = sum(1 for a in answers if a.what.startswith("PATCH") and a.phase == "down")
    bypassed = {
        name: grown(before, during, "errors.record")[name]
        + grown(before, during, "bypassed.record")[name]
        for name in http
    }
    hits_back = grown(at_recovery, after, "hits.record")
    checks = {via: sorted({check for _, check in outage.cache[via]}) for via in http}
    print(
        f"\nRedis killed at {killed - history.start:.2f} s and restarted at"
        f" {restarted - history.start:.2f} s: {len(answers)} requests, slowest"
        f" {max(a.seconds for a in answers):.3f}"
        f" s; {writes_down} writes during the outage; reads sent to the database meanwhile"
        f" {bypassed}; readiness said {checks}, ok again {recovered:.2f} s after the restart;"
        f" record hits in the 3 s after {hits_back}; {verdict.compared} reads compared"
        f" ({since_restart.compared} after the restart, {since_restart.close} within 50 ms of"
        " an acknowledgement)"
    )
    assert not failed, f"{len(failed)} requests failed: {failed[:5]}"
    assert not not_ok, f"{len(not_ok)} answers were not 200: {not_ok[:5]}"
    assert not slow, f"{len(slow)} answers took over {RESPONSE_BOUND} s: {slow[:5]}"
    history.assert_fresh(verdict)
    assert all(count > 20 for count in bypassed.values()), bypassed
    assert writes_down > 10 and since_restart.compared > 200
    assert all(count > 100 for count in hits_back.values()), f"caching did not resume: {hits_back}"


# 4. Stampede


STAMPEDE = 200
"""Concurrent reads of one cold record through each instance."""


async def test_a_write_while_reads_are_shed_still_retires_what_it_changed(pair: Pair) -> None:
    """B's reads fail for a moment (Redis froze, B's breaker opened) while A still reads
    Redis: B's next write must replace its tokens all the same, or A keeps serving the
    version before it."""
    (record_id,) = await create_counters(pair, 1)
    path = f"{COUNTERS_PATH}/{record_id}"
    assert pair.redis.process is not None
    async with clients(pair, 4) as http:
        for client in http.values():
            for _ in range(2):
                assert (await client.get(path)).json()["version"] == 1
        os.kill(pair.redis.process.pid, signal.SIGSTOP)
        try:
            assert (await http["B"].get(path)).json()["version"] == 1  # times out: shed
        finally:
            os.kill(pair.redis.process.pid, signal.SIGCONT)
        response = await http["B"].patch(path, json={"n": 1}, headers=bearer(pair.admin))
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 2
        before = await cache_counts(http["A"])
        for _ in range(5):
            assert (await http["A"].get(path)).json()["version"] == 2
        after = await cache_counts(http["A"])
        assert after["hits.record"] - before["hits.record"] == 4  # A still uses the cache


def table_scans(postgres: PostgresServer, database: str, table: str) -> int:
    """How many times PostgreSQL scanned ``table`` (sequential and index scans), once no
    other backend is connected to ``database``: a backend flushes its statistics when it
    exits, while one that stays connected may hold them back for up to 10 s."""
    deadline = time.monotonic() + 30
    while True:
        others = postgres.psql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            database,
        )
        if int(others) == 0:
            break
        assert time.monotonic() < deadline, f"{others.strip()} backends stay on {database}"
        time.sleep(0.05)
    scans = postgres.psql(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        f" WHERE relname = '{table}'",
        database,
    )
    return int(scans)


async def burst(server: LiveServer, path: str, count: int) -> list[tuple[int, bytes]]:
    """``count`` connections to ``server`` opened first, then ``GET path`` written on each
    before any answer is read; each answer's status and body."""
    opened = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", server.port) for _ in range(count))
    )
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for _, writer in opened:
        writer.write(request.encode())

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, bytes]:
        try:
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    return await asyncio.gather(*(answer(reader, writer) for reader, writer in opened))


async def test_a_stampede_on_a_cold_record_reads_the_database_once_per_instance(
    pair: Pair,
) -> None:
    (record_id,) = await create_counters(pair, 1)
    table = f"r_{COUNTERS}"
    for server in pair.servers:  # their database connections close: statistics flushed
        server.kill(signal.SIGTERM)
    baseline = table_scans(pair.postgres, pair.database, table)
    for server in pair.servers:
        server.start()

    path = f"{COUNTERS_PATH}/{record_id}"
    async with clients(pair, 2) as http:
        before = await all_counts(http)

        async def arrived() -> bool:
            """Whether every read has looked in the cache (or given up on it)."""
            now = await all_counts(http)
            looked = ("hits.record", "misses.record", "errors.record", "bypassed.record")
            return all(
                sum(now[name][key] - before[name][key] for key in looked) >= STAMPEDE
                for name in http
            )

        # The table locked, the first read of the record waits in the database until all
        # the others have looked in the cache: each must then wait for that read.
        locker = await asyncpg.connect(pair.postgres.url_for(pair.database))
        try:
            await locker.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            async with asyncio.TaskGroup() as tasks:
                bursts = [
                    tasks.create_task(burst(server, path, STAMPEDE)) for server in pair.servers
                ]
                while not await arrived():
                    assert time.monotonic() - started < 20, "the reads did not arrive in 20 s"
                    await asyncio.sleep(0.05)
                waited = time.monotonic() - started
                await locker.execute("COMMIT")
            elapsed = time.monotonic() - started
        finally:
            await locker.close()
        after = await all_counts(http)
    answers = [answer for each in bursts for answer in each.result()]

    for server in pair.servers:
        server.kill(signal.SIGTERM)
    scans = table_scans(pair.postgres, pair.database, table) - baseline
    statuses = {status for status, _ in answers}
    bodies = {body for _, body in answers}
    counts = {
        key: grown(before, after, key)
        for key in ("hits.record", "misses.record", "coalesced.record")
    }
    print(
        f"\nstampede: {len(answers)} reads ({waited:.2f} s to arrive, {elapsed:.2f} s in"
        f" all), {scans} scans of the record's table; {counts}"
    )
    assert statuses == {200} and len(bodies) == 1, (statuses, len(bodies))
    record = orjson.loads(bodies.pop())
    assert record["id"] == record_id and record["n"] == 0, record
    assert scans == len(pair.servers), f"{scans} database reads of one record, not one per instance"
