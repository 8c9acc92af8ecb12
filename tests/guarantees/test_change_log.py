"""The change log: every committed write appends exactly one change; a failed write none.

Positions strictly increase in commit order, and a batch's changes follow its operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from roost.components import Components
from roost.ids import new_id
from roost.storage.base import Change

POSTS = {
    "name": "posts",
    "fields": {"title": {"type": "string", "required": True, "max_length": 50}},
    "indexes": [{"fields": ["slug"], "unique": True}],
    "rules": {"list": "", "view": "", "create": "", "update": "", "delete": ""},
}
RECORDS = "/api/collections/posts/records"


async def all_changes(components: Components) -> list[Change]:
    return await components.storage.changes_since(0, None, 100_000)


@pytest.fixture
async def posts(admin: httpx.AsyncClient) -> dict[str, Any]:
    """The ``posts`` collection with one record (slug "taken"), returned."""
    assert (await admin.post("/api/collections", json=POSTS)).status_code == 201
    created = await admin.post(RECORDS, json={"title": "first", "slug": "taken"})
    assert created.status_code == 201
    record: dict[str, Any] = created.json()
    return record


async def test_each_committed_write_appends_one_change(
    admin: httpx.AsyncClient, components: Components, posts: dict[str, Any]
) -> None:
    record_id = new_id()
    other = posts["id"]
    # (request, expected changes as (op, record id, version))
    steps: list[tuple[tuple[str, str, dict[str, Any]], list[tuple[str, str, int]]]] = [
        (("POST", RECORDS, {"json": {"id": record_id, "title": "a"}}), [("create", record_id, 1)]),
        (("PATCH", f"{RECORDS}/{record_id}", {"json": {"title": "b"}}), [("update", record_id, 2)]),
        (
            ("PATCH", f"{RECORDS}/{record_id}", {"json": {"n": 1}, "headers": {"If-Match": '"2"'}}),
            [("update", record_id, 3)],
        ),
        (("DELETE", f"{RECORDS}/{record_id}", {}), [("delete", record_id, 4)]),
        (
            ("POST", RECORDS, {"json": {"title": "k"}, "headers": {"Idempotency-Key": "k1"}}),
            [("create", "*", 1)],
        ),
    ]
    batch_id = new_id()
    batch = {
        "operations": [
            {"action": "create", "collection": "posts", "id": batch_id, "data": {"title": "x"}},
            {"action": "update", "collection": "posts", "id": other, "data": {"title": "y"}},
            {"action": "update", "collection": "posts", "id": batch_id, "data": {"title": "z"}},
            {"action": "delete", "collection": "posts", "id": other, "if_match": 2},
        ]
    }
    steps.append(
        (
            ("POST", "/api/batch", {"json": batch}),
            [("create", batch_id, 1), ("update", other, 2), ("update", batch_id, 2)]
            + [("delete", other, 3)],
        )
    )
    for (method, path, kwargs), expected in steps:
        before = await all_changes(components)
        response = await admin.request(method, path, **kwargs)
        assert response.status_code in (200, 201, 204), response.text
        after = await all_changes(components)
        assert after[: len(before)] == before, "the log only grows at its end"
        new = after[len(before) :]
        got = [(c.op, c.record_id, c.version) for c in new]
        if expected[0][1] == "*":
            expected = [(expected[0][0], response.json()["id"], expected[0][2])]
        assert got == expected, f"{method} {path}"
        assert all(c.collection == "posts" for c in new)

    # a retry with the same Idempotency-Key returns the first result and logs nothing
    before = await all_changes(components)
    retry = await admin.post(RECORDS, json={"title": "k"}, headers={"Idempotency-Key": "k1"})
    assert retry.status_code == 201
    assert await all_changes(components) == before

    positions = [c.position for c in await all_changes(components)]
    assert positions == sorted(set(positions)), "positions strictly increase"


@dataclass(frozen=True)
class Failing:
    name: str
    method: str
    path: str
    status: int
    json: Any = None
    headers: dict[str, str] | None = None
    anonymous: bool = False
    content: bytes | None = None


FAILING = [
    Failing("missing required field", "POST", RECORDS, 400, {"slug": "s"}),
    Failing("string too long", "PATCH", f"{RECORDS}/{{id}}", 400, {"title": "x" * 51}),
    Failing("system field", "POST", RECORDS, 400, {"title": "a", "version": 9}),
    Failing("unsafe integer", "POST", RECORDS, 400, {"title": "a", "n": 2**53}),
    Failing("invalid json", "POST", RECORDS, 400, content=b"{not json"),
    Failing(
        "stale If-Match on update",
        "PATCH",
        f"{RECORDS}/{{id}}",
        412,
        {"title": "b"},
        {"If-Match": '"7"'},
    ),
    Failing(
        "stale If-Match on delete", "DELETE", f"{RECORDS}/{{id}}", 412, None, {"If-Match": '"0"'}
    ),
    Failing("duplicate id", "POST", RECORDS, 409, {"id": "{id}", "title": "dup"}),
    Failing("unique index", "POST", RECORDS, 409, {"title": "dup", "slug": "taken"}),
    Failing("no such record", "PATCH", f"{RECORDS}/{new_id()}", 404, {"title": "b"}),
    Failing("no such collection", "POST", "/api/collections/nope/records", 404, {"title": "a"}),
    Failing(
        "rule refuses anonymous",
        "POST",
        "/api/collections/closed/records",
        401,
        {"title": "a"},
        anonymous=True,
    ),
    Failing(
        "idempotency key reused",
        "POST",
        RECORDS,
        422,
        {"title": "other body"},
        {"Idempotency-Key": "used"},
    ),
    Failing(
        "batch rolled back by its last operation",
        "POST",
        "/api/batch",
        409,
        {
            "operations": [
                {"action": "create", "collection": "posts", "data": {"title": "a", "slug": "new"}},
                {"action": "update", "collection": "posts", "id": "{id}", "data": {"title": "b"}},
                {"action": "delete", "collection": "posts", "id": "{id}"},
                {
                    "action": "create",
                    "collection": "posts",
                    "data": {"title": "c", "slug": "new"},
                },
            ]
        },
    ),
    Failing(
        "batch rolled back by a stale if_match",
        "POST",
        "/api/batch",
        412,
        {
            "operations": [
                {"action": "update", "collection": "posts", "id": "{id}", "data": {"title": "b"}},
                {"action": "update", "collection": "posts", "id": "{id}", "if_match": 1},
            ]
        },
    ),
]


def _fill(value: Any, record_id: str) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", record_id)
    if isinstance(value, dict):
        return {k: _fill(v, record_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, record_id) for v in value]
    return value


@pytest.mark.parametrize("case", FAILING, ids=[case.name for case in FAILING])
async def test_a_failed_write_appends_nothing(
    app: Starlette,
    admin: httpx.AsyncClient,
    components: Components,
    posts: dict[str, Any],
    case: Failing,
) -> None:
    closed = await admin.post("/api/collections", json={"name": "closed"})
    assert closed.status_code == 201
    used = await admin.post(
        RECORDS, json={"title": "first use"}, headers={"Idempotency-Key": "used"}
    )
    assert used.status_code == 201
    records_before = (await admin.get(RECORDS)).json()["items"]
    before = await all_changes(components)

    headers = dict(case.headers or {})
    kwargs: dict[str, Any] = {"headers": headers}
    if case.content is not None:
        kwargs["content"] = case.content
        headers["Content-Type"] = "application/json"
    elif case.json is not None:
        kwargs["json"] = _fill(case.json, posts["id"])
    if case.anonymous:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as anon:
            response = await anon.request(case.method, _fill(case.path, posts["id"]), **kwargs)
    else:
        response = await admin.request(case.method, _fill(case.path, posts["id"]), **kwargs)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await all_changes(components) == before
    assert (await admin.get(RECORDS)).json()["items"] == records_before
