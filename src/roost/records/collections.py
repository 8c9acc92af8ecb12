"""Collection definitions: schema, indexes, rules and options, stored in ``_collections``."""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from roost.errors import Conflict, Forbidden, NotFound, ValidationFailed
from roost.query.errors import ExpressionError
from roost.query.parser import parse, parse_path
from roost.records.fields import FIELD_NAME, SYSTEM_FIELDS, FieldSpec, now_iso
from roost.storage.base import Connection, IndexSpec, Row, Storage, UniqueViolation
from roost.types import JSONObject

COLLECTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,60}$")
ACTIONS = ("list", "view", "create", "update", "delete")
MAX_FIELDS = 200
MAX_INDEXES = 32
MAX_INDEX_FIELDS = 8


class IndexDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: Annotated[list[str], Field(min_length=1, max_length=MAX_INDEX_FIELDS)]
    unique: bool = False

    @field_validator("fields")
    @classmethod
    def _paths(cls, fields: list[str]) -> list[str]:
        for path in fields:
            try:
                parse_path(path)
            except ExpressionError as exc:
                raise ValueError(f"{path!r} is not a field path: {exc.message}") from exc
        if len(set(fields)) != len(fields):
            raise ValueError("an index names each field once")
        return fields


class Rules(BaseModel):
    """Per action: ``None`` admins only, ``""`` anyone, else an expression."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    list: str | None = None
    view: str | None = None
    create: str | None = None
    update: str | None = None
    delete: str | None = None

    @field_validator("*")
    @classmethod
    def _expression(cls, rule: str | None) -> str | None:
        if rule:
            try:
                parse(rule)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from exc
        return rule


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strict: bool = False
    """Reject record fields that the schema does not declare."""
    cache_max_age: int | None = Field(default=None, ge=0, le=365 * 24 * 3600)
    """Seconds clients (and, for data anyone may read, shared caches) may reuse a record
    or page without asking again; None: they revalidate every time (``no-cache``)."""
    cache_lists: bool = False
    """Keep list pages in the server's cache (until the next write to the collection):
    for collections read far more often than written."""


class CollectionDef(BaseModel):
    """What an admin declares; the API returns it with ``created``, ``updated``, ``version``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    fields: Annotated[dict[str, FieldSpec], Field(max_length=MAX_FIELDS)] = {}
    indexes: Annotated[list[IndexDef], Field(max_length=MAX_INDEXES)] = []
    rules: Rules = Rules()
    options: Options = Options()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not COLLECTION_NAME.match(name):
            raise ValueError("collection names match ^[a-z][a-z0-9_]{0,60}$")
        return name

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in fields:
            if name in SYSTEM_FIELDS or not FIELD_NAME.match(name):
                raise ValueError(f"{name[:80]!r} is not a valid field name")
        return fields

    @cached_property
    def hidden_fields(self) -> frozenset[str]:
        """Fields only admins and the record's owner see."""
        return frozenset(name for name, spec in self.fields.items() if spec.hidden)

    def index_specs(self) -> list[IndexSpec]:
        unique = {(tuple(i.fields), i.unique) for i in self.indexes}
        return [IndexSpec(fields, flag) for fields, flag in sorted(unique)]


class Collection(BaseModel):
    """A stored definition with its bookkeeping."""

    model_config = ConfigDict(frozen=True)

    definition: CollectionDef
    created: str
    updated: str
    version: int

    def public(self) -> JSONObject:
        definition = self.definition.model_dump(mode="json")
        definition["fields"] = {
            name: spec.model_dump(mode="json", exclude_none=True)
            for name, spec in self.definition.fields.items()
        }
        return {
            **definition,
            "created": self.created,
            "updated": self.updated,
            "version": self.version,
        }


USERS = "users"
USER_FIELDS = {
    "email": FieldSpec(type="string", max_length=254, hidden=True),
    "verified": FieldSpec(type="boolean", required=True, default=False),
    "anonymous": FieldSpec(type="boolean", required=True, default=False),
    "role": FieldSpec(type="string", required=True, default="user", values=["user", "admin"]),
}
"""Fields every user has; only the auth endpoints and admins write them."""
USERS_DEFINITION = CollectionDef(
    name=USERS,
    fields=USER_FIELDS,
    indexes=[IndexDef(fields=["email"], unique=True)],
    rules=Rules(list="id = @auth.id", view="id = @auth.id"),
)
BUILTIN = {USERS: USERS_DEFINITION}


def with_builtin_parts(definition: CollectionDef) -> CollectionDef:
    """A built-in collection keeps its own fields and indexes whatever an admin changes."""
    builtin = BUILTIN.get(definition.name)
    if builtin is None:
        return definition
    indexes = list(definition.indexes)
    indexes += [index for index in builtin.indexes if index not in indexes]
    return definition.model_copy(
        update={"fields": {**definition.fields, **builtin.fields}, "indexes": indexes}
    )


def parse_definition(body: Any) -> CollectionDef:
    """Validate a definition from a request body; errors name the offending field."""
    if isinstance(body, dict) and isinstance(body.get("name"), str) and body["name"] in BUILTIN:
        raise ValidationFailed(
            f"{body['name']!r} is a built-in collection",
            [{"field": "name", "message": "reserved for a built-in collection"}],
        )
    return _validated(body)


def _validated(body: Any) -> CollectionDef:
    try:
        return CollectionDef.model_validate(body)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "body",
                "message": error["msg"].removeprefix("Value error, "),
            }
            for error in exc.errors()
        ]
        raise ValidationFailed(errors[0]["message"], errors) from None


JOINED_COLUMNS = (
    "c.definition AS _definition, c.created AS _collection_created,"
    " c.updated AS _collection_updated, c.version AS _collection_version"
)
"""Select these from ``_collections c`` joined to a query, then give its row to
``from_joined``: the collection comes with the rows in one round trip."""


def missing(name: str) -> NotFound:
    return NotFound(f"collection {name[:80]!r} does not exist")


def valid_name(name: str) -> str:
    """``name`` if it can name a collection, else NotFound (no such collection can exist)."""
    if not COLLECTION_NAME.match(name):
        raise missing(name)
    return name


async def load(conn: Connection, name: str) -> Collection:
    row = await conn.fetch_one(
        "SELECT definition, created, updated, version FROM _collections WHERE name = ?",
        (valid_name(name),),
    )
    if row is None:
        raise missing(name)
    return _collection(row["definition"], row["created"], row["updated"], row["version"])


def from_joined(row: Row) -> Collection:
    """The collection selected with ``JOINED_COLUMNS``."""
    return _collection(
        row["_definition"],
        row["_collection_created"],
        row["_collection_updated"],
        row["_collection_version"],
    )


@lru_cache(maxsize=1024)
def _collection(stored: str, created: str, updated: str, version: int) -> Collection:
    """A stored definition, parsed once per process: a stored row is an immutable value,
    and any change to it (or a drop and re-create) is a different row."""
    return Collection(
        definition=CollectionDef.model_validate_json(stored),
        created=created,
        updated=updated,
        version=version,
    )


class Collections:
    """Create, read, change and drop collection definitions (admin only; callers check)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def all(self) -> list[Collection]:
        async with self._storage.read(replica=True) as conn:
            rows = await conn.fetch_all("SELECT name FROM _collections ORDER BY name")
            return [await load(conn, row["name"]) for row in rows]

    async def get(self, name: str) -> Collection:
        async with self._storage.read(replica=True) as conn:
            return await load(conn, name)

    async def create(self, definition: CollectionDef) -> Collection:
        async with self._storage.write() as conn:
            if await _exists(conn, definition.name):
                raise Conflict(f"collection {definition.name!r} already exists")
            return await self._insert(conn, definition)

    async def ensure_builtin(self) -> None:
        """Create the built-in collections that do not exist yet (at start). Instances
        starting together on a new database race to do it: the loser's insert waits for
        the winner's commit, fails, and the second look finds them made."""
        try:
            await self._create_missing_builtins()
        except UniqueViolation:
            await self._create_missing_builtins()

    async def _create_missing_builtins(self) -> None:
        async with self._storage.write() as conn:
            for definition in BUILTIN.values():
                if not await _exists(conn, definition.name):
                    await self._insert(conn, definition)

    async def _insert(self, conn: Connection, definition: CollectionDef) -> Collection:
        now = now_iso()
        await conn.execute(
            "INSERT INTO _collections (name, definition, created, updated, version)"
            " VALUES (?, ?, ?, ?, 1)",
            (definition.name, _dump(definition), now, now),
        )
        await self._define(conn, definition)
        return Collection(definition=definition, created=now, updated=now, version=1)

    async def update(self, name: str, patch: JSONObject) -> Collection:
        if "name" in patch and patch["name"] != name:
            raise ValidationFailed(
                "collections cannot be renamed", [{"field": "name", "message": "read-only"}]
            )
        async with self._storage.read() as conn:
            current = await load(conn, name)
        wanted = self._merged(current, patch)
        try:  # outside the transaction, so a long index build does not block writes
            await self._storage.build_indexes(name, wanted.index_specs())
        except UniqueViolation as exc:
            raise Conflict("existing records break a unique index of this definition") from exc
        async with self._storage.write() as conn:
            current = await load(conn, name)
            definition = self._merged(current, patch)
            now = now_iso()
            await conn.execute(
                "UPDATE _collections SET definition = ?, updated = ?, version = version + 1"
                " WHERE name = ?",
                (_dump(definition), now, name),
            )
            await self._define(conn, definition)
        return Collection(
            definition=definition,
            created=current.created,
            updated=now,
            version=current.version + 1,
        )

    async def delete(self, name: str) -> None:
        if name in BUILTIN:
            raise Forbidden(f"{name!r} is a built-in collection and cannot be dropped")
        async with self._storage.write() as conn:
            await load(conn, name)
            await conn.execute("DELETE FROM _collections WHERE name = ?", (name,))
            await self._storage.drop_collection(conn, name)
            conn.touch(name)

    @staticmethod
    def _merged(current: Collection, patch: JSONObject) -> CollectionDef:
        merged = {**current.definition.model_dump(mode="json"), **patch}
        return with_builtin_parts(_validated(merged))

    async def _define(self, conn: Connection, definition: CollectionDef) -> None:
        conn.touch(definition.name)
        try:
            await self._storage.define_collection(conn, definition.name, definition.index_specs())
        except UniqueViolation as exc:
            raise Conflict("existing records break a unique index of this definition") from exc


async def _exists(conn: Connection, name: str) -> bool:
    return await conn.fetch_one("SELECT 1 FROM _collections WHERE name = ?", (name,)) is not None


def _dump(definition: CollectionDef) -> str:
    return orjson.dumps(definition.model_dump(mode="json")).decode()
