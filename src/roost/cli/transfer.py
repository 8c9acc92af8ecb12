"""``roost export`` and ``roost import``: move a Roost database to another backend.

The file is JSON lines, one object per line, each with a ``type``: a ``header``, every
``collection`` definition, every ``record`` (collection by collection, in id order), the
users' ``credential`` (password hash) and ``identity`` (Apple/Google link) rows, the kept
``idempotency`` results, and an ``end`` line with the count of each type, so a file cut
short is refused instead of half imported. Sessions, refresh tokens, one-time tokens, the
mail outbox and the change log are not moved (docs/reference/transfer.md says why).

The export reads one snapshot, page by page, and never refuses what the database holds;
the import is the gate: it validates every line and writes in ONE transaction into a
database that holds no data yet, so a bad line, a cut file or a refused row leaves the
target exactly as it was. The target's change log starts fresh with one ``create`` per
imported record, so a sync client of the new server starts from cursor 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from roost import __version__
from roost.ids import is_uuid7
from roost.records.collections import (
    BUILTIN,
    COLLECTION_NAME,
    CollectionDef,
    Collections,
    with_builtin_parts,
)
from roost.records.fields import check_names, check_values, load_data, now_iso
from roost.records.service import COLUMNS
from roost.settings import Settings
from roost.storage.base import (
    Connection,
    Row,
    Storage,
    StorageError,
    UniqueViolation,
    open_storage,
    table_name,
)
from roost.storage.sqlite import database_path

FORMAT_VERSION = 1
PAGE_ROWS = 500
"""Rows read per query while exporting: memory stays flat whatever the database holds."""
BATCH_ROWS = 100
"""Records per INSERT while importing (600 parameters: under every backend's limit)."""
TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
"""Record timestamps as Roost writes them (fixed width, so text order is time order)."""


class TransferError(Exception):
    """The file or the target database is not one the import can take; nothing was written."""


class _Line(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )


Text = Annotated[str, Field(min_length=1, max_length=1024)]


class Header(_Line):
    type: Literal["header"] = "header"
    format: Literal["roost-export"] = "roost-export"
    version: int = FORMAT_VERSION
    roost: str = __version__
    exported_at: str


class CollectionLine(_Line):
    type: Literal["collection"] = "collection"
    definition: CollectionDef
    created: Text
    updated: Text
    version: Annotated[int, Field(ge=1)]


class RecordLine(_Line):
    type: Literal["record"] = "record"
    collection: Annotated[str, Field(pattern=COLLECTION_NAME.pattern)]
    id: str
    owner: Annotated[str, Field(min_length=1, max_length=64)] | None
    created: Annotated[str, Field(pattern=TIMESTAMP)]
    updated: Annotated[str, Field(pattern=TIMESTAMP)]
    version: Annotated[int, Field(ge=1)]
    data: dict[str, Any]

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not is_uuid7(value) or value != value.lower():
            raise ValueError("a record id is a lowercase UUIDv7")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, data: dict[str, Any]) -> dict[str, Any]:
        """What every stored record satisfies; not the collection's schema, which an admin
        may have changed after the record was written."""
        errors = check_names(data)
        check_values(data, "", errors)
        if errors:
            raise ValueError(f"{errors[0]['field']}: {errors[0]['message']}")
        return data


class CredentialLine(_Line):
    type: Literal["credential"] = "credential"
    user_id: Text
    password_hash: Text
    updated: Text


class IdentityLine(_Line):
    type: Literal["identity"] = "identity"
    provider: Text
    subject: Text
    user_id: Text
    created: Text


class IdempotencyLine(_Line):
    type: Literal["idempotency"] = "idempotency"
    scope: Text
    key: Text
    request_hash: Text
    status: int
    headers: str
    body: bytes
    created: Text


class EndLine(_Line):
    type: Literal["end"] = "end"
    counts: dict[str, int]


Line = Header | CollectionLine | RecordLine | CredentialLine | IdentityLine | IdempotencyLine
LINE: TypeAdapter[Line | EndLine] = TypeAdapter(
    Annotated[Line | EndLine, Field(discriminator="type")]
)


@dataclass(frozen=True, slots=True)
class Table:
    """One of Roost's own tables that moves with the data, row for row."""

    line: type[CredentialLine | IdentityLine | IdempotencyLine]
    name: str
    key: tuple[str, ...]
    """Its primary key: the export's keyset order."""

    @property
    def kind(self) -> str:
        """The ``type`` of its lines."""
        kind: str = self.line.model_fields["type"].default
        return kind

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(name for name in self.line.model_fields if name != "type")


TABLES = (
    Table(CredentialLine, "_credentials", ("user_id",)),
    Table(IdentityLine, "_identities", ("provider", "subject")),
    Table(IdempotencyLine, "_idempotency", ("scope", "key")),
)
"""Password hashes (a user signs in with the same password), provider links (the same
Apple/Google account finds the same user), and the results behind ``Idempotency-Key``s
(a client retrying across the move does not write twice). Keys are scoped by user id,
which the move keeps."""
COUNTED = ("collection", "record", *(table.kind for table in TABLES))


# --- export ---------------------------------------------------------------------------


async def export_to(storage: Storage, out: IO[bytes]) -> Counter[str]:
    """Write the whole database to ``out`` as one snapshot; return how many of each line."""
    counts: Counter[str] = Counter()

    def emit(line: _Line) -> None:
        out.write(line.model_dump_json().encode() + b"\n")

    emit(Header.model_construct(exported_at=now_iso()))
    async with storage.snapshot() as conn:
        rows = await conn.fetch_all("SELECT * FROM _collections")
        rows.sort(key=lambda row: str(row["name"]))  # not the database's collation
        for row in rows:
            emit(
                CollectionLine.model_construct(
                    definition=CollectionDef.model_validate_json(row["definition"]),
                    created=row["created"],
                    updated=row["updated"],
                    version=row["version"],
                )
            )
        counts["collection"] = len(rows)
        for name in (str(row["name"]) for row in rows):
            async for page in _pages(conn, table_name(name), COLUMNS, ("id",)):
                for record in page:
                    fields = {**record, "data": load_data(record["data"])}
                    emit(RecordLine.model_construct(collection=name, **fields))
                counts["record"] += len(page)
        for table in TABLES:
            async for page in _pages(conn, table.name, ", ".join(table.columns), table.key):
                for row in page:
                    emit(table.line.model_construct(**row))
                counts[table.kind] += len(page)
    emit(EndLine.model_construct(counts={kind: counts[kind] for kind in COUNTED}))
    return counts


async def _pages(
    conn: Connection, table: str, columns: str, key: tuple[str, ...]
) -> AsyncIterator[list[Row]]:
    """Every row of ``table`` in ``key`` order, ``PAGE_ROWS`` at a time (keyset pages)."""
    order = ", ".join(key)
    after: list[Any] = []
    while True:
        where = f" WHERE ({order}) > ({', '.join('?' * len(key))})" if after else ""
        rows = await conn.fetch_all(
            f"SELECT {columns} FROM {table}{where} ORDER BY {order} LIMIT ?",
            [*after, PAGE_ROWS],
        )
        if rows:
            yield rows
        if len(rows) < PAGE_ROWS:
            return
        after = [rows[-1][column] for column in key]


# --- import ---------------------------------------------------------------------------


async def import_from(storage: Storage, lines: Iterable[bytes]) -> Counter[str]:
    """Import an export into ``storage``, which must hold no data yet; all or nothing.

    One transaction rather than a checking pass first: the file may be a pipe (read once),
    and the database can refuse a line no check foresees (a record breaking a unique index).
    """
    await Collections(storage).ensure_builtin()
    async with storage.write() as conn:
        await _refuse_unless_empty(conn)
        importer = _Importer(storage, conn)
        for number, raw in enumerate(lines, 1):
            await importer.add(number, _parse(number, raw))
        importer.finish()
    return importer.counts


def _parse(number: int, raw: bytes) -> Line | EndLine:
    try:
        return LINE.validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        message = (
            error["msg"].removeprefix("Value error, ").replace("at line 1 column", "at column")
        )
        raise TransferError(f"line {number}: {where + ': ' if where else ''}{message}") from None


async def _refuse_unless_empty(conn: Connection) -> None:
    """Importing into a database in use would mix two histories under one change log."""
    names = [str(row["name"]) for row in await conn.fetch_all("SELECT name FROM _collections")]
    extra = sorted(set(names) - BUILTIN.keys())
    if extra:
        raise TransferError(f"the target database is not empty: it has collections {extra}")
    for name in names:
        if await conn.fetch_one(f"SELECT 1 FROM {table_name(name)} LIMIT 1") is not None:
            raise TransferError(
                f"the target database is not empty: collection {name!r} holds records"
            )
    for table in ("_changes", *(table.name for table in TABLES)):
        if await conn.fetch_one(f"SELECT 1 FROM {table} LIMIT 1") is not None:
            raise TransferError(f"the target database is not empty: {table} has rows")


class _Importer:
    """Writes the lines of one file, in order, inside the import's transaction."""

    def __init__(self, storage: Storage, conn: Connection) -> None:
        self._storage = storage
        self._conn = conn
        self.counts: Counter[str] = Counter()
        self._defined: set[str] = set()
        self._batch: list[tuple[int, RecordLine]] = []
        self._last = 0
        self._ended = False

    async def add(self, number: int, line: Line | EndLine) -> None:
        self._last = number
        if self._ended:
            raise TransferError(f"line {number}: nothing may follow the end line")
        if number == 1 and not isinstance(line, Header):
            raise TransferError("line 1: not a Roost export (it starts with a header line)")
        if number > 1 and isinstance(line, Header):
            raise TransferError(f"line {number}: a second header line")
        if isinstance(line, RecordLine):
            await self._record(number, line)
            return
        await self._flush()
        if isinstance(line, Header):
            _check_header(line)
        elif isinstance(line, CollectionLine):
            await self._collection(number, line)
        elif isinstance(line, EndLine):
            self._end(number, line)
        else:
            await self._row(number, line)
        if not isinstance(line, Header | EndLine):
            self.counts[line.type] += 1

    def finish(self) -> None:
        if self._last == 0:
            raise TransferError("the file is empty")
        if not self._ended:
            raise TransferError(
                f"the file stops after line {self._last} without its end line: it is incomplete"
            )

    async def _collection(self, number: int, line: CollectionLine) -> None:
        """As ``Collections`` stores a definition, keeping its dates and version; the table
        and its indexes come from the adapter's ``define_collection``, as for the API."""
        definition = with_builtin_parts(line.definition)
        name = definition.name
        if name in self._defined:
            raise TransferError(f"line {number}: collection {name!r} is defined twice")
        self._defined.add(name)
        stored = orjson.dumps(definition.model_dump(mode="json")).decode()
        await self._conn.execute(
            "INSERT INTO _collections (name, definition, created, updated, version)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " definition = excluded.definition, created = excluded.created,"
            " updated = excluded.updated, version = excluded.version",
            (name, stored, line.created, line.updated, line.version),
        )
        await self._storage.define_collection(self._conn, name, definition.index_specs())

    async def _record(self, number: int, line: RecordLine) -> None:
        if line.collection not in self._defined:
            raise TransferError(
                f"line {number}: a record of {line.collection!r} before that collection's line"
            )
        if self._batch and self._batch[0][1].collection != line.collection:
            await self._flush()
        self._batch.append((number, line))
        if len(self._batch) == BATCH_ROWS:
            await self._flush()

    async def _flush(self) -> None:
        """Insert the pending records in one statement, then one ``create`` change each."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        name = batch[0][1].collection
        params: list[Any] = []
        for _, r in batch:
            params += [
                r.id,
                r.owner,
                r.created,
                r.updated,
                r.version,
                orjson.dumps(r.data).decode(),
            ]
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(batch))
        try:
            await self._conn.execute(
                f"INSERT INTO {table_name(name)} ({COLUMNS}) VALUES {values}", params
            )
        except UniqueViolation as exc:
            raise TransferError(
                f"lines {batch[0][0]}-{batch[-1][0]}: a record repeats an id or breaks"
                f" a unique index of {name!r} ({exc})"
            ) from None
        for _, r in batch:
            record = {"id": r.id, "owner": r.owner, "created": r.created, "updated": r.updated}
            await self._storage.append_change(
                self._conn,
                name,
                r.id,
                "create",
                r.version,
                r.owner,
                r.updated,
                record=orjson.dumps({**record, "version": r.version, **r.data}).decode(),
            )
        self.counts["record"] += len(batch)

    async def _row(
        self, number: int, line: CredentialLine | IdentityLine | IdempotencyLine
    ) -> None:
        table = next(table for table in TABLES if isinstance(line, table.line))
        columns = table.columns
        try:
            await self._conn.execute(
                f"INSERT INTO {table.name} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})",
                [getattr(line, column) for column in columns],
            )
        except UniqueViolation:
            raise TransferError(
                f"line {number}: a {line.type} line repeats an earlier one"
            ) from None

    def _end(self, number: int, line: EndLine) -> None:
        found = {kind: self.counts[kind] for kind in COUNTED}
        if line.counts != found:
            raise TransferError(
                f"line {number}: the end line counts {line.counts} but the file holds {found}"
            )
        self._ended = True


def _check_header(header: Header) -> None:
    if header.version != FORMAT_VERSION:
        raise TransferError(
            f"line 1: this Roost ({__version__}) reads export format {FORMAT_VERSION},"
            f" not {header.version} (made by Roost {header.roost})"
        )


# --- the commands ---------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings() if args.data_dir is None else Settings(data_dir=args.data_dir)


def _scheme(settings: Settings) -> str:
    return settings.database_url.split(":", 1)[0]


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} {counts[kind]}" for kind in COUNTED)


async def _export(settings: Settings, out: IO[bytes]) -> Counter[str]:
    storage = open_storage(settings)
    try:
        await storage.open()
        return await export_to(storage, out)
    finally:
        await storage.aclose()


async def _import(settings: Settings, lines: Iterable[bytes]) -> Counter[str]:
    storage = open_storage(settings)
    try:
        await storage.open()
        return await import_from(storage, lines)
    finally:
        await storage.aclose()


def export(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.output == "-" and sys.stdout.isatty():
        print(
            "roost: the export holds password hashes; write it to a file (--output FILE)"
            " or redirect it, not to a terminal",
            file=sys.stderr,
        )
        return 2
    if _scheme(settings) == "sqlite":
        path = database_path(settings.database_url)
        if path != ":memory:" and not Path(path).exists():
            print(f"roost: there is no database at {path} (see --data-dir)", file=sys.stderr)
            return 1
    try:
        counts = _write(settings, args.output)
    except (StorageError, OSError) as exc:
        print(f"roost: the export failed: {exc}", file=sys.stderr)
        return 1
    print(f"exported {_summary(counts)}", file=sys.stderr)
    return 0


def _write(settings: Settings, output: str) -> Counter[str]:
    """Export to standard output, or to the file ``output``: readable by its owner only
    (it holds password hashes), on disk when this returns, and removed if the export fails."""
    if output == "-":
        counts = asyncio.run(_export(settings, sys.stdout.buffer))
        sys.stdout.buffer.flush()
        return counts
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that existed keeps its mode otherwise
    with os.fdopen(fd, "wb") as out:
        try:
            counts = asyncio.run(_export(settings, out))
            out.flush()
            os.fsync(fd)
        except BaseException:
            Path(output).unlink()
            raise
    return counts


def import_(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        if args.input == "-":
            counts = asyncio.run(_import(settings, sys.stdin.buffer))
        else:
            with open(args.input, "rb") as lines:
                counts = asyncio.run(_import(settings, lines))
    except (TransferError, StorageError, OSError) as exc:
        print(f"roost: nothing was imported: {exc}", file=sys.stderr)
        return 1
    print(f"imported {_summary(counts)}")
    return 0
