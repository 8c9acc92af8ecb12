"""The storage contract: every backend passes this suite unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import make_settings
from roost.storage.base import IndexSpec, Storage, UniqueViolation, open_storage, table_name
from roost.storage.migrations import postgres as postgres_migrations
from roost.storage.migrations import sqlite as sqlite_migrations

NOW = "2026-01-01T00:00:00.000Z"
BACKENDS = ["sqlite-file", "sqlite-memory", "postgres"]
INDEX_DEFINITIONS = {
    "sqlite": "SELECT sql AS definition FROM sqlite_master"
    " WHERE type = 'index' AND name LIKE 'ix_%'",
    "postgres": "SELECT indexdef AS definition FROM pg_indexes WHERE indexname LIKE 'ix_%'",
}
"""Per engine: the definitions of the declared (``ix_``) indexes."""
MIGRATIONS = {"sqlite": sqlite_migrations.MIGRATIONS, "postgres": postgres_migrations.MIGRATIONS}


def engine(storage: Storage) -> str:
    """``sqlite`` or ``postgres``: the adapter module's name."""
    return type(storage).__module__.rsplit(".", 1)[-1]


def database_url(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return {"sqlite-file": "", "sqlite-memory": "sqlite:///:memory:"}[backend]


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    url = database_url(request, request.param)
    backend = open_storage(make_settings(tmp_path, database_url=url))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


async def insert(storage: Storage, collection: str, record_id: str, data: str = "{}") -> None:
    async with storage.write() as conn:
        await conn.execute(
            f"INSERT INTO {table_name(collection)} (id, owner, created, updated, version, data)"
            " VALUES (?, NULL, ?, ?, 1, ?)",
            (record_id, NOW, NOW, data),
        )
        await storage.append_change(conn, collection, record_id, "create", 1, None, NOW)


async def define(storage: Storage, name: str, *indexes: IndexSpec) -> None:
    async with storage.write() as conn:
        await storage.define_collection(conn, name, indexes)


async def test_a_committed_write_is_read_back(storage: Storage) -> None:
    await define(storage, "posts")
    await insert(storage, "posts", "a", '{"title": "x"}')
    async with storage.read() as conn:
        row = await conn.fetch_one("SELECT id, data FROM r_posts")
        assert row == {"id": "a", "data": '{"title": "x"}'}
        assert await conn.fetch_one("SELECT id FROM r_posts WHERE id = 'zz'") is None


async def test_an_error_rolls_the_whole_transaction_back(storage: Storage) -> None:
    await define(storage, "posts")
    with pytest.raises(RuntimeError):
        async with storage.write() as conn:
            await conn.execute(
                "INSERT INTO r_posts (id, created, updated, version, data)"
                " VALUES ('a', ?, ?, 1, '{}')",
                (NOW, NOW),
            )
            await storage.append_change(conn, "posts", "a", "create", 1, None, NOW)
            raise RuntimeError("boom")
    async with storage.read() as conn:
        assert await conn.fetch_all("SELECT id FROM r_posts") == []
    assert await storage.changes_since(0, None, 10) == []
    await insert(storage, "posts", "b")  # the writer is usable again


async def test_changes_are_ordered_filtered_and_limited(storage: Storage) -> None:
    await define(storage, "posts")
    await define(storage, "notes")
    for index in range(5):
        await insert(storage, "posts" if index % 2 == 0 else "notes", f"r{index}")
    changes = await storage.changes_since(0, None, 100)
    assert [c.record_id for c in changes] == ["r0", "r1", "r2", "r3", "r4"]
    positions = [c.position for c in changes]
    assert positions == sorted(positions) and len(set(positions)) == 5
    posts = await storage.changes_since(0, ["posts"], 100)
    assert [c.record_id for c in posts] == ["r0", "r2", "r4"]
    after = await storage.changes_since(positions[1], None, 2)
    assert [c.record_id for c in after] == ["r2", "r3"]
    assert await storage.changes_since(positions[-1], None, 10) == []


async def test_unique_indexes_refuse_duplicates(storage: Storage) -> None:
    await define(storage, "posts", IndexSpec(("slug",), unique=True))
    await insert(storage, "posts", "a", '{"slug": "x"}')
    with pytest.raises(UniqueViolation):
        await insert(storage, "posts", "b", '{"slug": "x"}')
    with pytest.raises(UniqueViolation):
        await insert(storage, "posts", "a", '{"slug": "y"}')
    assert len(await storage.changes_since(0, None, 10)) == 1


PHYSICAL_INDEXES = {"sqlite": 1, "postgres": 2}
"""Indexes per declared index: PostgreSQL adds one ordered for sorting on the last field."""


async def test_declared_indexes_are_synchronised(storage: Storage) -> None:
    async def indexes() -> set[str]:
        async with storage.read() as conn:
            rows = await conn.fetch_all(INDEX_DEFINITIONS[engine(storage)])
        return {row["definition"] for row in rows}

    per_index = PHYSICAL_INDEXES[engine(storage)]
    await define(storage, "posts", IndexSpec(("a",)), IndexSpec(("b", "c"), unique=True))
    first = await indexes()
    assert len(first) == 2 * per_index
    await define(storage, "posts", IndexSpec(("a",)), IndexSpec(("b", "c"), unique=True))
    assert await indexes() == first
    await define(storage, "posts", IndexSpec(("a",)))
    assert len(await indexes()) == per_index
    await define(storage, "posts")
    assert await indexes() == set()


async def test_a_unique_index_over_duplicates_is_refused(storage: Storage) -> None:
    await define(storage, "posts")
    await insert(storage, "posts", "a", '{"slug": "x"}')
    await insert(storage, "posts", "b", '{"slug": "x"}')
    with pytest.raises(UniqueViolation):
        await define(storage, "posts", IndexSpec(("slug",), unique=True))


async def test_dropping_a_collection_drops_its_rows_and_changes(storage: Storage) -> None:
    await define(storage, "posts")
    await define(storage, "notes")
    await insert(storage, "posts", "a")
    await insert(storage, "notes", "b")
    async with storage.write() as conn:
        await storage.drop_collection(conn, "posts")
    assert [c.record_id for c in await storage.changes_since(0, None, 10)] == ["b"]
    await define(storage, "posts")
    async with storage.read() as conn:
        assert await conn.fetch_all("SELECT id FROM r_posts") == []


@pytest.mark.parametrize("backend", ["sqlite-file", "postgres"])
async def test_migrations_run_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url(request, backend))
    for _ in range(2):
        storage = open_storage(settings)
        await storage.open()
        async with storage.read() as conn:
            rows = await conn.fetch_all("SELECT version FROM _migrations ORDER BY version")
        await storage.aclose()
        versions = [m.version for m in MIGRATIONS[engine(storage)]]
        assert [row["version"] for row in rows] == versions == [1, 2]


@pytest.mark.parametrize("backend", ["sqlite-file", "postgres"])
async def test_instances_starting_together_migrate_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url(request, backend))
    storages = [open_storage(settings) for _ in range(3)]
    try:
        await asyncio.gather(*(storage.open() for storage in storages))
        for storage in storages:
            async with storage.read() as conn:
                rows = await conn.fetch_all("SELECT version FROM _migrations ORDER BY version")
            assert [row["version"] for row in rows] == [1, 2]
    finally:
        for storage in storages:
            await storage.aclose()
