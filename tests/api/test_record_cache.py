"""The server's record cache as a demanding client sees it: every read returns what the
last acknowledged write left, whoever reads and whatever was cached before, and repeated
reads cost no database statement.

One suite, run with every cache backend (``memory://``, a throwaway Redis, a throwaway
three-master Redis Cluster) on SQLite, and with Redis on PostgreSQL where the storage
matters too. The counters come from ``GET /metrics``, as Prometheus reads them. Redis
going away (stopped and restarted empty, or frozen with its entries kept) costs speed,
never correctness: the two outage tests at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.conftest import USER_EMAIL
from api.scenario import NO_BODY, Api, Scenario
from conftest import ADMIN_PASSWORD, TEST_DEVICE, make_settings
from redis_cluster import RedisClusterServers
from redis_server import RedisServer
from roost.cache.redis import DEFAULT_TIMEOUT, RETRY_SECONDS
from roost.components import open_components
from roost.ids import new_id
from roost.settings import Settings
from roost.storage.base import STATEMENTS

METRICS_TOKEN = "prometheus-scrapes-with-this-token-0123"
RECORDS = "/api/collections/{name}/records"
OWNED = "owner = @auth.id"
SECRET = "only-the-owner-may-see-this"

RECORD_HITS = 'roost_cache_hits_total{kind="record"}'
RECORD_MISSES = 'roost_cache_misses_total{kind="record"}'
RECORD_COALESCED = 'roost_cache_coalesced_total{kind="record"}'
RECORD_BYPASSED = 'roost_cache_bypassed_total{kind="record"}'
RECORD_ERRORS = 'roost_cache_errors_total{kind="record"}'
PAGE_HITS = 'roost_cache_hits_total{kind="page"}'
PAGE_MISSES = 'roost_cache_misses_total{kind="page"}'
CACHE_UP = "roost_cache_up"
STATEMENTS_TOTAL = "roost_db_statements_total"
BACKGROUND_STATEMENTS = 1
"""Statements the app's own workers may send while a test measures (the outbox polls
every two seconds); a read that reached the database would cost one each."""


def collection(
    name: str,
    *,
    view: str | None = "",
    list_rule: str | None = "",
    hidden: bool = False,
    cache_lists: bool = False,
) -> dict[str, Any]:
    """A definition: ``title`` and ``secret`` (hidden when ``hidden``), signed-in users
    create, owners change their own."""
    return {
        "name": name,
        "fields": {"title": {"type": "string"}, "secret": {"type": "string", "hidden": hidden}},
        "rules": {
            "list": list_rule,
            "view": view,
            "create": "@auth.id != null",
            "update": OWNED,
            "delete": OWNED,
        },
        "options": {"cache_lists": cache_lists},
    }


# the stacks


StorageKind = Literal["sqlite", "postgres"]
CacheKind = Literal["memory", "redis", "redis-cluster", "none"]


@dataclass(frozen=True)
class Stack:
    storage: StorageKind
    cache: CacheKind


def on(storage: StorageKind, cache: CacheKind) -> Any:
    """A ``pytest.param`` for ``stack``."""
    return pytest.param(Stack(storage, cache), id=f"{storage}-{cache}")


EVERY_CACHE = [on("sqlite", "memory"), on("sqlite", "redis"), on("sqlite", "redis-cluster")]
"""Every test runs on these, unless it names its own."""
postgres_too = pytest.mark.parametrize(
    "stack", [*EVERY_CACHE, on("postgres", "redis")], indirect=True
)
"""For the tests where the storage backend matters too (PostgreSQL costs a database per
test: a deployment with PostgreSQL has a Redis)."""


@pytest.fixture(params=EVERY_CACHE)
def stack(request: pytest.FixtureRequest) -> Stack:
    found: Stack = request.param
    return found


@pytest.fixture
def database_url(stack: Stack, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if stack.storage == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'roost.db'}"


@pytest.fixture
def cache_timeout() -> float:
    """Seconds a Redis call may take: more than in production, so that a loaded test
    machine opening connections does not count as an outage (the outage tests use the
    default)."""
    return 2.0


@pytest.fixture
def cache_url(stack: Stack, request: pytest.FixtureRequest, cache_timeout: float) -> str:
    if stack.cache == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}?timeout={cache_timeout}"
    if stack.cache == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return f"{cluster.url}?timeout={cache_timeout}"
    return "memory://" if stack.cache == "memory" else "none"


@pytest.fixture
def settings(tmp_path: Path, database_url: str, cache_url: str) -> Settings:
    # The realtime feed polls the change log every 0.1 s by default: quiet it, so that
    # the statements counted are the requests' own.
    return make_settings(
        tmp_path,
        database_url=database_url,
        cache_url=cache_url,
        metrics_token=METRICS_TOKEN,
        realtime_poll_seconds=60,
    )


@pytest.fixture
async def people(api: Api) -> Api:
    """``api`` with a second ordinary user, B (``{b}``, token ``{b_token}``); the first,
    ``{user}``, is A."""
    signed_in = await api.components.accounts.signup(
        "b@example.com", "a-good-long-password", TEST_DEVICE, {}
    )
    api.values["b"] = signed_in.user["id"]
    api.values["b_token"] = signed_in.access_token
    return api


# requests

Who = Literal["admin", "user", "b", "anonymous"]
"""Who sends a request: the admin, A (``user``), B, or nobody."""


async def send(
    api: Api,
    method: str,
    path: str,
    who: Who = "admin",
    body: Any = NO_BODY,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    if who == "b":
        headers = {"Authorization": f"Bearer {api.values['b_token']}"}
    else:
        headers = api.auth_headers(who)
    return await api.request(
        method, path, auth="anonymous", headers=headers, body=body, params=params
    )


async def get(api: Api, path: str, who: Who = "admin", status: int = 200, **params: str) -> Any:
    """The JSON of ``GET path`` (query ``params``) by ``who``, which must be ``status``."""
    response = await send(api, "GET", path, who, params=params)
    assert response.status_code == status, f"GET {path} by {who}: {response.text}"
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
    return response.json()


async def create(api: Api, name: str, data: dict[str, Any], who: Who = "admin") -> str:
    response = await send(api, "POST", RECORDS.format(name=name), who, body=data)
    assert response.status_code == 201, response.text
    record_id: str = response.json()["id"]
    return record_id


async def patch(api: Api, path: str, body: dict[str, Any], who: Who = "admin") -> Any:
    response = await send(api, "PATCH", path, who, body=body)
    assert response.status_code == 200, response.text
    return response.json()


async def titles(api: Api, name: str, who: Who = "admin", **params: str) -> list[str]:
    """The titles of the first page of ``name`` as ``who`` lists it."""
    response = await send(api, "GET", RECORDS.format(name=name), who, params=params)
    assert response.status_code == 200, f"list {name} by {who}: {response.text}"
    return [item.get("title") for item in response.json()["items"]]


def record(name: str, record_id: str) -> str:
    return f"{RECORDS.format(name=name)}/{record_id}"


# metrics


async def scrape(api: Api) -> dict[str, float]:
    """Every sample of ``GET /metrics`` (as Prometheus reads it, with the metrics token),
    by name and labels (``tier`` left out): ``roost_cache_hits_total{kind="record"}``."""
    response = await api.client.get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{value}"' for key, value in sorted(sample.labels.items()) if key != "tier"
            )
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class Counted:
    """What the counters of ``GET /metrics`` grew by since ``start()`` (or the last
    ``grown()``)."""

    def __init__(self, api: Api) -> None:
        self._api = api
        self._last: dict[str, float] = {}

    async def start(self) -> Counted:
        await settle()
        self._last = await scrape(self._api)
        return self

    async def grown(self) -> dict[str, float]:
        now = await scrape(self._api)
        grown = {name: value - self._last.get(name, 0.0) for name, value in now.items()}
        self._last = now
        return grown


async def counted(api: Api) -> Counted:
    return await Counted(api).start()


async def settle() -> None:
    """Let the work a write set off in the background (the realtime feed reading the
    change log) finish before statements are counted: until none is sent for 30 ms."""
    for _ in range(100):
        before = STATEMENTS.count
        await asyncio.sleep(0.03)
        if STATEMENTS.count == before:
            return


def cache_counts(grown: Mapping[str, float], *names: str) -> tuple[float, ...]:
    return tuple(grown.get(name, 0.0) for name in names)


# reads after writes


@postgres_too
async def test_every_read_after_an_update_or_delete_shows_it(api: Api) -> None:
    await api.create_collection(collection("feed"))
    path = record("feed", await create(api, "feed", {"title": "v1"}))
    counts = await counted(api)
    for _ in range(3):
        assert (await get(api, path))["title"] == "v1"
    assert cache_counts(await counts.grown(), RECORD_MISSES, RECORD_HITS) == (1, 2)
    for version in (2, 3, 4):
        await patch(api, path, {"title": f"v{version}"})
        for _ in range(3):
            found = await get(api, path)
            assert (found["title"], found["version"]) == (f"v{version}", version)
        # the write replaced the entry's token: one read from the database, then hits
        assert cache_counts(await counts.grown(), RECORD_MISSES, RECORD_HITS) == (1, 2)
    response = await send(api, "DELETE", path)
    assert response.status_code == 204, response.text
    for _ in range(3):
        assert (await get(api, path, status=404))["code"] == "not_found"


@postgres_too
async def test_an_absent_id_read_before_it_is_created_is_found_after(api: Api) -> None:
    await api.create_collection(collection("feed"))
    chosen = new_id()  # by the client
    path = record("feed", chosen)
    counts = await counted(api)
    for _ in range(3):
        await get(api, path, status=404)
    # absent records are cached too: polling a missing id does not reach the database
    assert cache_counts(await counts.grown(), RECORD_MISSES, RECORD_HITS) == (1, 2)
    await create(api, "feed", {"id": chosen, "title": "here now"})
    for _ in range(3):
        assert (await get(api, path))["title"] == "here now"


@postgres_too
async def test_the_second_read_of_a_record_costs_no_database_statement(api: Api) -> None:
    await api.create_collection(collection("feed"))
    path = record("feed", await create(api, "feed", {"title": "hot"}))
    first = await get(api, path)
    counts = await counted(api)
    for _ in range(10):
        assert await get(api, path) == first
    grown = await counts.grown()
    assert cache_counts(grown, RECORD_HITS, RECORD_MISSES) == (10, 0)
    assert grown[STATEMENTS_TOTAL] <= BACKGROUND_STATEMENTS


@pytest.mark.parametrize(
    "stack", [*EVERY_CACHE, on("postgres", "memory"), on("postgres", "redis")], indirect=True
)
async def test_concurrent_cold_reads_share_one_database_read(api: Api, stack: Stack) -> None:
    await api.create_collection(collection("feed"))
    path = record("feed", await create(api, "feed", {"title": "stampede"}))
    counts = await counted(api)
    found = await asyncio.gather(*(get(api, path) for _ in range(10)))
    assert all(item["title"] == "stampede" for item in found)
    grown = await counts.grown()
    hits, misses, coalesced = cache_counts(grown, RECORD_HITS, RECORD_MISSES, RECORD_COALESCED)
    assert hits + misses == 10
    # Each miss read the database or joined a read in flight. With Redis, a miss may
    # rarely land just after that read ended (its reply came first) and read once more.
    database_reads = misses - coalesced
    assert database_reads == 1 if stack.cache == "memory" else 1 <= database_reads <= 2


@postgres_too
async def test_a_batch_shows_all_its_writes_and_a_failed_one_none(api: Api) -> None:
    await api.create_collection(collection("feed"))
    kept = await create(api, "feed", {"title": "kept"})
    gone = await create(api, "feed", {"title": "gone"})
    for path in (record("feed", kept), record("feed", gone)):
        await get(api, path)
    born = new_id()
    await get(api, record("feed", born), status=404)
    operations = [
        {"action": "update", "collection": "feed", "id": kept, "data": {"title": "changed"}},
        {"action": "delete", "collection": "feed", "id": gone},
        {"action": "create", "collection": "feed", "id": born, "data": {}},
    ]
    response = await send(api, "POST", "/api/batch", body={"operations": operations})
    assert response.status_code == 200, response.text
    for _ in range(2):
        assert (await get(api, record("feed", kept)))["title"] == "changed"
        await get(api, record("feed", gone), status=404)
        assert (await get(api, record("feed", born)))["version"] == 1
    failing = [
        {"action": "update", "collection": "feed", "id": kept, "data": {"title": "rolled back"}},
        {"action": "delete", "collection": "feed", "id": gone},  # gone already: 404
    ]
    response = await send(api, "POST", "/api/batch", body={"operations": failing})
    assert response.status_code == 404, response.text
    assert (await get(api, record("feed", kept)))["title"] == "changed"


# rules, checked on every request


async def test_a_private_record_cached_for_its_owner_is_missing_for_others(
    people: Api,
) -> None:
    await people.create_collection(collection("notes", view=OWNED, list_rule=OWNED, hidden=True))
    path = record(
        "notes", await create(people, "notes", {"title": "mine", "secret": SECRET}, "user")
    )
    for _ in range(2):
        assert (await get(people, path, "user"))["secret"] == SECRET
    counts = await counted(people)
    others: tuple[Who, ...] = ("b", "anonymous", "b")
    for who in others:
        problem = await get(people, path, who, status=404)
        assert problem["code"] == "not_found" and SECRET not in str(problem)
    # served from the cached entry, and refused all the same
    assert cache_counts(await counts.grown(), RECORD_HITS, RECORD_MISSES) == (3, 0)
    assert (await get(people, path))["secret"] == SECRET  # admins see everything


async def test_hidden_fields_cached_for_the_owner_are_stripped_for_others(people: Api) -> None:
    await people.create_collection(collection("board", hidden=True, cache_lists=True))
    path = record("board", await create(people, "board", {"title": "t", "secret": SECRET}, "user"))
    listed = RECORDS.format(name="board")
    for _ in range(2):  # the owner first: the cache holds what the owner may see
        assert (await get(people, path, "user"))["secret"] == SECRET
        assert (await get(people, listed, "user"))["items"][0]["secret"] == SECRET
    others: tuple[Who, ...] = ("b", "anonymous", "b")
    for who in others:
        found = await get(people, path, who)
        assert found["title"] == "t" and "secret" not in found
        page = await get(people, listed, who)
        assert [item["title"] for item in page["items"]] == ["t"] and SECRET not in str(page)
    assert (await get(people, path, "admin"))["secret"] == SECRET
    assert (await get(people, listed, "admin"))["items"][0]["secret"] == SECRET


async def test_a_page_kept_for_an_unverified_caller_is_not_served_once_verified(
    api: Api,
) -> None:
    club = collection("club", list_rule="@auth.verified = true", cache_lists=True)
    await api.create_collection(club)
    await create(api, "club", {"title": "members only"})
    for _ in range(2):
        assert await titles(api, "club", "user") == []
    await patch(api, record("users", api.values["user"]), {"verified": True})
    signed_in = await api.components.accounts.login(USER_EMAIL, ADMIN_PASSWORD, TEST_DEVICE)
    api.user_token = signed_in.access_token  # its claims say verified now
    for _ in range(2):
        assert await titles(api, "club", "user") == ["members only"]


async def test_a_changed_view_or_list_rule_applies_to_the_very_next_read(people: Api) -> None:
    await people.create_collection(collection("news", cache_lists=True))
    path = record("news", await create(people, "news", {"title": "open"}))
    for _ in range(2):  # cached for anyone
        assert (await get(people, path, "anonymous"))["title"] == "open"
        assert await titles(people, "news", "b") == ["open"]
    private = collection("news", view=OWNED, list_rule=OWNED, cache_lists=True)
    await patch(people, "/api/collections/news", {"rules": private["rules"]})
    callers: tuple[Who, ...] = ("anonymous", "b", "user")
    for who in callers:
        await get(people, path, who, status=404)
        assert await titles(people, "news", who) == []
    assert (await get(people, path))["title"] == "open"
    assert await titles(people, "news") == ["open"]
    await patch(people, "/api/collections/news", {"rules": collection("news")["rules"]})
    assert (await get(people, path, "anonymous"))["title"] == "open"
    assert await titles(people, "news", "b") == ["open"]


async def test_a_field_made_hidden_is_stripped_from_the_very_next_read(people: Api) -> None:
    await people.create_collection(collection("board", cache_lists=True))
    path = record("board", await create(people, "board", {"title": "t", "secret": SECRET}, "user"))
    for _ in range(2):
        assert (await get(people, path, "b"))["secret"] == SECRET
        assert (await get(people, RECORDS.format(name="board"), "b"))["items"][0]["secret"]
    fields = collection("board", hidden=True)["fields"]
    await patch(people, "/api/collections/board", {"fields": fields})
    assert "secret" not in await get(people, path, "b")
    page = await get(people, RECORDS.format(name="board"), "b")
    assert [item["title"] for item in page["items"]] == ["t"]
    assert SECRET not in str(page)
    assert (await get(people, path, "user"))["secret"] == SECRET


@postgres_too
async def test_a_collection_dropped_and_made_again_serves_no_old_record(api: Api) -> None:
    await api.create_collection(collection("feed", cache_lists=True))
    same = new_id()
    await create(api, "feed", {"id": same, "title": "old"})
    path = record("feed", same)
    for _ in range(2):
        assert (await get(api, path))["title"] == "old"
        assert await titles(api, "feed") == ["old"]
    response = await send(api, "DELETE", "/api/collections/feed")
    assert response.status_code == 204, response.text
    await get(api, path, status=404)
    await get(api, RECORDS.format(name="feed"), status=404)
    await api.create_collection(collection("feed", cache_lists=True))
    for _ in range(2):  # the list first: it learns the new definition
        assert await titles(api, "feed") == []
        await get(api, path, status=404)
    await create(api, "feed", {"id": same, "title": "new"})
    for _ in range(2):
        found = await get(api, path)
        assert (found["title"], found["version"]) == ("new", 1)
        assert await titles(api, "feed") == ["new"]


# lists


@postgres_too
async def test_a_cached_list_changes_with_the_next_write(api: Api) -> None:
    await api.create_collection(collection("feed", cache_lists=True))
    first = await create(api, "feed", {"title": "a"})
    await create(api, "feed", {"title": "b"})
    first_page = await get(api, RECORDS.format(name="feed"), sort="title")
    counts = await counted(api)
    for _ in range(2):
        assert await get(api, RECORDS.format(name="feed"), sort="title") == first_page
    grown = await counts.grown()
    assert cache_counts(grown, PAGE_MISSES, PAGE_HITS) == (0, 2)
    assert grown[STATEMENTS_TOTAL] <= BACKGROUND_STATEMENTS
    await create(api, "feed", {"title": "c"})
    for _ in range(2):
        assert await titles(api, "feed", sort="title") == ["a", "b", "c"]
    await patch(api, record("feed", first), {"title": "d"})
    for _ in range(2):
        assert await titles(api, "feed", sort="title") == ["b", "c", "d"]
    response = await send(api, "DELETE", record("feed", first))
    assert response.status_code == 204, response.text
    for _ in range(2):
        assert await titles(api, "feed", sort="title") == ["b", "c"]
    grown = await counts.grown()
    assert cache_counts(grown, PAGE_MISSES, PAGE_HITS) == (3, 3)


@postgres_too
async def test_cached_pages_are_never_shown_to_another_user(people: Api) -> None:
    await people.create_collection(
        collection("notes", view=OWNED, list_rule=OWNED, hidden=True, cache_lists=True)
    )
    for title in ("a1", "a2"):
        await create(people, "notes", {"title": title, "secret": SECRET}, "user")
    await create(people, "notes", {"title": "b1", "secret": "b's"}, "b")
    counts = await counted(people)
    for _ in range(2):
        assert await titles(people, "notes", "user", sort="title") == ["a1", "a2"]
        page = await get(people, RECORDS.format(name="notes"), "b", sort="title")
        assert [item["title"] for item in page["items"]] == ["b1"]
        assert SECRET not in str(page)
        assert await titles(people, "notes", "anonymous", sort="title") == []
        assert await titles(people, "notes", "admin", sort="title") == ["a1", "a2", "b1"]
    assert cache_counts(await counts.grown(), PAGE_MISSES, PAGE_HITS) == (4, 4)


async def test_a_public_list_filtered_by_the_caller_is_kept_per_caller(people: Api) -> None:
    await people.create_collection(collection("board", cache_lists=True))
    await create(people, "board", {"title": "by a"}, "user")
    await create(people, "board", {"title": "by b"}, "b")
    counts = await counted(people)
    for _ in range(2):
        assert await titles(people, "board", "user", filter=OWNED) == ["by a"]
        assert await titles(people, "board", "b", filter=OWNED) == ["by b"]
        assert await titles(people, "board", "anonymous", filter=OWNED) == []
    assert cache_counts(await counts.grown(), PAGE_MISSES, PAGE_HITS) == (3, 3)
    # without a word about the caller, one page serves everyone
    assert await titles(people, "board", "user", sort="title") == ["by a", "by b"]
    assert await titles(people, "board", "b", sort="title") == ["by a", "by b"]
    assert cache_counts(await counts.grown(), PAGE_MISSES, PAGE_HITS) == (1, 1)


async def test_a_list_that_reads_the_clock_is_never_cached(api: Api) -> None:
    await api.create_collection(collection("feed", cache_lists=True))
    await create(api, "feed", {"title": "past"})
    counts = await counted(api)
    for _ in range(3):
        assert await titles(api, "feed", filter="created <= @now") == ["past"]
    assert cache_counts(await counts.grown(), PAGE_MISSES, PAGE_HITS) == (0, 0)
    rules = {**collection("feed")["rules"], "list": "created <= @now"}
    await patch(api, "/api/collections/feed", {"rules": rules})
    for _ in range(3):
        assert await titles(api, "feed", "anonymous") == ["past"]
    assert cache_counts(await counts.grown(), PAGE_MISSES, PAGE_HITS) == (0, 0)


async def test_lists_are_cached_only_where_the_collection_asks(api: Api) -> None:
    await api.create_collection(collection("feed"))
    await create(api, "feed", {"title": "a"})
    counts = await counted(api)
    for _ in range(3):
        assert await titles(api, "feed") == ["a"]
    grown = await counts.grown()
    assert cache_counts(grown, PAGE_MISSES, PAGE_HITS) == (0, 0)
    assert grown[STATEMENTS_TOTAL] >= 3  # every list read the database
    await patch(api, "/api/collections/feed", {"options": {"cache_lists": True}})
    for _ in range(3):
        assert await titles(api, "feed") == ["a"]
    assert cache_counts(await counts.grown(), PAGE_MISSES, PAGE_HITS) == (1, 2)


# the caller's own account (read through the cache by /api/auth/me)


async def test_an_account_reads_its_own_writes_until_it_is_deleted(api: Api) -> None:
    await api.create_collection(collection("notes", view=OWNED, list_rule=OWNED))
    note = record("notes", await create(api, "notes", {"title": "mine"}, "user"))
    me = f"/api/users/{api.values['user']}"
    for _ in range(2):
        assert "nickname" not in await get(api, "/api/auth/me", "user")
        assert (await get(api, me, "user"))["email"] == USER_EMAIL
        assert (await get(api, note, "user"))["title"] == "mine"
    await patch(api, "/api/auth/me", {"nickname": "ace"}, "user")
    for _ in range(2):
        assert (await get(api, "/api/auth/me", "user"))["nickname"] == "ace"
        assert (await get(api, me, "user"))["nickname"] == "ace"
    response = await send(api, "DELETE", "/api/auth/me", "user")
    assert response.status_code == 204, response.text
    for _ in range(2):  # the access token is still valid; the account is gone
        assert (await get(api, "/api/auth/me", "user", status=401))["code"] == "unauthorized"
        await get(api, me, "user", status=404)
        await get(api, me, "admin", status=404)
        await get(api, note, "admin", status=404)


# operations: readiness and metrics


METRICS_ROWS = [
    Scenario("anonymous", "GET", "/metrics", 401, "unauthorized", auth="anonymous"),
    Scenario("an unknown token", "GET", "/metrics", 401, "unauthorized", auth="bogus"),
    Scenario("a wrong metrics token", "GET", "/metrics", 401, "unauthorized", auth="anonymous",
             headers={"Authorization": f"Bearer {METRICS_TOKEN}-not"}),
    Scenario("the metrics token without Bearer", "GET", "/metrics", 401, "unauthorized",
             auth="anonymous", headers={"Authorization": METRICS_TOKEN}),
    Scenario("a user", "GET", "/metrics", 403, "forbidden", auth="user"),
    Scenario("an admin", "GET", "/metrics", 200, fragments=("roost_cache_hits_total",)),
    Scenario("the metrics token", "GET", "/metrics", 200, auth="anonymous",
             headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
             fragments=("roost_db_statements_total",)),
]  # fmt: skip


@pytest.mark.parametrize("stack", [on("sqlite", "memory")], indirect=True)
async def test_metrics_are_for_the_metrics_token_and_admins(api: Api) -> None:
    for row in METRICS_ROWS:  # each only reads: one app serves them all
        response = await api.run(row)
        if row.status == 200:
            assert response.headers["content-type"].startswith("text/plain")
            assert {family.name for family in text_string_to_metric_families(response.text)}


async def test_readiness_and_metrics_report_the_cache(api: Api, stack: Stack) -> None:
    ready = await get(api, "/api/ready", "anonymous")
    assert ready["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"}
    await api.create_collection(collection("feed", cache_lists=True))
    path = record("feed", await create(api, "feed", {"title": "x"}))
    for _ in range(2):
        await get(api, path)
        await get(api, RECORDS.format(name="feed"))
    response = await api.client.get("/metrics", headers=api.auth_headers("admin"))
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("hits", "misses", "coalesced", "errors", "bypassed"):
        assert families[f"roost_cache_{name}"].type == "counter"
    assert families["roost_db_statements"].samples[0].value > 0
    assert families["roost_cache_read_seconds"].type == "histogram"
    tiers = {s.labels["tier"] for f in families.values() for s in f.samples if "tier" in s.labels}
    assert tiers == {stack.cache}  # memory, redis or redis-cluster
    samples = await scrape(api)
    assert samples[RECORD_HITS] == samples[PAGE_HITS] == 1
    assert samples[CACHE_UP] == 1


@pytest.mark.parametrize("stack", [on("sqlite", "none")], indirect=True)
async def test_without_a_cache_every_read_goes_to_the_database(api: Api) -> None:
    assert api.components.record_cache is None
    ready = await get(api, "/api/ready", "anonymous")
    assert ready["checks"]["cache"] == "off"
    await api.create_collection(collection("feed", cache_lists=True))
    path = record("feed", await create(api, "feed", {"title": "v1"}))
    counts = await counted(api)
    for _ in range(5):
        assert (await get(api, path))["title"] == "v1"
        assert await titles(api, "feed") == ["v1"]
    grown = await counts.grown()
    assert grown[STATEMENTS_TOTAL] >= 10
    assert not any(name.startswith("roost_cache_") for name in grown if "seconds" not in name)
    await patch(api, path, {"title": "v2"})
    assert (await get(api, path))["title"] == "v2"
    assert await titles(api, "feed") == ["v2"]


@pytest.mark.parametrize("stack", [on("sqlite", "memory")], indirect=True)
async def test_an_in_process_cache_is_off_with_several_workers(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url, workers=2)
    async with open_components(settings) as components:
        assert components.record_cache is None


# Redis outages: they cost speed, never correctness


@pytest.fixture
def redis_nodes(stack: Stack, request: pytest.FixtureRequest) -> list[RedisServer]:
    """The Redis processes behind the app's cache."""
    if stack.cache == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return list(cluster.nodes)
    server: RedisServer = request.getfixturevalue("redis_server")
    return [server]


@pytest.fixture
def frozen(redis_nodes: list[RedisServer]) -> Iterator[list[RedisServer]]:
    """``redis_nodes``, resumed after the test whatever it did (SIGSTOP, SIGCONT)."""
    try:
        yield redis_nodes
    finally:
        for node in redis_nodes:
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGCONT)


async def past_the_breaker() -> None:
    """Wait until the cache tries Redis again after a failure."""
    await asyncio.sleep(RETRY_SECONDS + 0.2)


async def until_ready(api: Api, seconds: float = 5.0) -> None:
    """Wait until readiness reports the cache ``ok`` again (it should be within a few
    ``RETRY_SECONDS``: the first call on a connection from before a restart fails)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        await past_the_breaker()
        cache = (await get(api, "/api/ready", "anonymous"))["checks"]["cache"]
        if cache == "ok":
            return
        assert asyncio.get_running_loop().time() < deadline, f"the cache is still {cache}"


@pytest.mark.slow
@pytest.mark.parametrize("cache_timeout", [DEFAULT_TIMEOUT])
@pytest.mark.parametrize("stack", [on("sqlite", "redis")], indirect=True)
async def test_reads_and_writes_go_on_through_a_redis_outage(
    api: Api, redis_server: RedisServer
) -> None:
    await api.create_collection(collection("feed", cache_lists=True))
    kept = record("feed", await create(api, "feed", {"title": "v1"}))
    gone = record("feed", await create(api, "feed", {"title": "gone"}))
    for _ in range(2):
        await get(api, kept)
        await get(api, gone)
        await titles(api, "feed")
    redis_server.stop()
    counts = await counted(api)
    assert (await get(api, kept))["title"] == "v1"
    await patch(api, kept, {"title": "v2"})
    response = await send(api, "DELETE", gone)
    assert response.status_code == 204, response.text
    born = record("feed", await create(api, "feed", {"title": "born"}))
    for _ in range(2):
        assert (await get(api, kept))["title"] == "v2"
        await get(api, gone, status=404)
        assert (await get(api, born))["title"] == "born"
        assert sorted(await titles(api, "feed")) == ["born", "v2"]
    ready = await send(api, "GET", "/api/ready", "anonymous")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "cache": "down"}
    grown = await counts.grown()
    assert grown[RECORD_ERRORS] + grown[RECORD_BYPASSED] == 7  # every read: the database
    assert grown[RECORD_HITS] == 0
    assert (await scrape(api))[CACHE_UP] == 0

    redis_server.start()  # empty
    await until_ready(api)
    await counts.grown()
    for _ in range(3):
        assert (await get(api, kept))["title"] == "v2"
        await get(api, gone, status=404)
        assert sorted(await titles(api, "feed")) == ["born", "v2"]
    grown = await counts.grown()
    assert cache_counts(grown, RECORD_MISSES, RECORD_HITS) == (2, 4)
    assert cache_counts(grown, PAGE_MISSES, PAGE_HITS) == (1, 2)
    assert (await scrape(api))[CACHE_UP] == 1


@pytest.mark.slow
@pytest.mark.parametrize("cache_timeout", [DEFAULT_TIMEOUT])
@pytest.mark.parametrize(
    "stack",
    [on("sqlite", "redis"), on("postgres", "redis"), on("sqlite", "redis-cluster")],
    indirect=True,
)
async def test_writes_during_an_outage_are_not_served_stale_after_it(
    api: Api, frozen: list[RedisServer]
) -> None:
    """A frozen Redis keeps the entries and tokens of before the outage. A write made
    while it is frozen cannot replace its tokens (the call times out): the instance must
    replace them before it serves from the cache again."""
    await api.create_collection(collection("feed", cache_lists=True))
    path = record("feed", await create(api, "feed", {"title": "before"}))
    for _ in range(2):
        assert (await get(api, path))["title"] == "before"
        assert await titles(api, "feed") == ["before"]
    for node in frozen:
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGSTOP)
    counts = await counted(api)
    assert (await get(api, path))["title"] == "before"  # times out: the breaker opens
    await patch(api, path, {"title": "during"})  # its invalidation times out
    await create(api, "feed", {"title": "new"})
    for _ in range(2):
        assert (await get(api, path))["title"] == "during"
        assert sorted(await titles(api, "feed")) == ["during", "new"]
    ready = await get(api, "/api/ready", "anonymous")
    assert ready["checks"]["cache"] == "down"
    grown = await counts.grown()
    assert grown[RECORD_HITS] == grown[PAGE_HITS] == 0
    assert grown[RECORD_BYPASSED] >= 1  # the write's tokens are pending

    for node in frozen:
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGCONT)
    await past_the_breaker()
    await counts.grown()
    for _ in range(3):
        assert (await get(api, path))["title"] == "during"
        assert sorted(await titles(api, "feed")) == ["during", "new"]
    grown = await counts.grown()
    assert cache_counts(grown, RECORD_MISSES, RECORD_HITS) == (1, 2)  # caching again
    assert cache_counts(grown, PAGE_MISSES, PAGE_HITS) == (1, 2)
    assert (await get(api, "/api/ready", "anonymous"))["checks"]["cache"] == "ok"
