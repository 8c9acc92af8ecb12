"""The embedded default: one SQLite file in WAL mode.

**Writes** run on the event loop, on one writer connection: inside a write transaction
a statement takes microseconds (the transaction already holds SQLite's write lock, so
nothing waits), less than handing it to a thread costs. What waits runs elsewhere:
``BEGIN IMMEDIATE`` never blocks (busy timeout 0) but retries with a sleep while another
process writes; the commit, which waits for the disk, and schema changes, which may
rewrite a table, run on the writer's own thread. Commits are grouped: write blocks that
queue while one runs join its transaction, each inside a savepoint (a failing block
rolls back alone), and one commit makes them all durable; no block is acknowledged
before that commit, and if it fails every block of the group fails.

**Reads** also run first on the event loop, on one read-only connection: a record by
id or a page through an index takes tens of microseconds. That connection never waits:
SQLite's progress handler cuts a query off after ``INLINE_BUDGET_SECONDS``, and it never
waits for a lock (busy timeout 0); a query cut off or locked out runs again on one of a
pool of reader threads (aiosqlite). So awaiting a statement is not a point where other
tasks run: requests are served in the order they come (a yield per read measured 3.5
times the p99 under load), and a loop that polls the database must sleep between polls.

Change positions are SQLite rowids taken inside the serialised write transaction, so
position order is commit order and a reader can never see a later position before an
earlier one.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from roost.query.sqlite import SQLiteDialect
from roost.settings import Settings
from roost.storage.base import (
    STATEMENTS,
    Change,
    Connection,
    IndexSpec,
    LogState,
    MissingTable,
    Observe,
    Op,
    PoolUsage,
    Row,
    Statement,
    Storage,
    StorageError,
    UniqueViolation,
    table_name,
    traced,
)
from roost.storage.migrations.runner import migrate
from roost.storage.migrations.sqlite import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000
MMAP_BYTES = 256 * 1024 * 1024
"""Reads through a memory map: no system call per page once the file is in the cache."""
INLINE_BUDGET_SECONDS = 0.001
"""How long a read may hold the event loop before it goes to a reader thread instead."""
PROGRESS_STEPS = 1000
"""SQLite virtual machine steps between two checks of that budget."""
INDEX_PREFIX = "ix_"
BEGIN_RETRY_SECONDS = (0.0005, 0.005)
"""First and longest sleep between two tries to begin a write while another process writes."""


def database_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``; ``:memory:``."""
    rest = url.removeprefix("sqlite://")
    if rest in ("", "/", "/:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError("a SQLite URL looks like sqlite:///relative/path.db or sqlite:////abs.db")
    return rest[1:]


class ReadConnection(Connection):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise StorageError("a read connection only reads")


class ReaderConnection(ReadConnection):
    """A reader thread's connection (aiosqlite)."""

    def __init__(self, conn: aiosqlite.Connection, observe: Observe) -> None:
        self._conn = conn
        self._observe = observe

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            with Statement(sql, self._observe):
                rows = list(await self._conn.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise _operational_error(exc) from exc
        names = rows[0].keys() if rows else []
        return [dict(zip(names, row, strict=True)) for row in rows]


class WriterConnection(Connection):
    """The writer inside a write block: statements on the event loop; ``off_loop`` ones
    (schema changes, bulk deletes) on the writer's thread."""

    def __init__(
        self, conn: sqlite3.Connection, thread: ThreadPoolExecutor, observe: Observe
    ) -> None:
        self._conn = conn
        self._thread = thread
        self._observe = observe

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with Statement(sql, self._observe):
            return _run(self._conn, sql, params).rowcount

    async def off_loop(self, sql: str, params: Sequence[Any] = ()) -> int:
        loop = asyncio.get_running_loop()
        with Statement(sql, self._observe):
            cursor = await loop.run_in_executor(self._thread, _run, self._conn, sql, params)
        return cursor.rowcount

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with Statement(sql, self._observe):
            return _rows(_run(self._conn, sql, params))


def _run(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
    try:
        return conn.execute(sql, params)
    except sqlite3.IntegrityError as exc:
        raise _integrity_error(exc) from exc
    except sqlite3.OperationalError as exc:
        raise _operational_error(exc) from exc


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    rows = cursor.fetchall()
    names = [column[0] for column in cursor.description] if rows else []
    return [dict(zip(names, row, strict=True)) for row in rows]


class Budget:
    """The progress handler of the event loop's connection: true (stop) past ``deadline``."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline = 0.0

    def __call__(self) -> bool:
        return time.perf_counter() > self.deadline


class InlineConnection(ReadConnection):
    """Reads on the event loop within a time budget; a read that exceeds it, or finds the
    database locked, runs again on a reader thread (``fallback``)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        budget: Budget,
        fallback: Callable[[], AbstractAsyncContextManager[Connection]],
        observe: Observe,
    ) -> None:
        self._conn = conn
        self._budget = budget
        self._fallback = fallback
        self._observe = observe

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        started = time.perf_counter()
        self._budget.deadline = started + INLINE_BUDGET_SECONDS
        try:
            with traced(sql):
                rows = _rows(self._conn.execute(sql, params))
        except sqlite3.OperationalError as exc:
            if not any(word in str(exc) for word in ("interrupted", "locked", "busy")):
                raise _operational_error(exc) from exc
        else:
            STATEMENTS.count += 1
            self._observe(time.perf_counter() - started)
            return rows
        async with self._fallback() as conn:  # counted and timed there
            return await conn.fetch_all(sql, params)


def _operational_error(exc: sqlite3.OperationalError) -> StorageError:
    message = str(exc)
    return MissingTable(message) if message.startswith("no such table") else StorageError(message)


def _integrity_error(exc: sqlite3.IntegrityError) -> Exception:
    message = str(exc)
    if message.startswith("UNIQUE constraint failed"):
        return UniqueViolation(message)
    return StorageError(message)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL (on the writer's thread), retrying: the switch can report "locked"
    without waiting on the busy handler while another process opens the same file."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise StorageError(str(exc)) from exc
            time.sleep(0.05)


@dataclass
class Group:
    """Write blocks sharing one transaction, made durable by one commit."""

    committed: asyncio.Future[None]
    committer: asyncio.Task[None] | None = None


class SQLiteStorage(Storage):
    dialect = SQLiteDialect()
    backend = "sqlite"

    def __init__(self, settings: Settings) -> None:
        self._path = database_path(settings.database_url)
        self._synchronous = settings.sqlite_synchronous
        self._reader_count = settings.sqlite_readers
        self._writer: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="roost-sqlite-writer")
        self._group: Group | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []
        self._inline: sqlite3.Connection | None = None
        self._budget = Budget()
        self._write_lock = asyncio.Lock()

    @property
    def in_memory(self) -> bool:
        return self._path == ":memory:"

    def _connect_writer(self) -> sqlite3.Connection:
        """On the writer's thread: opening may wait for another process's lock."""
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not self.in_memory:
            _enable_wal(conn)
        for pragma in (f"synchronous = {self._synchronous}", "foreign_keys = ON"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("PRAGMA busy_timeout = 0")  # from now on, write() waits on the loop
        self.dialect.register(conn)
        return conn

    async def _connect_reader(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        self._all.append(conn)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        for name, nargs, func in self.dialect.functions():
            await conn.create_function(name, nargs, func, deterministic=True)
        return conn

    async def open(self) -> None:
        if not self.in_memory:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._thread, self._connect_writer)
        async with self.write() as conn:
            await migrate(conn, MIGRATIONS)
        if not self.in_memory:  # an in-memory database is private to its one connection
            for _ in range(self._reader_count):
                self._readers.put_nowait(await self._connect_reader())
            self._inline = self._connect_inline()

    def _connect_inline(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None)
        for pragma in ("busy_timeout = 0", "query_only = ON", f"mmap_size = {MMAP_BYTES}"):
            conn.execute(f"PRAGMA {pragma}")
        self.dialect.register(conn)
        conn.set_progress_handler(self._budget, PROGRESS_STEPS)
        return conn

    @asynccontextmanager
    async def read(self, replica: bool = False) -> AsyncIterator[Connection]:
        if self.in_memory:
            async with self._write_lock:
                yield WriterConnection(self._require_writer(), self._thread, self.timing.read)
        elif self._inline is None:
            raise StorageError("storage is not open")
        else:
            yield InlineConnection(self._inline, self._budget, self._on_thread, self.timing.read)

    @asynccontextmanager
    async def _on_thread(self) -> AsyncIterator[Connection]:
        conn = await self._readers.get()
        try:
            yield ReaderConnection(conn, self.timing.read)
        finally:
            self._readers.put_nowait(conn)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        if self.in_memory:  # the one connection, held: nothing else reads or writes
            async with self.read() as conn:
                yield conn
            return
        raw = await self._readers.get()
        try:
            await raw.execute("BEGIN")
            try:
                yield ReaderConnection(raw, self.timing.read)
            finally:
                await raw.execute("ROLLBACK")
        finally:
            self._readers.put_nowait(raw)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """One block of a group commit: see the module's docstring."""
        async with self._write_lock:
            writer = self._require_writer()
            if self._group is not None and not writer.in_transaction:
                self._fail(self._group, "the transaction ended before its commit")
            if self._group is None:
                await self._begin(writer)
                group = self._group = Group(asyncio.get_running_loop().create_future())
                if not self.in_memory:  # it waits behind the blocks queued by then
                    group.committer = asyncio.create_task(self._commit_when_free(group))
            group = self._group
            _run(writer, "SAVEPOINT block", ())
            conn = WriterConnection(writer, self._thread, self.timing.write)
            try:
                yield conn
            except BaseException:
                if writer.in_transaction:
                    _run(writer, "ROLLBACK TO block", ())
                    _run(writer, "RELEASE block", ())
                else:  # SQLite ended the whole transaction: the group's other blocks too
                    self._fail(group, "the transaction was rolled back by an error")
                raise
            _run(writer, "RELEASE block", ())
            if self.in_memory:  # nothing to wait for, and reads share this connection
                await self._commit(group)
        await asyncio.shield(group.committed)
        await self._committed_block(conn)

    async def _begin(self, writer: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried with sleeps while another process writes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
        delay, longest = BEGIN_RETRY_SECONDS
        while True:
            try:
                writer.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StorageError(str(exc)) from exc
                if loop.time() > deadline:
                    raise StorageError(f"{exc} (another process writes)") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def _commit_when_free(self, group: Group) -> None:
        async with self._write_lock:
            await self._commit(group)

    async def _commit(self, group: Group) -> None:
        """Commit ``group`` (with the write lock held) on the writer's thread."""
        if group.committed.done():  # failed already
            return
        self._group = None
        try:
            writer = self._require_writer()
            if not writer.in_transaction:
                raise StorageError("the transaction ended before its commit")
            if self.in_memory:
                writer.execute("COMMIT")
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._thread, writer.execute, "COMMIT")
        except Exception as exc:  # the disk, a deferred constraint, a closed connection
            if self._writer is not None and self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            self._fail(group, str(exc))
        else:
            group.committed.set_result(None)

    def _fail(self, group: Group, reason: str) -> None:
        """No block of ``group`` is kept: each one's ``write()`` raises StorageError."""
        if self._group is group:
            self._group = None
        if not group.committed.done():
            group.committed.set_exception(StorageError(reason))
            group.committed.exception()  # retrieved: a group of failed blocks has no waiter

    def _require_writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StorageError("storage is not open")
        return self._writer

    async def append_change(
        self,
        conn: Connection,
        collection: str,
        record_id: str,
        op: Op,
        version: int,
        owner: str | None,
        at: str,
        record: str | None = None,
        before: str | None = None,
    ) -> int:
        row = await conn.fetch_one(
            "INSERT INTO _changes (collection, record_id, op, version, owner, at, record, before)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING position",
            (collection, record_id, op, version, owner, at, record, before),
        )
        assert row is not None
        conn.touch(collection, record_id)
        return int(row["position"])

    async def changes_since(
        self, position: int, collections: Sequence[str] | None, limit: int
    ) -> list[Change]:
        sql = "SELECT * FROM _changes WHERE position > ?"
        params: list[Any] = [position]
        if collections is not None:
            sql += f" AND collection IN ({', '.join('?' * len(collections))})"
            params.extend(collections)
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        async with self.read() as conn:
            rows = await conn.fetch_all(sql, params)
        return [Change(**row) for row in rows]

    async def log_state(self) -> LogState:
        async with self.read() as conn:
            row = await conn.fetch_one(
                "SELECT epoch, floor, (SELECT seq FROM sqlite_sequence"
                " WHERE name = '_changes') AS head FROM _log"
            )
        assert row is not None
        return LogState(row["epoch"], row["floor"], row["head"] or 0)

    async def _raise_floor(self, before: str) -> int | None:
        async with self.write() as conn:
            row = await conn.fetch_one(
                "SELECT max(position) AS last FROM _changes WHERE at < ?", (before,)
            )
            last: int | None = None if row is None else row["last"]
            if last is not None:
                await conn.execute("UPDATE _log SET floor = max(floor, ?)", (last,))
        return last

    async def _delete_changes(self, through: int, limit: int) -> int:
        async with self.write() as conn:
            return await _off_loop(conn)(
                "DELETE FROM _changes WHERE position IN (SELECT position FROM _changes"
                " WHERE position <= ? ORDER BY position LIMIT ?)",
                (through, limit),
            )

    async def define_collection(
        self, conn: Connection, name: str, indexes: Sequence[IndexSpec]
    ) -> None:
        table = table_name(name)
        slow = _off_loop(conn)
        await slow(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, owner TEXT,"
            " created TEXT NOT NULL, updated TEXT NOT NULL, version INTEGER NOT NULL,"
            " data TEXT NOT NULL)"
        )
        # by owner in id order: the usual "my records" page reads just its rows
        await slow(f'DROP INDEX IF EXISTS "owner_{name}"')  # (owner) until 2026-11
        await slow(f'CREATE INDEX IF NOT EXISTS "owner_id_{name}" ON {table} (owner, id)')
        wanted = {index_name(name, spec, self._columns(spec)): spec for spec in indexes}
        existing = {
            row["name"]
            for row in await conn.fetch_all(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                " AND name LIKE ?",
                (f"r_{name}", f"{INDEX_PREFIX}%"),
            )
        }
        for stale in existing - wanted.keys():
            await slow(f'DROP INDEX "{stale}"')
        for index, spec in wanted.items():
            if index in existing:
                continue
            unique = "UNIQUE " if spec.unique else ""
            columns = ", ".join(self._columns(spec))
            await slow(f'CREATE {unique}INDEX "{index}" ON {table} ({columns})')

    def _columns(self, spec: IndexSpec) -> list[str]:
        """The fields' expressions, then ``id`` unless unique: a page filtered on the first
        fields and sorted on the last (then on ``id``, the tie-breaker) is read in index
        order and stops at its limit; a unique index must stay on its fields alone."""
        columns = [self.dialect.field_sql(path) for path in spec.fields]
        return columns if spec.unique or "id" in spec.fields else [*columns, "id"]

    async def build_indexes(self, name: str, indexes: Sequence[IndexSpec]) -> None:
        """Nothing: with one writer, ``define_collection`` builds them in its transaction."""

    async def drop_collection(self, conn: Connection, name: str) -> None:
        slow = _off_loop(conn)
        await slow(f"DROP TABLE IF EXISTS {table_name(name)}")
        await slow("DELETE FROM _changes WHERE collection = ?", (name,))

    def pools(self) -> list[PoolUsage]:
        """The writer, and the reader threads' connections (a file's; an in-memory database
        has the writer only). The event loop's own read connection is no pool."""
        writing = int(self._write_lock.locked())
        usage = [PoolUsage("writer", writing, 1 - writing, 1)]
        if not self.in_memory:
            idle = self._readers.qsize()
            usage.append(PoolUsage("readers", len(self._all) - idle, idle, self._reader_count))
        return usage

    async def aclose(self) -> None:
        async with self._write_lock:
            if self._group is not None:  # its committer has not had the lock yet
                await self._commit(self._group)
            if self._inline is not None:
                self._inline.close()
                self._inline = None
            for conn in self._all:
                await conn.close()
            self._all.clear()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._thread.shutdown(wait=True)


def _off_loop(conn: Connection) -> Callable[..., Awaitable[int]]:
    """How an adapter method runs statements that may take long (schema changes, bulk
    deletes): on the writer's thread."""
    assert isinstance(conn, WriterConnection), "a SQLite write block's connection"
    return conn.off_loop


def index_name(collection: str, spec: IndexSpec, columns: Sequence[str]) -> str:
    """A stable name for a declared index, so redeclaring it changes nothing (and an index
    of an older layout is replaced)."""
    digest = hashlib.sha256(repr((spec.fields, spec.unique, *columns)).encode()).hexdigest()[:12]
    return f"{INDEX_PREFIX}{collection}_{digest}"
