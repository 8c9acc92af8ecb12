"""The scale-out backend: PostgreSQL through an asyncpg connection pool.

**Statements.** Services write SQL with ``?`` placeholders; :func:`numbered` turns each
``?`` outside quoted text and comments into ``$1..$n`` (translations are cached), rows
come back as dicts, a unique violation becomes ``UniqueViolation`` and a lost connection,
a timeout or a cancelled statement becomes ``StorageError``. ``read()`` lends a pooled
connection (each statement commits on its own); ``write()`` is one transaction on one.

**Change log.** PostgreSQL transactions commit in any order, so a position taken at insert
time (a sequence) could become visible after a larger one a reader already passed. Here a
change is inserted with ``position`` NULL and its writer's transaction id (``xid``), and a
*stamping* step gives positions later, serialised by an advisory lock: it numbers, in
``(xid, id)`` order, only changes whose writers have all finished (``xid`` below the
``xmin`` of the current snapshot), continuing from ``_changes_counter``. So every stamped
position is larger than every position stamped before it, and a reader that asks for
``position > p`` can never skip one. ``changes_since`` stamps before it reads (a cheap
check first). A change becomes readable once every transaction older than its writer's
has finished: a long transaction anywhere on the server delays the log, never reorders it.

**Collections.** One table each, ``data`` JSONB. Each declared index is two expression
indexes (``_indexes``): one on exactly ``dialect.field_sql(path)`` of each field, for
filters, and one ordered for pages sorted on the last field. On an existing table
``build_indexes`` builds new ones ``CONCURRENTLY`` before the definition transaction, so
writes go on; ``define_collection`` creates those still missing (on a new, empty table)
inside the caller's transaction.

**Replicas.** ``read(replica=True)`` borrows from a replica that ``Replicas`` (see
``storage/replicas.py``) holds usable and past the request's ``CONSISTENCY`` position;
``write()`` records the primary's WAL position after each commit.

**Migrations** run in one transaction under an advisory lock, so instances starting
together migrate exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import asyncpg

from roost.query.parser import parse_path
from roost.query.postgres import PostgresDialect, setup_sql
from roost.settings import Settings
from roost.storage.base import (
    CONSISTENCY,
    Change,
    Connection,
    Consistency,
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
    parse_lsn,
    table_name,
)
from roost.storage.migrations.postgres import MIGRATIONS
from roost.storage.migrations.runner import migrate
from roost.storage.replicas import Replicas


class ServiceDialect(PostgresDialect):
    """The dialect as the services use it: ``?`` placeholders, numbered by :func:`numbered`
    once the services have joined their clauses (each clause alone would count from 1)."""

    def placeholder(self, index: int) -> str:
        return "?"


POSITION = "SELECT pg_current_wal_insert_lsn()::text AS lsn"
"""Read after a commit: a replica that has replayed up to here has the commit. The insert
position, not ``pg_current_wal_lsn()`` (written so far): with ``synchronous_commit`` off a
commit returns before its record is written, and the write position can be short of it."""
REPLICA_CONNECT_TIMEOUT = 2.0
"""Seconds to connect to a replica before the read goes to the primary instead."""
INDEX_PREFIX = "ix_"
INDEX_BUILD_TIMEOUT = 900
"""Seconds an index build may take (it runs outside the statement timeout)."""
MAX_IDENTIFIER = 63
"""PostgreSQL cuts longer names (NAMEDATALEN - 1 bytes)."""

LOCK_CLASS = 0x526F6F73
"""First key of Roost's two-key advisory locks ("Roos")."""
MIGRATIONS_LOCK = 1
STAMP_LOCK = 2
COLLECTION_LOCK_CLASS = LOCK_CLASS + 1
"""Advisory locks per collection name: ``(COLLECTION_LOCK_CLASS, hashtext(name))``."""

FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    # the server ended the session (restart, pg_terminate_backend) while the connection sat
    # idle in the pool: until the socket's EOF arrives, the next statement finds the
    # protocol still consuming the FATAL message ("cannot switch to state ...")
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # statement timeout, admin shutdown, cannot connect
    asyncpg.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.LockNotAvailableError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.UndefinedTableError,  # a collection dropped since the caller looked it up
)
"""Errors of the database itself, not of Roost's SQL: they become ``StorageError``."""

UNSTAMPED = (
    "SELECT EXISTS (SELECT 1 FROM _changes WHERE position IS NULL"
    " AND xid < pg_snapshot_xmin(pg_current_snapshot())) AS pending"
)
STAMP = """
WITH todo AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY xid, id) AS n
    FROM _changes
    WHERE position IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot())
), bump AS (
    UPDATE _changes_counter SET last = last + (SELECT count(*) FROM todo)
    WHERE EXISTS (SELECT 1 FROM todo)
    RETURNING last - (SELECT count(*) FROM todo) AS base
)
UPDATE _changes AS c SET position = bump.base + todo.n
FROM todo, bump
WHERE c.id = todo.id
"""
"""Numbers every change whose writer and all older transactions have finished, in
``(xid, id)`` order, after the last position given; run under ``STAMP_LOCK``."""


@functools.lru_cache(maxsize=2048)
def numbered(sql: str) -> str:
    """``sql`` with each ``?`` placeholder replaced by ``$1``, ``$2``, ... in text order.

    A ``?`` inside a string literal (``'...'``, ``E'...'``, ``$tag$...$tag$``), a quoted
    identifier or a comment is left alone. SQL that already numbers its parameters
    (``$1``) and also uses ``?`` is refused: the two cannot be told apart. Roost's SQL
    never uses the JSONB operators ``?``, ``?|``, ``?&`` (the dialect uses functions).
    """
    out: list[str] = []
    count = 0
    dollar_params = False
    i = 0
    length = len(sql)
    while i < length:
        char = sql[i]
        if char == "?":
            count += 1
            out.append(f"${count}")
            i += 1
            continue
        end = i + 1
        if char == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _word(sql[i - 2]))
            end = _string_end(sql, i, escapes)
        elif char == '"':
            closing = sql.find('"', i + 1)
            end = length if closing < 0 else closing + 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = length if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            end = _comment_end(sql, i)
        elif char == "$" and (i == 0 or not _word(sql[i - 1])):
            if i + 1 < length and sql[i + 1].isdigit():
                dollar_params = True
            else:
                end = _dollar_quote_end(sql, i)
        out.append(sql[i:end])
        i = end
    if count and dollar_params:
        raise ValueError("SQL mixes ? and $n placeholders")
    return "".join(out)


def _word(char: str) -> bool:
    return char.isalnum() or char in "_$"


def _string_end(sql: str, start: int, escapes: bool) -> int:
    i = start + 1
    while i < len(sql):
        if escapes and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == "'":
            if sql.startswith("''", i):
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)


def _comment_end(sql: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def _dollar_quote_end(sql: str, start: int) -> int:
    """The end of a ``$tag$...$tag$`` string at ``start``, or ``start + 1`` if none starts."""
    close = sql.find("$", start + 1)
    tag = sql[start : close + 1] if close > 0 else ""
    body = tag[1:-1]
    if not tag or not (body == "" or (body.replace("_", "a").isalnum() and not body[0].isdigit())):
        return start + 1
    finish = sql.find(tag, close + 1)
    return len(sql) if finish < 0 else finish + len(tag)


def _rowcount(status: str) -> int:
    """The row count of a command status: ``INSERT 0 3`` → 3, ``CREATE TABLE`` → 0."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _fail(exc: BaseException) -> NoReturn:
    if isinstance(exc, asyncpg.UniqueViolationError):
        raise UniqueViolation(str(exc), getattr(exc, "constraint_name", None)) from exc
    if isinstance(exc, asyncpg.UndefinedTableError):
        raise MissingTable(str(exc)) from exc
    raise StorageError(str(exc) or type(exc).__name__) from exc


def _stuck(exc: BaseException) -> bool:
    """Whether a block that failed with ``exc`` may have left a statement running or being
    cancelled: it timed out or was cancelled (a frozen server answers neither)."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    return isinstance(cause, TimeoutError | asyncio.CancelledError)


async def _keep_session(raw: asyncpg.Connection) -> None:
    """A pool's reset on release. asyncpg has already rolled back an open transaction;
    Roost's connections change no other session state (``build_indexes`` closes the one
    that does), so its reset query, a round trip per release, is skipped."""


def _drop(raw: asyncpg.Connection) -> None:
    """Close a pooled connection at once (the server rolls back its transaction); the pool
    opens another. Waiting to roll back or reset it could take the whole timeout again."""
    try:
        raw.terminate()
    except asyncpg.InterfaceError:  # asyncpg closed it already and took it back
        pass


class PostgresConnection(Connection):
    row_lock = " FOR UPDATE"

    def __init__(self, conn: asyncpg.Connection, observe: Observe) -> None:
        self._conn = conn
        self._observe = observe

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            with Statement(sql, self._observe):
                status: str = await self._conn.execute(numbered(sql), *params)
        except FAILURES as exc:
            _fail(exc)
        return _rowcount(status)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            with Statement(sql, self._observe):
                records = await self._conn.fetch(numbered(sql), *params)
        except FAILURES as exc:
            _fail(exc)
        return [dict(record) for record in records]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:
            with Statement(sql, self._observe):
                record = await self._conn.fetchrow(numbered(sql), *params)
        except FAILURES as exc:
            _fail(exc)
        return None if record is None else dict(record)


class PostgresStorage(Storage):
    dialect: PostgresDialect = ServiceDialect()
    backend = "postgresql"

    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.database_url
        self._max_size = settings.postgres_pool_max
        self._min_size = min(settings.postgres_pool_min, self._max_size)
        self._timeout = settings.postgres_timeout_seconds
        self._statement_timeout_ms = settings.postgres_statement_timeout_ms
        self._pool: asyncpg.Pool | None = None
        self._replica_urls = settings.database_replica_urls
        self._max_lag = settings.database_replica_max_lag_seconds
        self._replicas: Replicas | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings={
                    "application_name": "roost",
                    "statement_timeout": str(self._statement_timeout_ms),
                },
                reset=_keep_session,
            )
        except FAILURES as exc:
            _fail(exc)
        functions = await asyncio.to_thread(setup_sql)  # about 0.5 s of CPU, once
        async with self.write() as conn:
            await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {MIGRATIONS_LOCK})")
            await migrate(conn, MIGRATIONS)
            for statement in functions:  # idempotent; follows this Python's Unicode
                await conn.execute(statement)
            row = await conn.fetch_one(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()"
            )
        assert row is not None
        self.dialect = ServiceDialect.for_collation(row["datcollate"])
        if self._replica_urls:
            await self._open_replicas(self._pool)

    async def _open_replicas(self, primary: asyncpg.Pool) -> None:
        """Pools that connect on first use (a replica that is down does not stop the start),
        and the monitor; the first check runs now so reads can use replicas at once."""
        pools = [
            await asyncpg.create_pool(
                url,
                min_size=0,
                max_size=self._max_size,
                timeout=min(self._timeout, REPLICA_CONNECT_TIMEOUT),
                command_timeout=self._timeout,
                server_settings={
                    "application_name": "roost",
                    "statement_timeout": str(self._statement_timeout_ms),
                },
                reset=_keep_session,
            )
            for url in self._replica_urls
        ]
        self._replicas = Replicas(pools, self._max_lag, self._timeout)
        try:
            await self._replicas.check(primary)
        except Exception:  # the monitor retries
            pass
        self._replicas.start(primary)

    @asynccontextmanager
    async def _acquire(
        self, replica: asyncpg.Pool | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StorageError("storage is not open")
        pool = replica or self._pool
        try:
            raw = await pool.acquire(timeout=self._timeout)
        except FAILURES as exc:
            _fail(exc)
        try:
            yield raw
        except BaseException as exc:
            if _stuck(exc):
                _drop(raw)
            raise
        finally:
            try:
                await pool.release(raw)
            except FAILURES:  # its reset failed: asyncpg terminated it, the pool makes another
                pass  # and the block's own outcome (result or error) stands

    @asynccontextmanager
    async def _transaction(
        self, raw: asyncpg.Connection, **options: Any
    ) -> AsyncIterator[Connection]:
        timing = self.timing
        observe = timing.read if options.get("readonly") else timing.write
        transaction = raw.transaction(**options)
        try:
            await transaction.start()
        except FAILURES as exc:
            _fail(exc)
        try:
            yield PostgresConnection(raw, observe)
        except BaseException as exc:
            if _stuck(exc):
                _drop(raw)
            else:
                try:
                    await transaction.rollback()
                except Exception:  # the connection is gone; the pool resets or drops it
                    pass
            raise
        try:
            await transaction.commit()
        except FAILURES as exc:
            _fail(exc)

    @asynccontextmanager
    async def read(self, replica: bool = False) -> AsyncIterator[Connection]:
        pool = self._replica(CONSISTENCY.get()) if replica else None
        try:
            async with self._acquire(pool) as raw:
                yield PostgresConnection(raw, self.timing.read)
        except StorageError:
            if pool is not None and self._replicas is not None:
                self._replicas.skip(pool)  # the next check brings it back when it answers
            raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        async with self._acquire() as raw:
            async with self._transaction(raw, isolation="repeatable_read", readonly=True) as conn:
                yield conn

    def _replica(self, consistency: Consistency | None) -> asyncpg.Pool | None:
        if self._replicas is None:
            return None
        after = 0 if consistency is None else max(consistency.after, consistency.written)
        return self._replicas.choose(after)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        async with self._acquire() as raw:
            async with self._transaction(raw) as conn:
                yield conn
            await self._committed_block(conn)
            consistency = CONSISTENCY.get()
            if self._replicas is not None and consistency is not None:
                position = await PostgresConnection(raw, self.timing.read).fetch_one(POSITION)
                assert position is not None
                consistency.written = max(consistency.written, parse_lsn(position["lsn"]))

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
        """Append a change without a position (it gets one after commit): return 0."""
        await conn.execute(
            "INSERT INTO _changes (collection, record_id, op, version, owner, at, record, before)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (collection, record_id, op, version, owner, at, record, before),
        )
        conn.touch(collection, record_id)
        return 0

    async def stamp(self) -> None:
        """Give positions to the changes whose writers (and all older ones) have finished."""
        async with self._acquire() as raw:
            await self._stamp(raw)

    async def _stamp(self, raw: asyncpg.Connection) -> None:
        row = await PostgresConnection(raw, self.timing.read).fetch_one(UNSTAMPED)
        if row is None or not row["pending"]:
            return
        async with self._transaction(raw) as conn:
            await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {STAMP_LOCK})")
            await conn.execute(STAMP)

    async def changes_since(
        self, position: int, collections: Sequence[str] | None, limit: int
    ) -> list[Change]:
        sql = (
            "SELECT position, collection, record_id, op, version, owner, at, record, before"
            " FROM _changes WHERE position > ?"
        )
        params: list[Any] = [position]
        if collections is not None:
            sql += " AND collection = ANY(?::text[])"
            params.append(list(collections))
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        async with self._acquire() as raw:
            await self._stamp(raw)
            rows = await PostgresConnection(raw, self.timing.read).fetch_all(sql, params)
        return [Change(**row) for row in rows]

    async def log_state(self) -> LogState:
        async with self._acquire() as raw:
            await self._stamp(raw)
            row = await PostgresConnection(raw, self.timing.read).fetch_one(
                "SELECT epoch, floor, (SELECT last FROM _changes_counter) AS head FROM _log"
            )
        assert row is not None
        return LogState(row["epoch"], row["floor"], row["head"])

    async def _raise_floor(self, before: str) -> int | None:
        async with self.write() as conn:
            row = await conn.fetch_one(
                "SELECT max(position) AS last FROM _changes WHERE position IS NOT NULL AND at < ?",
                (before,),
            )
            last: int | None = None if row is None else row["last"]
            if last is not None:
                await conn.execute("UPDATE _log SET floor = greatest(floor, ?)", (last,))
        return last

    async def _delete_changes(self, through: int, limit: int) -> int:
        async with self.write() as conn:
            # Not while a stamping step runs: both lock the same _changes rows.
            await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {STAMP_LOCK})")
            return await conn.execute(
                "DELETE FROM _changes WHERE id IN (SELECT id FROM _changes"
                " WHERE position <= ? ORDER BY position LIMIT ?)",
                (through, limit),
            )

    async def define_collection(
        self, conn: Connection, name: str, indexes: Sequence[IndexSpec]
    ) -> None:
        table = table_name(name)
        await self._lock_collection(conn, name)
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS {table} (id TEXT COLLATE "C" PRIMARY KEY,'
            ' owner TEXT COLLATE "C", created TEXT COLLATE "C" NOT NULL,'
            ' updated TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, data JSONB NOT NULL)'
        )
        await conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{owner_index_name(name)}" ON {table} (owner)'
        )
        wanted = self._indexes(name, indexes)
        existing = await _existing_indexes(conn, table)
        for stale in existing.keys() - wanted.keys():
            await conn.execute(f'DROP INDEX "{stale}"')
        for index, (unique, columns) in wanted.items():
            if not existing.get(index, False):
                await conn.execute(f'DROP INDEX IF EXISTS "{index}"')  # a failed build
                await conn.execute(f'CREATE {unique}INDEX "{index}" ON {table} ({columns})')

    async def build_indexes(self, name: str, indexes: Sequence[IndexSpec]) -> None:
        """Build the missing indexes of an existing collection with ``CREATE INDEX
        CONCURRENTLY``: writes go on while it reads the table, and ``define_collection``
        then finds them built. A unique index over duplicates fails (``UniqueViolation``)
        and is dropped again; so is one a crash or timeout left invalid."""
        table = table_name(name)
        wanted = self._indexes(name, indexes)
        async with self._acquire() as raw:
            try:
                await self._build_missing(raw, name, table, wanted)
            finally:  # its session holds an advisory lock and a longer timeout: close it,
                _drop(raw)  # and the pool opens another (releases skip asyncpg's reset)

    async def _build_missing(
        self, raw: asyncpg.Connection, name: str, table: str, wanted: dict[str, tuple[str, str]]
    ) -> None:
        conn = PostgresConnection(raw, self.timing.write)
        await conn.execute("SELECT pg_advisory_lock(?, hashtext(?))", (COLLECTION_LOCK_CLASS, name))
        await conn.execute(f"SET statement_timeout = {INDEX_BUILD_TIMEOUT * 1000}")
        if await conn.fetch_one("SELECT 1 WHERE to_regclass(?) IS NOT NULL", (table,)) is None:
            return
        existing = await _existing_indexes(conn, table)
        for index, (unique, columns) in wanted.items():
            if existing.get(index, False):
                continue
            drop = f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"'
            await self._build(raw, drop)
            create = f"CREATE {unique}INDEX CONCURRENTLY"
            try:
                await self._build(raw, f'{create} "{index}" ON {table} ({columns})')
            except StorageError:
                await self._build(raw, drop)
                raise

    @staticmethod
    async def _build(raw: asyncpg.Connection, sql: str) -> None:
        try:
            await raw.execute(sql, timeout=INDEX_BUILD_TIMEOUT)
        except FAILURES as exc:
            _fail(exc)

    def _indexes(self, name: str, specs: Sequence[IndexSpec]) -> dict[str, tuple[str, str]]:
        """Index name → (``"UNIQUE "`` or ``""``, columns) for each declared index: one on
        the fields' values, which filters use, and one on the values of all but the last
        field then the last field's ``ORDER BY`` terms and ``id``, which a page filtered on
        the first fields and sorted on the last reads in order (stopping at its limit)."""
        wanted: dict[str, tuple[str, str]] = {}
        for spec in specs:
            values = [f"({self.dialect.field_sql(path)})" for path in spec.fields]
            wanted[index_name(name, spec)] = ("UNIQUE " if spec.unique else "", ", ".join(values))
            last = parse_path(spec.fields[-1])
            order = [*values[:-1], *self.dialect.order_terms(last), '(id COLLATE "C")']
            wanted[index_name(name, spec, "order")] = ("", ", ".join(order))
        return wanted

    async def drop_collection(self, conn: Connection, name: str) -> None:
        await self._lock_collection(conn, name)
        await conn.execute(f"DROP TABLE IF EXISTS {table_name(name)}")
        # Not while a stamping step runs: both lock the same _changes rows, in any order.
        await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {STAMP_LOCK})")
        await conn.execute("DELETE FROM _changes WHERE collection = ?", (name,))

    async def _lock_collection(self, conn: Connection, name: str) -> None:
        """Serialise DDL on one collection across instances (``CREATE TABLE IF NOT EXISTS``
        racing itself fails on PostgreSQL)."""
        await conn.execute(
            f"SELECT pg_advisory_xact_lock({COLLECTION_LOCK_CLASS}, hashtext(?))", (name,)
        )

    def pools(self) -> list[PoolUsage]:
        named = [] if self._pool is None else [("primary", self._pool)]
        if self._replicas is not None:
            named += [(f"replica{n}", pool) for n, pool in enumerate(self._replicas.pools, 1)]
        usage = []
        for name, pool in named:
            idle = pool.get_idle_size()
            usage.append(PoolUsage(name, pool.get_size() - idle, idle, pool.get_max_size()))
        return usage

    async def aclose(self) -> None:
        """Close the pool: wait (up to the timeout) for lent connections, then cut them."""
        if self._replicas is not None:
            replicas, self._replicas = self._replicas, None
            await replicas.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()


def _short(name: str, prefix: str, key: str) -> str:
    """``prefix`` + ``name``, or a cut ``name`` and a digest of ``key`` when that is too long."""
    whole = f"{prefix}{name}"
    if len(whole.encode()) <= MAX_IDENTIFIER:
        return whole
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{prefix}{name[: MAX_IDENTIFIER - len(prefix) - 17]}_{digest}"


def owner_index_name(collection: str) -> str:
    return _short(collection, "owner_", collection)


def index_name(collection: str, spec: IndexSpec, role: str = "") -> str:
    """A stable name (at most 63 bytes) for a declared index (``role`` tells its two
    PostgreSQL indexes apart): redeclaring changes nothing."""
    key = (collection, spec.fields, spec.unique, *([role] if role else []))
    digest = hashlib.sha256(repr(key).encode()).hexdigest()
    return f"{INDEX_PREFIX}{collection[:40]}_{digest[:16]}"


async def _existing_indexes(conn: Connection, table: str) -> dict[str, bool]:
    """Roost's declared indexes on ``table``: name → whether it is valid (a failed
    ``CREATE INDEX CONCURRENTLY`` leaves an invalid one behind)."""
    rows = await conn.fetch_all(
        "SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(?) AND starts_with(c.relname, ?)",
        (table, INDEX_PREFIX),
    )
    return {row["name"]: row["valid"] for row in rows}
