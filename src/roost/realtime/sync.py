"""Offline delta sync: pages of what changed in some collections since a cursor, as one
reader may see it (``GET /api/sync``).

A sync starts without a cursor. It first reads the change log's head, then pages through
the records the reader sees (``Reader.sees``: list and view rules, hidden fields stripped),
collection by collection in ``id`` order, each as a ``create``; its cursors are snapshot
cursors. After the last record the cursor becomes the log cursor of that head, and the
sync goes on with the change log: every change after it, as ``changes.Reader.op_of``
makes it for the reader (create, update, delete, enter, leave; changes the reader
never saw and does not see now are passed over). A record changed while the snapshot
was read may come twice, from the snapshot and again from the log: clients apply
changes by id in order, so the last one wins.

A page is full when it read ``limit`` rows or changes, counting those the reader may
not see; then ``has_more`` is true. Its cursor is where the reading stopped, so a
client always moves on, past changes it is not shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from roost.auth.principal import Principal
from roost.errors import InvalidCursor, ValidationFailed
from roost.realtime.changes import GONE, Changed, Reader, decode_cursor, encode_cursor
from roost.records import collections
from roost.records.collections import Collection
from roost.records.rules import list_clause, sees_all_fields, strip_hidden
from roost.records.service import COLUMNS, ExpressionContext, to_public
from roost.storage.base import Connection, LogState, MissingTable, Storage, table_name
from roost.types import JSONObject

DEFAULT_LIMIT = 100
"""Rows or changes one page reads when the caller gives no ``limit``."""
MAX_LIMIT = 1000
"""Largest ``limit`` a caller may ask for."""
MAX_COLLECTIONS = 20
"""Most collections one sync may follow."""
MAX_CURSOR_LENGTH = 512
"""Longer ``since`` values are refused before any decoding."""


@dataclass(frozen=True, slots=True)
class SyncPage:
    changes: list[JSONObject]
    """``{"op", "collection", "id", "version", "record"}`` each; ``record`` is the record
    as the reader may see it (its stored JSON text when nothing is hidden), or None for
    ``delete`` and ``leave``."""
    cursor: str
    has_more: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a snapshot stands: the log ``head`` it continues from, the collection it is
    in (an index into the asked names, which ``scope`` fingerprints) and the last id
    read there."""

    epoch: str
    head: int
    scope: str
    index: int
    after: str | None

    def encode(self) -> str:
        payload = orjson.dumps([self.epoch, self.head, self.scope, self.index, self.after])
        return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


async def sync(
    storage: Storage, principal: Principal, names: Sequence[str], since: str | None, limit: int
) -> SyncPage:
    """One page of the sync of ``names`` after ``since`` (None: from scratch).

    Raises ValidationFailed for a bad ``names`` or ``limit``, NotFound for an unknown
    collection, Unauthorized/Forbidden where the list rule admits admins only,
    InvalidCursor for a cursor this server did not give, ResyncRequired for one whose
    changes are gone (pruned, or another database): sync again from scratch.
    """
    names = _checked_names(names)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(
            f"limit must be between 1 and {MAX_LIMIT}",
            [{"field": "limit", "message": f"between 1 and {MAX_LIMIT}"}],
        )
    log = await storage.log_state()  # before any record is read: the snapshot's head
    context = ExpressionContext(principal)
    async with storage.read() as conn:
        found = [await collections.load(conn, name) for name in names]
    clauses = [list_clause(c, principal, storage.dialect, context) for c in found]
    scope = _scope(names)
    if since is not None and "." in since:
        position = decode_cursor(since, log)
        return await _log_page(storage, principal, found, log.epoch, position, limit, since)
    snapshot = (
        Snapshot(log.epoch, log.head, scope, 0, None)
        if since is None
        else _decode_snapshot(since, scope, len(names), log)
    )
    items, read, next_step = await _snapshot_page(
        storage, principal, found, clauses, snapshot, limit
    )
    if next_step is not None:
        return SyncPage(items, next_step.encode(), True)
    cursor = encode_cursor(snapshot.epoch, snapshot.head)
    if read == limit:
        return SyncPage(items, cursor, True)
    rest = await _log_page(
        storage, principal, found, snapshot.epoch, snapshot.head, limit - read, cursor
    )
    return SyncPage(items + rest.changes, rest.cursor, rest.has_more)


def _checked_names(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, in order; ValidationFailed unless 1 to MAX_COLLECTIONS."""
    unique = list(dict.fromkeys(names))
    if not unique or any(not name for name in unique):
        raise ValidationFailed(
            "collections must name one or more collections, separated by commas",
            [{"field": "collections", "message": "comma-separated collection names"}],
        )
    if len(unique) > MAX_COLLECTIONS:
        raise ValidationFailed(
            f"a sync follows at most {MAX_COLLECTIONS} collections",
            [{"field": "collections", "message": f"at most {MAX_COLLECTIONS}"}],
        )
    return unique


def _scope(names: Sequence[str]) -> str:
    """A fingerprint of the asked collections, kept in snapshot cursors."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _decode_snapshot(since: str, scope: str, count: int, log: LogState) -> Snapshot:
    """The snapshot cursor ``since``; InvalidCursor unless this server gave it for these
    collections, ResyncRequired when the log moved on past it (pruned, or imported)."""
    invalid = InvalidCursor("the cursor is not one this server gave")
    if len(since) > MAX_CURSOR_LENGTH or not since.isascii():
        raise invalid
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(since + "=" * (-len(since) % 4)))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(payload, list) or len(payload) != 5:
        raise invalid
    epoch, head, made_for, index, after = payload
    if not (
        isinstance(epoch, str)
        and "." not in epoch
        and type(head) is int
        and 0 <= head < 10**18
        and isinstance(made_for, str)
        and type(index) is int
        and (after is None or (isinstance(after, str) and len(after) <= 64))
    ):
        raise invalid
    decode_cursor(encode_cursor(epoch, head), log)  # another epoch, pruned, or ahead
    if made_for != scope or not 0 <= index < count:
        raise InvalidCursor("the cursor was given for other collections; sync these from scratch")
    return Snapshot(epoch, head, scope, index, after)


async def _snapshot_page(
    storage: Storage,
    principal: Principal,
    found: Sequence[Collection],
    clauses: Sequence[tuple[str, list[object]] | None],
    snapshot: Snapshot,
    limit: int,
) -> tuple[list[JSONObject], int, Snapshot | None]:
    """Up to ``limit`` records from where ``snapshot`` stands, as creates: the items the
    reader sees, how many rows were read, and where the next page starts (None when the
    snapshot is done)."""
    items: list[JSONObject] = []
    read = 0
    index, after = snapshot.index, snapshot.after
    async with storage.read() as conn:
        while index < len(found) and read < limit:
            collection, clause = found[index], clauses[index]
            wanted = limit - read
            rows = await _records(conn, storage, principal, collection, clause, after, wanted)
            more = len(rows) > wanted
            rows = rows[:wanted]
            read += len(rows)
            items.extend(_created(principal, collection, rows))
            if more:
                after = rows[-1]["id"]
                break
            index, after = index + 1, None
    if index == len(found):
        return items, read, None
    return items, read, Snapshot(snapshot.epoch, snapshot.head, snapshot.scope, index, after)


def _filtered_in_python(collection: Collection, principal: Principal) -> bool:
    """Whether rows that pass the list rule (in SQL) still need the view rule checked."""
    rules = collection.definition.rules
    return not principal.is_admin and rules.view not in ("", rules.list)


async def _records(
    conn: Connection,
    storage: Storage,
    principal: Principal,
    collection: Collection,
    clause: tuple[str, list[object]] | None,
    after: str | None,
    wanted: int,
) -> list[JSONObject]:
    """The next ``wanted + 1`` rows after ``after`` passing the list rule, in ``id`` order;
    with ``_json``, the record's JSON text, when the database writes it and the reader
    sees every field and needs no further check."""
    name = collection.definition.name
    encoded = storage.dialect.record_json_sql()
    if not sees_all_fields(collection, principal) or _filtered_in_python(collection, principal):
        encoded = None
    columns = COLUMNS if encoded is None else f"id, version, {encoded} AS _json"
    where: list[str] = []
    params: list[object] = []
    if clause is not None:
        where.append(f"({clause[0]})")
        params.extend(clause[1])
    if after is not None:
        where.append("id > ?")
        params.append(after)
    sql = f"SELECT {columns} FROM {table_name(name)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id LIMIT ?"
    params.append(wanted + 1)
    try:
        return [dict(row) for row in await conn.fetch_all(sql, params)]
    except MissingTable:  # dropped since its definition was read
        raise collections.missing(name) from None


def _created(
    principal: Principal, collection: Collection, rows: Sequence[JSONObject]
) -> list[JSONObject]:
    """The snapshot items of ``rows``: the records the reader sees, each as a create."""
    name = collection.definition.name
    if rows and "_json" in rows[0]:
        return [
            _item("create", name, row["id"], row["version"], orjson.Fragment(row["_json"]))
            for row in rows
        ]
    reader = Reader(principal)
    check = _filtered_in_python(collection, principal)
    items = []
    for row in rows:
        record = to_public(row)
        if check and not reader.sees(collection, record):
            continue
        visible = strip_hidden(collection, principal, record)
        items.append(_item("create", name, record["id"], record["version"], visible))
    return items


async def _log_page(
    storage: Storage,
    principal: Principal,
    found: Sequence[Collection],
    epoch: str,
    position: int,
    limit: int,
    cursor: str,
) -> SyncPage:
    """Up to ``limit`` changes after ``position``, as the reader sees them; ``cursor`` is
    the page's cursor when there are none."""
    by_name = {collection.definition.name: collection for collection in found}
    changes = await storage.changes_since(position, list(by_name), limit)
    reader = Reader(principal)
    items = []
    for change in changes:
        collection = by_name[change.collection]
        changed = Changed(change)
        op = reader.op_of(collection, changed)
        if op is None:
            continue
        record = None if op in GONE else changed.record_for(collection, principal)
        items.append(_item(op, change.collection, change.record_id, change.version, record))
    if changes:
        cursor = encode_cursor(epoch, changes[-1].position)
    return SyncPage(items, cursor, len(changes) == limit)


def _item(
    op: str,
    collection: str,
    record_id: str,
    version: int,
    record: JSONObject | orjson.Fragment | None,
) -> JSONObject:
    return {
        "op": op,
        "collection": collection,
        "id": record_id,
        "version": version,
        "record": record,
    }
