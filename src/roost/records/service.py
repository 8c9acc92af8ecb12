"""Records: every read and write of collection data goes through here.

A write checks the collection's rule, validates the data against the schema, then writes
the record and appends its change in one transaction, together with the idempotency
key's result when the request carries one. It is acknowledged only after the commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

from roost.auth.principal import Principal
from roost.errors import (
    Conflict,
    Forbidden,
    InvalidCursor,
    InvalidFilter,
    InvalidId,
    NotFound,
    PreconditionFailed,
    RoostError,
    ValidationFailed,
)
from roost.ids import is_uuid7, new_id
from roost.query.ast import CONTEXT_NAMES, Expr, Path
from roost.query.errors import ExpressionError
from roost.query.fields import parse_fields, project
from roost.query.limits import DEFAULT_LIMIT, MAX_LIMIT
from roost.query.sort import (
    SortKey,
    keyset_sql,
    order_by_sql,
    parse_sort,
    sort_values_sql,
    with_tiebreaker,
)
from roost.query.sql import Dialect, compile_filter_cached
from roost.records import collections, idempotency
from roost.records.cache import RecordCache
from roost.records.collections import USER_FIELDS, USERS, Collection
from roost.records.cursor import PageCursors
from roost.records.fields import check_names, load_data, merge_patch, now_iso, validate_data
from roost.records.idempotency import IdempotentRequest, Outcome
from roost.records.rules import (
    check,
    context_names,
    list_clause,
    parsed,
    paths_of,
    refuse_hidden_paths,
    sees_all_fields,
    strip_hidden,
)
from roost.settings import Settings
from roost.storage.base import (
    Connection,
    MissingTable,
    Row,
    Storage,
    UniqueViolation,
    table_name,
)
from roost.types import JSON, JSONObject

COLUMNS = "id, owner, created, updated, version, data"
JOINED_COLUMNS = (
    f"{', '.join(f'r.{column}' for column in COLUMNS.split(', '))}, {collections.JOINED_COLUMNS}"
)
"""A record ``r`` and its collection ``c``."""
DEFAULT_SORT = "id"
MAX_BATCH_OPERATIONS = 100


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    """``{"items": [...], "next_cursor": ...}`` as JSON, serialised once (records the
    database wrote as JSON are embedded as they are)."""
    cache_control: str


@dataclass(frozen=True, slots=True)
class Read:
    """One record as the caller may see it, and how long HTTP caches may keep it."""

    record: JSONObject
    cache_control: str


def cache_control(collection: Collection) -> str:
    """The ``Cache-Control`` of a collection's records and pages. Without
    ``cache_max_age``: ``private, no-cache`` (revalidate with the ETag each time). With it,
    ``public`` only when anyone may read every field of every record (``""`` list and view
    rules, no hidden fields): else what a response holds depends on who asked, and a
    shared cache must not keep it."""
    definition = collection.definition
    max_age = definition.options.cache_max_age
    if max_age is None:
        return "private, no-cache"
    rules = definition.rules
    shared = rules.list == "" and rules.view == "" and not definition.hidden_fields
    return f"{'public' if shared else 'private'}, max-age={max_age}"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A list request, parsed and checked; it names a page (``identity``) for the cache."""

    name: str
    principal: Principal
    context: ExpressionContext
    keys: tuple[SortKey, ...]
    expression: Expr | None
    projection: tuple[Path, ...] | None
    limit: int
    identity: tuple[JSON, ...]
    """The page's parameters as given: equal identities (and callers) mean equal pages."""

    @classmethod
    def parse(
        cls,
        name: str,
        principal: Principal,
        filter: str | None,
        sort: str | None,
        limit: int,
        cursor: str | None,
        fields: str | None,
    ) -> PageRequest:
        try:
            keys = _sort_keys(sort or DEFAULT_SORT)
            expression = parsed(filter) if filter else None
            projection = parse_fields(fields) if fields else None
        except ExpressionError as exc:
            raise InvalidFilter(str(exc), position=exc.position) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(
                f"limit must be between 1 and {MAX_LIMIT}",
                [{"field": "limit", "message": f"between 1 and {MAX_LIMIT}"}],
            )
        identity = (name, filter, [str(key) for key in keys], limit, cursor, fields)
        context = ExpressionContext(principal)
        return cls(name, principal, context, keys, expression, projection, limit, identity)

    @property
    def scope(self) -> str:
        """What a cursor is made for: the collection and the sort order."""
        return f"{self.name}\n{','.join(str(key) for key in self.keys)}"

    @property
    def filter_names(self) -> set[str]:
        """The caller's values the filter reads."""
        return set() if self.expression is None else context_names(self.expression)

    def sql(
        self, collection: Collection, dialect: Dialect, last: list[Any] | None
    ) -> tuple[str, list[Any], bool]:
        """The page's SQL (one row more than the limit) and parameters, and whether it
        selects each record as its JSON (``_json``). Raises when the caller may not list
        the collection or filters on what it may not see."""
        read_paths = [key.path for key in self.keys]
        if self.expression is not None:
            read_paths += paths_of(self.expression)
        refuse_hidden_paths(collection, self.principal, read_paths)
        clauses = [list_clause(collection, self.principal, dialect, self.context)]
        if self.expression is not None:
            clauses.append(compile_filter_cached(self.expression, dialect, self.context))
        if last is not None:
            clauses.append(keyset_sql(self.keys, last, dialect))
        where = [clause for clause in clauses if clause is not None]
        encoded = dialect.record_json_sql()
        if self.projection is not None or not sees_all_fields(collection, self.principal):
            encoded = None
        columns = COLUMNS if encoded is None else f"{encoded} AS _json"
        sql, params = page_sql(self.name, self.keys, where, self.limit + 1, dialect, columns)
        return sql, params, encoded is not None


@dataclass(frozen=True, slots=True)
class Operation:
    """One write of a batch (or a single write request)."""

    action: Literal["create", "update", "delete"]
    collection: str
    id: str | None = None
    data: JSONObject | None = None
    if_match: int | None = None


def to_public(row: Row) -> JSONObject:
    """A stored row as the API returns it: system fields first, then the data, flat."""
    return {
        "id": row["id"],
        "owner": row["owner"],
        "created": row["created"],
        "updated": row["updated"],
        "version": row["version"],
        **load_data(row["data"]),
    }


def checked_id(record_id: JSON) -> str:
    """``record_id`` in canonical lowercase form; InvalidId unless it is a UUIDv7 string."""
    if not isinstance(record_id, str):
        raise InvalidId("a record id is a UUIDv7 string")
    if not is_uuid7(record_id):
        raise InvalidId(f"{record_id[:80]!r} is not a record id (a UUIDv7)")
    return record_id.lower()


class ExpressionContext(Mapping[str, JSON]):
    """What rules and filters read as ``@auth.*``, ``@request.data`` and ``@now``; the
    clock is read once, when an expression first asks for ``@now``."""

    __slots__ = ("_values",)

    def __init__(self, principal: Principal, data: JSONObject | None = None) -> None:
        self._values: dict[str, JSON] = {
            "auth.id": principal.id,
            "auth.role": principal.role,
            "auth.verified": principal.verified,
            "request.data": data or {},
        }

    def __getitem__(self, key: str) -> JSON:
        if key == "now" and key not in self._values:
            self._values[key] = now_iso()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(CONTEXT_NAMES)

    def __len__(self) -> int:
        return len(CONTEXT_NAMES)


class Records:
    def __init__(
        self, storage: Storage, settings: Settings, cache: RecordCache | None = None
    ) -> None:
        self._storage = storage
        self._settings = settings
        self._cache = cache
        secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
        self._cursors = PageCursors(secret.encode())

    # reads

    async def get(self, name: str, record_id: str, principal: Principal) -> Read:
        record_id = checked_id(record_id)
        collections.valid_name(name)
        if self._cache is None:
            collection, record = await self._load(name, record_id, replica=True)
        else:  # fills read the primary: see roost.records.cache
            collection, record = await self._cache.record(
                name, record_id, lambda: self._load(name, record_id, replica=False)
            )
        if record is None:
            raise NotFound(f"record {record_id} does not exist in {name!r}")
        check(collection, "view", principal, record, ExpressionContext(principal))
        return Read(strip_hidden(collection, principal, record), cache_control(collection))

    async def _load(
        self, name: str, record_id: str, *, replica: bool
    ) -> tuple[Collection, JSONObject | None]:
        """The collection and the record (all fields; None when absent)."""
        async with self._storage.read(replica=replica) as conn:
            try:
                row = await conn.fetch_one(
                    f"SELECT {JOINED_COLUMNS} FROM _collections c"
                    f" LEFT JOIN {table_name(name)} r ON r.id = ? WHERE c.name = ?",
                    (record_id, name),
                )
            except MissingTable:
                raise collections.missing(name) from None
        if row is None:
            raise collections.missing(name)
        return collections.from_joined(row), None if row["id"] is None else to_public(row)

    async def _collection(self, name: str, *, replica: bool) -> Collection:
        async with self._storage.read(replica=replica) as conn:
            return await collections.load(conn, name)

    async def query(
        self,
        name: str,
        principal: Principal,
        *,
        filter: str | None = None,
        sort: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        fields: str | None = None,
    ) -> Page:
        wanted = PageRequest.parse(name, principal, filter, sort, limit, cursor, fields)
        last = self._cursors.decode(wanted.scope, cursor) if cursor else None
        if last is not None and len(last) != len(wanted.keys):
            raise InvalidCursor("the cursor does not fit this sort order")
        if self._cache is None:
            async with self._storage.read(replica=True) as conn:
                collection = await collections.load(conn, name)
                page = await self._page(conn, wanted, collection, last)
            return Page(page, cache_control(collection))
        collection, tokens = await self._cache.collection(  # fills read the primary
            name, lambda: self._collection(name, replica=False)
        )
        wanted.sql(collection, self._storage.dialect, last)  # refuses before serving
        key = None if tokens is None else self._cache.page_key(collection, tokens, wanted)
        if key is None:
            async with self._storage.read(replica=True) as conn:
                page = await self._page(conn, wanted, collection, last)
            return Page(page, cache_control(collection))

        async def fill() -> bytes:  # from the primary: see roost.records.cache
            async with self._storage.read() as conn:
                return await self._page(conn, wanted, collection, last)

        return Page(await self._cache.page(key, fill), cache_control(collection))

    async def _page(
        self,
        conn: Connection,
        wanted: PageRequest,
        collection: Collection,
        last: list[Any] | None,
    ) -> bytes:
        """One page's JSON, ``{"items": [...], "next_cursor": ...}``."""
        sql, params, as_json = wanted.sql(collection, self._storage.dialect, last)
        try:
            rows = await conn.fetch_all(sql, params)
        except MissingTable:  # dropped since its definition was read
            raise collections.missing(wanted.name) from None
        limit, keys = wanted.limit, wanted.keys
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            values = [rows[-1][f"_k{i}"] for i in range(len(keys))]
            next_cursor = self._cursors.encode(wanted.scope, values)
        items: list[JSONObject] | list[orjson.Fragment]
        if as_json:
            items = [orjson.Fragment(row["_json"]) for row in rows]
        else:
            principal = wanted.principal
            items = [strip_hidden(collection, principal, to_public(row)) for row in rows]
            if wanted.projection is not None:
                items = [project(item, wanted.projection) for item in items]
        return orjson.dumps({"items": items, "next_cursor": next_cursor})

    # writes

    async def write(
        self,
        operations: Sequence[Operation],
        principal: Principal,
        request: IdempotentRequest | None = None,
        *,
        batch: bool = False,
    ) -> list[Outcome]:
        """Apply ``operations`` atomically, all or nothing; one outcome per operation.

        With an idempotency key, a retry returns the stored outcomes and writes nothing. In a
        ``batch``, the error of a failing operation carries its index as ``operation``.
        """
        ttl = self._settings.idempotency_ttl_seconds
        async with self._storage.write() as conn:
            if request is not None:
                stored = await idempotency.recall(conn, request, ttl)
                if stored is not None:
                    return [Outcome(item["status"], item["body"]) for item in stored.body]
            outcomes = []
            for index, operation in enumerate(operations):
                try:
                    outcomes.append(await self.apply(conn, operation, principal))
                except RoostError as exc:
                    if batch:
                        exc.extra["operation"] = index
                    raise
            if request is not None:
                body = [{"status": o.status, "body": o.body} for o in outcomes]
                await idempotency.remember(conn, request, Outcome(200, body), ttl)
        return outcomes

    async def apply(self, conn: Connection, op: Operation, principal: Principal) -> Outcome:
        """Apply one write inside the caller's transaction ``conn``."""
        collection = await collections.load(conn, op.collection)
        data = op.data or {}
        _check_names(data, creating=op.action == "create", admin=principal.is_admin)
        if collection.definition.name == USERS:
            if not principal.is_admin:
                _refuse_account_fields(data)
            elif isinstance(data.get("email"), str):  # sign-in looks addresses up lowercased
                data = {**data, "email": data["email"].strip().lower()}
        context = ExpressionContext(principal, data)
        if op.action == "create":
            return await self._create(conn, collection, data, principal, context)
        assert op.id is not None
        row = await _fetch(conn, op.collection, checked_id(op.id), lock=True)
        record = to_public(row)
        check(collection, op.action, principal, record, context)
        if op.if_match is not None and op.if_match != row["version"]:
            raise PreconditionFailed(
                f"the record is at version {row['version']}, not {op.if_match}",
                current=strip_hidden(collection, principal, record),
            )
        if op.action == "update":
            return await self._update(conn, collection, row, data, principal)
        return await self._delete(conn, collection, row)

    async def _create(
        self,
        conn: Connection,
        collection: Collection,
        body: JSONObject,
        principal: Principal,
        context: Mapping[str, JSON],
    ) -> Outcome:
        data = dict(body)
        record_id = checked_id(data.pop("id")) if "id" in data else new_id()
        owner = _owner(data.pop("owner")) if "owner" in data else principal.id
        definition = collection.definition
        data = validate_data(
            data, definition.fields, strict=definition.options.strict, creating=True
        )
        now = now_iso()
        system = {"id": record_id, "owner": owner, "created": now, "updated": now, "version": 1}
        record = {**system, **data}
        check(collection, "create", principal, record, context)
        name = definition.name
        try:
            await conn.execute(
                f"INSERT INTO {table_name(name)} ({COLUMNS}) VALUES (?, ?, ?, ?, 1, ?)",
                (record_id, owner, now, now, _dumps(data)),
            )
        except UniqueViolation as exc:
            raise _conflict(exc, record_id) from None
        await self._storage.append_change(
            conn, name, record_id, "create", 1, owner, now, record=_dumps(record)
        )
        return Outcome(201, strip_hidden(collection, principal, record))

    async def _update(
        self,
        conn: Connection,
        collection: Collection,
        row: Row,
        patch: JSONObject,
        principal: Principal,
    ) -> Outcome:
        patch = dict(patch)
        owner = _owner(patch.pop("owner")) if "owner" in patch else row["owner"]
        definition = collection.definition
        data = merge_patch(load_data(row["data"]), patch)
        data = validate_data(
            data, definition.fields, strict=definition.options.strict, creating=False
        )
        now = now_iso()
        version = row["version"] + 1
        name = definition.name
        try:
            await conn.execute(
                f"UPDATE {table_name(name)} SET owner = ?, data = ?, updated = ?, version = ?"
                " WHERE id = ?",
                (owner, _dumps(data), now, version, row["id"]),
            )
        except UniqueViolation as exc:
            raise _conflict(exc, row["id"]) from None
        stored = {**row, "owner": owner, "updated": now, "version": version, "data": _dumps(data)}
        record = to_public(stored)
        await self._storage.append_change(
            conn,
            name,
            row["id"],
            "update",
            version,
            owner,
            now,
            record=_dumps(record),
            before=_dumps(to_public(row)),
        )
        return Outcome(200, strip_hidden(collection, principal, record))

    async def _delete(self, conn: Connection, collection: Collection, row: Row) -> Outcome:
        if collection.definition.name == USERS:
            await delete_account(self._storage, conn, row["id"])
        else:
            await delete_row(self._storage, conn, collection.definition.name, row)
        return Outcome(204, None)


async def delete_row(storage: Storage, conn: Connection, name: str, row: Row) -> None:
    """Delete one record (a stored row, all columns) and append its tombstone, inside the
    caller's transaction."""
    await conn.execute(f"DELETE FROM {table_name(name)} WHERE id = ?", (row["id"],))
    await storage.append_change(
        conn,
        name,
        row["id"],
        "delete",
        row["version"] + 1,
        row["owner"],
        now_iso(),
        before=_dumps(to_public(row)),
    )


ACCOUNT_TABLES = ("_credentials", "_sessions", "_one_time_tokens", "_identities")
"""Roost's own rows about a user; they go with the account."""


async def delete_account(storage: Storage, conn: Connection, user_id: str) -> None:
    """Delete a user, every record they own (with tombstones) and their sign-in data."""
    names = [row["name"] for row in await conn.fetch_all("SELECT name FROM _collections")]
    for name in names:
        rows = await conn.fetch_all(
            f"SELECT {COLUMNS} FROM {table_name(name)} WHERE owner = ? OR id = ?",
            (user_id, user_id if name == USERS else ""),
        )
        for row in rows:
            await delete_row(storage, conn, name, row)
    for table in ACCOUNT_TABLES:
        await conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))


def page_sql(
    name: str,
    keys: Sequence[SortKey],
    clauses: Sequence[tuple[str, Sequence[Any]]],
    limit: int,
    dialect: Dialect,
    columns: str = COLUMNS,
) -> tuple[str, list[Any]]:
    """The query of one page of ``name``: ``columns`` of the rows passing every clause, in
    ``keys`` order, with their sort values as ``_k0``, ``_k1``, ..."""
    sort_values = sort_values_sql(keys, dialect)
    selected = ", ".join(f"{value} AS _k{i}" for i, value in enumerate(sort_values))
    sql = f"SELECT {columns}, {selected} FROM {table_name(name)}"
    params: list[Any] = []
    if clauses:
        sql += " WHERE " + " AND ".join(f"({clause})" for clause, _ in clauses)
        for _, clause_params in clauses:
            params.extend(clause_params)
    sql += f" ORDER BY {order_by_sql(keys, dialect)} LIMIT ?"
    params.append(limit)
    return sql, params


async def _fetch(conn: Connection, name: str, record_id: str, lock: bool = False) -> Row:
    """The stored row; with ``lock``, locked until the write transaction ``conn`` ends, so a
    concurrent writer waits and then reads this one's result (no lost update)."""
    row = await conn.fetch_one(
        f"SELECT {COLUMNS} FROM {table_name(name)} WHERE id = ?{conn.row_lock if lock else ''}",
        (record_id,),
    )
    if row is None:
        raise NotFound(f"record {record_id} does not exist in {name!r}")
    return row


@lru_cache(maxsize=256)
def _sort_keys(sort: str) -> tuple[SortKey, ...]:
    """A ``sort`` parameter's keys, with the ``id`` tie-breaker (clients repeat them too)."""
    return with_tiebreaker(parse_sort(sort))


def _check_names(data: JSONObject, *, creating: bool, admin: bool) -> None:
    """Client names only; ``id`` on create (client-made ids); ``owner`` from admins."""
    allowed = ({"id"} if creating else set()) | ({"owner"} if admin else set())
    errors = check_names(data, allow=allowed)
    if errors:
        raise ValidationFailed(errors[0]["message"], errors)


def _refuse_account_fields(data: JSONObject) -> None:
    """Only the auth endpoints and admins write a user's email, role and flags."""
    for name in data:
        if name in USER_FIELDS:
            raise Forbidden(f"{name} of a user is changed through /api/auth, not here")


def _owner(value: JSON) -> str | None:
    if value is None or (isinstance(value, str) and 0 < len(value) <= 64):
        return value
    raise ValidationFailed(
        "owner must be a user id or null", [{"field": "owner", "message": "a user id or null"}]
    )


def _conflict(exc: UniqueViolation, record_id: str) -> Conflict:
    if ".id" in str(exc) or (exc.index or "").endswith("_pkey"):
        return Conflict(f"a record with id {record_id} already exists")
    return Conflict("the record breaks a unique index of its collection")


def _dumps(data: JSONObject) -> str:
    return orjson.dumps(data).decode()
