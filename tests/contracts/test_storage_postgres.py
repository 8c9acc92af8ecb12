"""What the PostgreSQL adapter adds to the storage contract: errors, timeouts, indexes the
planner uses (the contract itself runs on PostgreSQL in ``test_storage.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import make_settings
from postgres_server import PostgresServer, _free_port
from roost.storage.base import IndexSpec, Storage, StorageError, UniqueViolation, open_storage

NOW = "2026-01-01T00:00:00.000Z"


async def opened(tmp_path: Path, url: str, **overrides: Any) -> Storage:
    storage = open_storage(make_settings(tmp_path, database_url=url, **overrides))
    await storage.open()
    return storage


@pytest.fixture
async def storage(postgres_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    backend = await opened(tmp_path, postgres_url, postgres_statement_timeout_ms=300)
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_both_url_schemes_open_postgres(postgres_url: str, tmp_path: Path) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        storage = await opened(tmp_path, url)
        assert type(storage).__name__ == "PostgresStorage"
        await storage.aclose()


async def test_statements_take_question_marks_and_return_dicts(storage: Storage) -> None:
    async with storage.write() as conn:
        await conn.execute("CREATE TABLE t (a TEXT, b BIGINT)")
        assert await conn.execute("INSERT INTO t VALUES (?, ?), (?, ?)", ("x?", 1, "y", 2)) == 2
        assert await conn.execute("UPDATE t SET b = b + 1 WHERE a <> '?'") == 2
    async with storage.read() as conn:
        rows = await conn.fetch_all("SELECT a, b FROM t WHERE a = ? OR b = ? ORDER BY a", ("x?", 3))
        assert rows == [{"a": "x?", "b": 2}, {"a": "y", "b": 3}]
        assert type(rows[0]) is dict
        assert await conn.fetch_one("SELECT a FROM t WHERE b = ?", (99,)) is None


async def test_a_unique_violation_names_its_index(storage: Storage) -> None:
    async with storage.write() as conn:
        await storage.define_collection(conn, "posts", [IndexSpec(("slug",), unique=True)])
    insert = "INSERT INTO r_posts (id, created, updated, version, data) VALUES (?, ?, ?, 1, ?)"
    async with storage.write() as conn:
        await conn.execute(insert, ("a", NOW, NOW, '{"slug": "x"}'))
    with pytest.raises(UniqueViolation) as caught:
        async with storage.write() as conn:
            await conn.execute(insert, ("b", NOW, NOW, '{"slug": "x"}'))
    assert caught.value.index is not None and caught.value.index.startswith("ix_posts_")


async def test_a_declared_index_serves_queries_on_its_field(storage: Storage) -> None:
    async with storage.write() as conn:
        await storage.define_collection(conn, "posts", [IndexSpec(("meta.slug",))])
    field = storage.dialect.field_sql("meta.slug")
    async with storage.write() as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch_all(
            f"EXPLAIN SELECT id FROM r_posts WHERE {field} = ?::text::jsonb", ('"x"',)
        )
    plan = "\n".join(row["QUERY PLAN"] for row in rows)
    assert "ix_posts_" in plan, plan


async def test_a_statement_over_the_timeout_is_a_storage_error(storage: Storage) -> None:
    with pytest.raises(StorageError):
        async with storage.read() as conn:
            await conn.fetch_one("SELECT pg_sleep(2)")
    async with storage.read() as conn:  # the pool is usable again
        assert await conn.fetch_one("SELECT 1 AS one") == {"one": 1}


async def test_no_server_is_a_storage_error(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/roost"
    storage = open_storage(make_settings(tmp_path, database_url=url, postgres_timeout_seconds=2))
    with pytest.raises(StorageError):
        await storage.open()
    await storage.aclose()


async def test_a_lost_server_is_a_storage_error(
    postgres_server_factory: Callable[..., PostgresServer], tmp_path: Path
) -> None:
    server = postgres_server_factory()
    storage = await opened(tmp_path, server.url, postgres_timeout_seconds=2)
    try:
        server.stop()
        with pytest.raises(StorageError):
            async with storage.read() as conn:
                await conn.fetch_one("SELECT 1")
        with pytest.raises(StorageError):
            await storage.changes_since(0, None, 10)
        server.start()
        async with storage.read() as conn:  # reconnects
            assert await conn.fetch_one("SELECT 1 AS one") == {"one": 1}
    finally:
        await storage.aclose()
