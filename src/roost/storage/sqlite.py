"""The embedded default: one SQLite file in WAL mode.

One writer connection (writes are serialised here and, across worker processes, by
SQLite's own lock with a busy timeout) and a small pool of reader connections, each on
its own thread (aiosqlite), so no query runs on the event loop. Change positions are
SQLite rowids taken inside the serialised write transaction, so position order is
commit order and a reader can never see a later position before an earlier one.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from roost.query.sqlite import SQLiteDialect
from roost.settings import Settings
from roost.storage.base import (
    Change,
    Connection,
    IndexSpec,
    Op,
    Row,
    Storage,
    StorageError,
    UniqueViolation,
    table_name,
)
from roost.storage.migrations.runner import migrate
from roost.storage.migrations.sqlite import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000
INDEX_PREFIX = "ix_"


def database_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``; ``:memory:``."""
    rest = url.removeprefix("sqlite://")
    if rest in ("", "/", "/:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError("a SQLite URL looks like sqlite:///relative/path.db or sqlite:////abs.db")
    return rest[1:]


class SQLiteConnection(Connection):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _integrity_error(exc) from exc
        except sqlite3.OperationalError as exc:
            raise StorageError(str(exc)) from exc
        return cursor.rowcount

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            rows = await self._conn.execute_fetchall(sql, params)
        except sqlite3.OperationalError as exc:
            raise StorageError(str(exc)) from exc
        return [dict(zip(row.keys(), tuple(row), strict=True)) for row in rows]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


def _integrity_error(exc: sqlite3.IntegrityError) -> Exception:
    message = str(exc)
    if message.startswith("UNIQUE constraint failed"):
        return UniqueViolation(message)
    return StorageError(message)


async def _enable_wal(conn: aiosqlite.Connection) -> None:
    """Switch to WAL, retrying: the switch can report "locked" without waiting
    on the busy handler while another process opens the same file."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() > deadline:
                raise StorageError(str(exc)) from exc
            await asyncio.sleep(0.05)


class SQLiteStorage(Storage):
    dialect = SQLiteDialect()

    def __init__(self, settings: Settings) -> None:
        self._path = database_path(settings.database_url)
        self._synchronous = settings.sqlite_synchronous
        self._reader_count = settings.sqlite_readers
        self._writer: aiosqlite.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []
        self._write_lock = asyncio.Lock()

    @property
    def in_memory(self) -> bool:
        return self._path == ":memory:"

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        self._all.append(conn)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not self.in_memory:
            await _enable_wal(conn)
        await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        await conn.execute("PRAGMA foreign_keys = ON")
        for name, nargs, func in self.dialect.functions():
            await conn.create_function(name, nargs, func, deterministic=True)
        return conn

    async def open(self) -> None:
        if not self.in_memory:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        async with self.write() as conn:
            await migrate(conn, MIGRATIONS)
        if not self.in_memory:  # an in-memory database is private to its one connection
            for _ in range(self._reader_count):
                self._readers.put_nowait(await self._connect())

    @asynccontextmanager
    async def read(self, replica: bool = False) -> AsyncIterator[Connection]:
        if self.in_memory:
            async with self._write_lock:
                yield SQLiteConnection(self._require_writer())
            return
        conn = await self._readers.get()
        try:
            yield SQLiteConnection(conn)
        finally:
            self._readers.put_nowait(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        writer = self._require_writer()
        async with self._write_lock:
            try:
                if writer.in_transaction:  # a rollback was interrupted by a second cancel
                    await writer.execute("ROLLBACK")
                await writer.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(str(exc)) from exc
            try:
                yield SQLiteConnection(writer)
            except BaseException:
                await writer.execute("ROLLBACK")
                raise
            try:
                await writer.execute("COMMIT")
            except sqlite3.Error as exc:
                if writer.in_transaction:
                    await writer.execute("ROLLBACK")
                raise StorageError(str(exc)) from exc

    def _require_writer(self) -> aiosqlite.Connection:
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
    ) -> int:
        row = await conn.fetch_one(
            "INSERT INTO _changes (collection, record_id, op, version, owner, at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING position",
            (collection, record_id, op, version, owner, at),
        )
        assert row is not None
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

    async def define_collection(
        self, conn: Connection, name: str, indexes: Sequence[IndexSpec]
    ) -> None:
        table = table_name(name)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, owner TEXT,"
            " created TEXT NOT NULL, updated TEXT NOT NULL, version INTEGER NOT NULL,"
            " data TEXT NOT NULL)"
        )
        await conn.execute(f'CREATE INDEX IF NOT EXISTS "owner_{name}" ON {table} (owner)')
        wanted = {index_name(name, spec): spec for spec in indexes}
        existing = {
            row["name"]
            for row in await conn.fetch_all(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                " AND name LIKE ?",
                (f"r_{name}", f"{INDEX_PREFIX}%"),
            )
        }
        for stale in existing - wanted.keys():
            await conn.execute(f'DROP INDEX "{stale}"')
        for index, spec in wanted.items():
            if index in existing:
                continue
            columns = ", ".join(self.dialect.field_sql(path) for path in spec.fields)
            unique = "UNIQUE " if spec.unique else ""
            await conn.execute(f'CREATE {unique}INDEX "{index}" ON {table} ({columns})')

    async def build_indexes(self, name: str, indexes: Sequence[IndexSpec]) -> None:
        """Nothing: with one writer, ``define_collection`` builds them in its transaction."""

    async def drop_collection(self, conn: Connection, name: str) -> None:
        await conn.execute(f"DROP TABLE IF EXISTS {table_name(name)}")
        await conn.execute("DELETE FROM _changes WHERE collection = ?", (name,))

    async def aclose(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()
        self._writer = None


def index_name(collection: str, spec: IndexSpec) -> str:
    """A stable name for a declared index, so redeclaring it changes nothing."""
    digest = hashlib.sha256(repr((spec.fields, spec.unique)).encode()).hexdigest()[:12]
    return f"{INDEX_PREFIX}{collection}_{digest}"
