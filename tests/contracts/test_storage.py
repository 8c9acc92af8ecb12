"""The storage contract: every backend passes this suite unchanged."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import make_settings
from roost.storage import base
from roost.storage.base import (
    IndexSpec,
    MissingTable,
    Storage,
    StorageError,
    UniqueViolation,
    open_storage,
    table_name,
)
from roost.storage.migrations import postgres as postgres_migrations
from roost.storage.migrations import sqlite as sqlite_migrations
from roost.storage.sqlite import Budget, InlineConnection, SQLiteStorage

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


async def test_changes_keep_record_states_and_pruning_raises_the_floor(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "PRUNE_BATCH", 2)  # several batches
    await define(storage, "posts")
    start = await storage.log_state()
    assert (start.floor, start.head) == (0, 0) and len(start.epoch) == 16
    async with storage.write() as conn:
        await storage.append_change(
            conn, "posts", "a", "update", 2, None, NOW, record='{"v":2}', before='{"v":1}'
        )
    for index in range(4):
        await insert(storage, "posts", f"r{index}")
    changes = await storage.changes_since(0, None, 100)
    assert (changes[0].record, changes[0].before) == ('{"v":2}', '{"v":1}')
    assert await storage.prune_changes("2000-01-01T00:00:00.000Z") == 0  # nothing that old
    later = "2027-01-01T00:00:00.000Z"
    async with storage.write() as conn:  # made after the cutoff: kept
        await storage.append_change(conn, "posts", "late", "create", 1, None, later)
    assert await storage.prune_changes("2026-06-01T00:00:00.000Z") == 5
    log = await storage.log_state()
    assert (log.epoch, log.floor) == (start.epoch, changes[-1].position)
    assert [c.record_id for c in await storage.changes_since(0, None, 100)] == ["late"]
    assert log.head == (await storage.changes_since(0, None, 100))[-1].position


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


async def test_a_failing_block_rolls_back_alone_among_concurrent_ones(storage: Storage) -> None:
    await define(storage, "posts")

    async def block(record_id: str, fail: bool) -> None:
        async with storage.write() as conn:
            await conn.execute(
                f"INSERT INTO {table_name('posts')} (id, owner, created, updated, version,"
                " data) VALUES (?, NULL, ?, ?, 1, '{}')",
                (record_id, NOW, NOW),
            )
            await storage.append_change(conn, "posts", record_id, "create", 1, None, NOW)
            if fail:
                raise LookupError(record_id)

    ids = [f"r{n:02}" for n in range(20)]
    outcomes = await asyncio.gather(
        *(block(record_id, n % 3 == 1) for n, record_id in enumerate(ids)),
        return_exceptions=True,
    )
    failed = [record_id for n, record_id in enumerate(ids) if n % 3 == 1]
    assert [repr(o) for o in outcomes if o is not None] == [repr(LookupError(i)) for i in failed]
    async with storage.read() as conn:
        rows = await conn.fetch_all(f"SELECT id FROM {table_name('posts')} ORDER BY id")
    kept = sorted(set(ids) - set(failed))
    assert [row["id"] for row in rows] == kept
    assert sorted(c.record_id for c in await storage.changes_since(0, None, 100)) == kept


async def test_a_failed_group_commit_fails_every_block_in_it(tmp_path: Path) -> None:
    """SQLite commits the blocks queued together at once; when that commit fails (here a
    deferred foreign key), no block of the group is acknowledged and none is kept."""
    storage = open_storage(make_settings(tmp_path))
    await storage.open()
    try:
        async with storage.write() as conn:
            await conn.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
            await conn.execute(
                "CREATE TABLE child (id TEXT PRIMARY KEY, parent TEXT REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )

        async def insert_child(child: str, parent: str) -> None:
            async with storage.write() as conn:
                await conn.execute("INSERT INTO child VALUES (?, ?)", (child, parent))

        async with storage.write() as conn:
            await conn.execute("INSERT INTO parent VALUES ('p')")
        outcomes = await asyncio.gather(
            insert_child("good", "p"), insert_child("orphan", "nobody"), return_exceptions=True
        )
        assert [type(outcome) for outcome in outcomes] == [StorageError, StorageError]
        await insert_child("after", "p")  # the next group is fine
        async with storage.read() as conn:
            assert await conn.fetch_all("SELECT id FROM child") == [{"id": "after"}]
    finally:
        await storage.aclose()


async def test_a_group_whose_transaction_ends_early_keeps_nothing(tmp_path: Path) -> None:
    """When a block's error ends SQLite's whole transaction (here the block rolls it back
    itself), the blocks grouped before it are lost: none of them may be acknowledged, and
    a block queued after starts a group of its own."""
    storage = open_storage(make_settings(tmp_path))
    await storage.open()
    try:
        await define(storage, "posts")

        async def block(record_id: str, end_transaction: bool = False) -> None:
            async with storage.write() as conn:
                await conn.execute(
                    f"INSERT INTO {table_name('posts')} (id, owner, created, updated,"
                    " version, data) VALUES (?, NULL, ?, ?, 1, '{}')",
                    (record_id, NOW, NOW),
                )
                if end_transaction:
                    await conn.execute("ROLLBACK")
                    raise LookupError(record_id)

        outcomes = await asyncio.gather(
            block("first"),
            block("breaker", end_transaction=True),
            block("after"),
            return_exceptions=True,
        )
        assert [type(outcome) for outcome in outcomes] == [StorageError, LookupError, type(None)]
        async with storage.read() as conn:
            rows = await conn.fetch_all(f"SELECT id FROM {table_name('posts')}")
        assert rows == [{"id": "after"}]
    finally:
        await storage.aclose()


async def test_reads_see_commits_and_name_missing_tables(storage: Storage) -> None:
    await define(storage, "posts")
    query = f"SELECT id, data FROM {table_name('posts')} WHERE id = ?"
    async with storage.read(replica=True) as conn:
        assert await conn.fetch_one(query, ("a",)) is None
    await insert(storage, "posts", "a", '{"n": 1}')
    async with storage.read(replica=True) as conn:
        assert await conn.fetch_one(query, ("a",)) == {"id": "a", "data": '{"n": 1}'}
    async with storage.write() as conn:
        await storage.drop_collection(conn, "posts")
    async with storage.read() as conn:
        with pytest.raises(MissingTable):
            await conn.fetch_one(query, ("a",))


async def test_a_long_sqlite_read_leaves_the_event_loop(tmp_path: Path) -> None:
    """Reads start on the event loop; one that outlasts its budget finishes on a reader
    thread while the loop goes on serving others."""
    storage = open_storage(make_settings(tmp_path))
    await storage.open()
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        async with storage.read() as conn:
            row = await conn.fetch_one(
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c"
                " WHERE n < 2000000) SELECT count(*) AS n FROM c"
            )
        assert row == {"n": 2_000_000}
        assert len(gaps) >= 5 and max(gaps) < 0.2, (len(gaps), max(gaps))
    finally:
        ticker.cancel()
        await storage.aclose()


async def test_a_sqlite_read_that_finds_a_lock_goes_to_a_reader_thread(tmp_path: Path) -> None:
    """The event loop's connection never waits for a lock (busy timeout 0): SQLite's
    "locked" sends the query to its fallback (the storage's reader threads). WAL readers
    of one file never see it while the storage is open, so here that connection is on
    another file, locked."""
    storage = open_storage(make_settings(tmp_path))
    await storage.open()
    locker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        await define(storage, "posts")
        await insert(storage, "posts", "a")
        locker.execute("BEGIN EXCLUSIVE")
        inline = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        inline.execute("PRAGMA busy_timeout = 0")
        assert isinstance(storage, SQLiteStorage)
        budget = Budget()
        inline.set_progress_handler(budget, 1000)
        conn = InlineConnection(inline, budget, storage.read, storage.timing.read)
        query = "SELECT id FROM r_posts WHERE id = 'a'"
        assert await asyncio.wait_for(conn.fetch_one(query), 1) == {"id": "a"}
        inline.close()
    finally:
        locker.close()
        await storage.aclose()


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
        assert [row["version"] for row in rows] == versions == [1, 2, 3]


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
            assert [row["version"] for row in rows] == [1, 2, 3]
    finally:
        for storage in storages:
            await storage.aclose()
