"""Scenario tables for the HTTP API: each case is one row, run and checked the same way.

A row names the request (method, path, auth, headers, query, JSON body or raw content) and
what must come back (status, problem ``code``, JSON fragments that must appear, text that
must not). ``{name}`` in a path, query value or body string is replaced by a value the
test made (a record id, a cursor) before the request is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx
import orjson

from roost.components import Components
from roost.storage.sqlite import SQLiteStorage

Auth = Literal["admin", "user", "anonymous", "bogus"]
"""Who sends a row: the admin, a signed-in ordinary user, nobody, or an unknown token.
Their user ids are ``{admin}`` and ``{user}`` in the row's values."""
NO_BODY: Any = object()
NEVER_IN_A_RESPONSE = ("Traceback", 'File "', "password_hash", "token_hash", "sqlite3")

POSTS: dict[str, Any] = {
    "name": "posts",
    "fields": {
        "title": {"type": "string", "required": True, "max_length": 200},
        "score": {"type": "integer", "min": 0, "max": 1000, "default": 0},
        "ratio": {"type": "number", "min": -1, "max": 1},
        "done": {"type": "boolean"},
        "meta": {"type": "object"},
        "tags": {"type": "array"},
        "published": {"type": "datetime"},
    },
    "indexes": [{"fields": ["score"]}, {"fields": ["slug"], "unique": True}],
    "rules": {"list": "", "view": "", "create": None, "update": None, "delete": None},
}
"""Anyone reads; only admins write (the ``null`` rules)."""


@dataclass(frozen=True)
class Scenario:
    """One request and what must come back."""

    id: str
    method: str
    path: str
    status: int
    code: str | None = None
    body: Any = NO_BODY
    content: bytes | None = None
    stream: bool = False
    """Send ``content`` in chunks, without Content-Length."""
    headers: Mapping[str, str | bytes] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    auth: Auth = "admin"
    fragments: tuple[Any, ...] = ()
    """Each is a JSON value that must be contained in the response body, or a string that
    must occur in the response text."""
    absent: tuple[str, ...] = ()
    """Strings that must not occur in the response text."""
    items: tuple[Any, ...] | None = None
    """For a page: one fragment per returned record, in order."""
    response_headers: Mapping[str, str] = field(default_factory=dict)


def substitute(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with every ``{name}`` of ``values`` replaced, in strings at any depth."""
    if isinstance(value, str):
        for name, replacement in values.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, dict):
        return {key: substitute(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, values) for item in value]
    return value


def contains(actual: Any, fragment: Any) -> bool:
    """``fragment`` is in ``actual``: objects by subset, lists item by item, else equal."""
    if isinstance(fragment, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in fragment.items()
        )
    if isinstance(fragment, list):
        return isinstance(actual, list) and all(
            any(contains(item, wanted) for item in actual) for wanted in fragment
        )
    return type(actual) is type(fragment) and actual == fragment


def check(response: httpx.Response, row: Scenario) -> None:
    """Assert that ``response`` is what ``row`` expects."""
    text = response.text
    where = f"{row.method} {row.path} → {response.status_code} {text[:500]}"
    assert response.status_code == row.status, where
    for forbidden in (*NEVER_IN_A_RESPONSE, *row.absent):
        assert forbidden not in text, f"{forbidden!r} in {where}"
    if row.code is not None:
        assert response.headers["content-type"] == "application/problem+json", where
        problem = response.json()
        assert problem["code"] == row.code, where
        assert problem["status"] == row.status, where
        assert problem["type"].endswith("/" + row.code), where
        assert isinstance(problem["title"], str) and isinstance(problem["detail"], str), where
    for name, value in row.response_headers.items():
        assert response.headers.get(name) == value, f"{name}: {value} not in {where}"
    for fragment in row.fragments:
        if isinstance(fragment, str):
            assert fragment in text, f"{fragment!r} not in {where}"
        else:
            assert contains(response.json(), fragment), f"{fragment!r} not in {where}"
    if row.items is not None:
        items = response.json()["items"]
        assert len(items) == len(row.items), where
        for item, fragment in zip(items, row.items, strict=True):
            assert contains(item, fragment), f"{fragment!r} is not {item!r} in {where}"


@dataclass
class Api:
    """The app under test: an anonymous client, the access tokens of an admin and of an
    ordinary user, and the components."""

    client: httpx.AsyncClient
    token: str
    user_token: str
    components: Components
    values: dict[str, str] = field(default_factory=dict)

    def auth_headers(self, auth: Auth) -> dict[str, str]:
        if auth == "admin":
            return {"Authorization": f"Bearer {self.token}"}
        if auth == "user":
            return {"Authorization": f"Bearer {self.user_token}"}
        if auth == "bogus":
            return {"Authorization": "Bearer not-a-real-token"}
        return {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        auth: Auth = "admin",
        body: Any = NO_BODY,
        content: bytes | None = None,
        stream: bool = False,
        headers: Mapping[str, str | bytes] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent: dict[str, str | bytes] = {**self.auth_headers(auth), **(headers or {})}
        if body is not NO_BODY:
            content = orjson.dumps(body)
            sent.setdefault("Content-Type", "application/json")
        return await self.client.request(
            method,
            path,
            content=chunks(content) if stream and content is not None else content,
            headers=sent,
            params=dict(params or {}),
        )

    async def run(self, row: Scenario) -> httpx.Response:
        """Send ``row`` (after substituting ``values``) and check what comes back."""
        response = await self.request(
            row.method,
            substitute(row.path, self.values),
            auth=row.auth,
            body=substitute(row.body, self.values),
            content=row.content,
            stream=row.stream,
            headers=substitute(dict(row.headers), self.values),
            params=substitute(dict(row.params), self.values),
        )
        expected = replace(
            row,
            fragments=substitute(list(row.fragments), self.values),
            absent=substitute(list(row.absent), self.values),
            items=None if row.items is None else substitute(list(row.items), self.values),
            response_headers=substitute(dict(row.response_headers), self.values),
        )
        check(response, expected)
        return response

    async def create_collection(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.request("POST", "/api/collections", body=definition)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def create_record(
        self, collection: str, data: Mapping[str, Any], auth: Auth = "admin"
    ) -> dict[str, Any]:
        response = await self.request(
            "POST", f"/api/collections/{collection}/records", auth=auth, body=dict(data)
        )
        assert response.status_code == 201, response.text
        record: dict[str, Any] = response.json()
        return record

    async def changes(self) -> list[tuple[str, str, str, int]]:
        """The whole change log as (collection, record id, op, version)."""
        found = await self.components.storage.changes_since(0, None, 100_000)
        return [(c.collection, c.record_id, c.op, c.version) for c in found]

    async def count(self, collection: str) -> int:
        """How many records ``collection`` holds (-1 when it has no table)."""
        async with self.components.storage.read() as conn:
            if isinstance(self.components.storage, SQLiteStorage):
                sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            else:
                sql = "SELECT 1 WHERE to_regclass(quote_ident(?)) IS NOT NULL"
            if await conn.fetch_one(sql, (f"r_{collection}",)) is None:
                return -1
            row = await conn.fetch_one(f'SELECT COUNT(*) AS n FROM "r_{collection}"')
        assert row is not None
        return int(row["n"])

    async def snapshot(self, collection: str = "posts") -> tuple[Any, ...]:
        """What a write would change: the change log, the records of ``collection`` and the
        stored idempotency keys."""
        async with self.components.storage.read() as conn:
            rows = await conn.fetch_all(f'SELECT * FROM "r_{collection}" ORDER BY id')
            keys = await conn.fetch_all("SELECT scope, key FROM _idempotency ORDER BY key")
        return (await self.changes(), await self.count(collection), rows, keys)


async def chunks(content: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    """``content`` as a stream, which httpx sends without Content-Length."""
    for start in range(0, len(content), size):
        yield content[start : start + size]


def ids(rows: list[Scenario]) -> list[str]:
    return [row.id for row in rows]
