"""The storage port: one small interface, one module per backend.

Services write SQL with ``?`` placeholders against the tables Roost owns; an adapter runs
it, owns the dialect differences (``dialect``), the change log and the per-collection DDL.
"""

from __future__ import annotations

import asyncio
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from roost.backends import load_backend
from roost.query.sql import Dialect
from roost.settings import Settings

Row = Mapping[str, Any]
_LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}", re.IGNORECASE)
Op = Literal["create", "update", "delete"]
PRUNE_BATCH = 10_000
"""Changes deleted per transaction when the change log is pruned."""


class StatementCount:
    """Statements this process sent to its databases (``STATEMENTS.count``), for metrics:
    what a cache saves shows as fewer statements per request."""

    count = 0


STATEMENTS = StatementCount()

StatementSpan = Callable[[str], AbstractContextManager[object]]
STATEMENT_SPAN: ContextVar[StatementSpan | None] = ContextVar("roost_statement_span", default=None)
"""Set for each request by ``roost.tracing`` when tracing is on: a span per statement."""
_UNTRACED = nullcontext()


def traced(sql: str) -> AbstractContextManager[object]:
    """What a backend runs each statement in: its span while a traced request runs, else
    nothing (a context variable read, ~0.2 µs)."""
    span = STATEMENT_SPAN.get()
    return _UNTRACED if span is None else span(sql)


class StorageError(Exception):
    """A failure of the database itself (connection lost, disk full, busy too long)."""


class MissingTable(StorageError):
    """A statement named a table that does not exist (a collection dropped meanwhile)."""


class UniqueViolation(StorageError):
    """A write broke a unique index; ``index`` names it when the backend says which."""

    def __init__(self, message: str, index: str | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """A declared collection index: field paths in order, and whether it is unique."""

    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as the change log holds it."""

    position: int
    collection: str
    record_id: str
    op: Op
    version: int
    owner: str | None
    at: str
    record: str | None = None
    """The record's JSON as the API shows it (all fields) after the write; None for a delete."""
    before: str | None = None
    """The record's JSON before the write; None for a create."""


@dataclass(frozen=True, slots=True)
class LogState:
    """What names the change log: ``epoch`` is random per database (a cursor from another
    database, or from before an import, is refused); ``floor`` is the last position pruned
    (a cursor below it has missed changes that are gone)."""

    epoch: str
    floor: int
    head: int
    """The last position readers can see now."""


@dataclass(slots=True)
class Consistency:
    """Read-your-writes for one request when reads may go to replicas: ``after`` is the
    position the client says it has seen written (``Roost-Position``), ``written`` the
    position after this request's last commit. Positions are PostgreSQL WAL positions
    (``pg_lsn`` as an integer); a backend without replicas leaves them 0."""

    after: int = 0
    written: int = 0


CONSISTENCY: ContextVar[Consistency | None] = ContextVar("roost_consistency", default=None)
"""Set per request by the HTTP layer; read by ``Storage.read(replica=True)`` and
``Storage.write()``."""


def parse_lsn(text: str) -> int:
    """A PostgreSQL WAL position (``pg_lsn`` text, ``"16/B374D848"``) as an integer;
    ValueError when ``text`` is not one."""
    if not _LSN.fullmatch(text):
        raise ValueError(f"not a WAL position: {text[:40]!r}")
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    """The ``pg_lsn`` text of a position from :func:`parse_lsn`."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


Observe = Callable[[float], None]


def _unobserved(seconds: float) -> None:
    """Statement times when no metrics ask for them: dropped."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Where an adapter hands the seconds each statement took: ``write`` for those that
    change the database (in write transactions, schema changes), ``read`` for the rest."""

    read: Observe = _unobserved
    write: Observe = _unobserved


class Statement:
    """What an adapter runs each statement in: counted (``STATEMENTS``), timed into
    ``observe``, and its span while a traced request runs."""

    __slots__ = ("_observe", "_span", "_started")

    def __init__(self, sql: str, observe: Observe) -> None:
        self._observe = observe
        self._span = traced(sql)
        self._started = 0.0

    def __enter__(self) -> None:
        STATEMENTS.count += 1
        self._span.__enter__()
        self._started = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: Any
    ) -> bool | None:
        self._observe(time.perf_counter() - self._started)
        return self._span.__exit__(kind, error, trace)


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """One of a storage's connection pools at a moment (for metrics)."""

    name: str
    in_use: int
    idle: int
    max: int


Touched = tuple[str, str | None]
"""What a write block changed: a collection's record (name, id), or its definition (name,
None)."""


class Connection(ABC):
    """A connection inside ``Storage.read()`` or one transaction inside ``Storage.write()``."""

    touched: list[Touched] | None = None
    """What the block changed (``touch``), for ``Storage.after_commit``."""

    def touch(self, collection: str, record_id: str | None = None) -> None:
        """Note that this write block changes a record, or (without ``record_id``) the
        collection's definition: the caches holding it are told after the commit."""
        if self.touched is None:
            self.touched = []
        self.touched.append((collection, record_id))

    @property
    def appended(self) -> bool:
        """Whether the block wrote a change to a record (``Storage.on_commit``)."""
        return any(record_id is not None for _, record_id in self.touched or ())

    row_lock = ""
    """Appended to a ``SELECT`` in a write transaction that reads rows it will change: they
    stay locked until it ends (PostgreSQL ``FOR UPDATE``; SQLite's one writer needs none)."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    @abstractmethod
    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query; return every row as a mapping of column name to value."""

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query; return its first row or None."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class Storage(ABC):
    """A database holding collections, records, the change log and Roost's own tables."""

    dialect: Dialect
    backend: str
    """Names the database in metrics: ``sqlite``, ``postgresql``."""
    timing = Timing()
    """Metrics replace it to time every statement."""
    _committed: Callable[[], None] | None = None
    _invalidate: Callable[[Sequence[Touched]], Awaitable[None]] | None = None

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` after each commit of a ``write()`` block that appended changes
        (the realtime broker's ``publish``); it must not block or raise."""
        self._committed = hook

    def after_commit(self, hook: Callable[[Sequence[Touched]], Awaitable[None]]) -> None:
        """Await ``hook(touched)`` after each commit of a ``write()`` block that touched
        something, before the block returns: a write is acknowledged only after the caches
        have been told (``Connection.touch``). It runs to its end even if the writer is
        cancelled meanwhile, and must not raise."""
        self._invalidate = hook

    async def _committed_block(self, conn: Connection) -> None:
        """What follows each commit: ``on_commit`` then ``after_commit``."""
        if conn.appended and self._committed is not None:
            self._committed()
        if conn.touched and self._invalidate is not None:
            await asyncio.shield(self._invalidate(conn.touched))

    @abstractmethod
    async def open(self) -> None:
        """Connect and run pending migrations (once, even with several instances)."""

    @abstractmethod
    def read(self, replica: bool = False) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads; it sees only committed data.

        ``replica``: the caller can be served by a read replica, if the backend has one that
        has replayed past ``CONSISTENCY``'s positions and lags within its bound.
        """

    @abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[Connection]:
        """A connection of its own in one read transaction on the primary: every query
        sees the same moment, however long the block takes (an export)."""

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[Connection]:
        """One transaction: committed (durably) when the block ends, rolled back on error."""

    @abstractmethod
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
        """Append one change inside the write transaction ``conn``, with the record's JSON
        after and before the write (``Change.record``, ``Change.before``).

        Return its position, or 0 when the backend assigns positions only after the
        transaction commits (PostgreSQL): no caller may rely on it.
        """

    @abstractmethod
    async def changes_since(
        self, position: int, collections: Sequence[str] | None, limit: int
    ) -> list[Change]:
        """Committed changes after ``position`` in commit order; never skips one."""

    @abstractmethod
    async def log_state(self) -> LogState:
        """The change log's epoch, pruned floor and head."""

    async def prune_changes(self, before: str) -> int:
        """Delete the changes made before the time ``before`` (ISO 8601 UTC) that readers
        can see; return how many. The floor is raised first, in its own transaction, so
        no cursor is ever accepted whose next changes are being deleted; the deletes then
        go in batches of ``PRUNE_BATCH``, so writers wait for one batch at most."""
        last = await self._raise_floor(before)
        deleted = 0
        while last is not None:
            count = await self._delete_changes(last, PRUNE_BATCH)
            deleted += count
            if count < PRUNE_BATCH:
                break
        return deleted

    @abstractmethod
    async def _raise_floor(self, before: str) -> int | None:
        """Raise the floor to the last readable position written before ``before`` and
        return it (None when there is none)."""

    @abstractmethod
    async def _delete_changes(self, through: int, limit: int) -> int:
        """Delete up to ``limit`` changes at or below ``through``, lowest first."""

    @abstractmethod
    async def define_collection(
        self, conn: Connection, name: str, indexes: Sequence[IndexSpec]
    ) -> None:
        """Create the collection's table if needed and make its indexes exactly ``indexes``."""

    @abstractmethod
    async def build_indexes(self, name: str, indexes: Sequence[IndexSpec]) -> None:
        """Before ``define_collection`` changes an existing collection's indexes: build the
        new ones where the backend can without blocking writes (outside any transaction),
        raising ``UniqueViolation`` when a unique one cannot be built."""

    @abstractmethod
    async def drop_collection(self, conn: Connection, name: str) -> None:
        """Drop the collection's table, its indexes and its changes."""

    @abstractmethod
    def pools(self) -> list[PoolUsage]:
        """Its connection pools now, for metrics."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection."""


BACKENDS = {
    "sqlite": "roost.storage.sqlite:SQLiteStorage",
    "postgresql": "roost.storage.postgres:PostgresStorage",
    "postgres": "roost.storage.postgres:PostgresStorage",
}


def open_storage(settings: Settings) -> Storage:
    """The storage backend named by ``settings.database_url``'s scheme (imported lazily)."""
    scheme = settings.database_url.split(":", 1)[0]
    target = BACKENDS.get(scheme)
    if target is None:
        raise ValueError(f"unsupported database URL scheme {scheme!r}")
    cls: type[Storage] = load_backend(target)
    return cls(settings)  # type: ignore[call-arg]


def table_name(collection: str) -> str:
    """The quoted table of a collection; collection names are validated before they get here."""
    return f'"r_{collection}"'
