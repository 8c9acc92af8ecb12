"""``POST /api/batch``: up to 100 writes in one transaction, all or nothing."""

from __future__ import annotations

from typing import Any

import pytest

from api.scenario import Api, Scenario, ids
from roost.ids import new_id

BATCH = "/api/batch"


def create(title: Any = "new", **extra: Any) -> dict[str, Any]:
    return {"action": "create", "collection": "posts", "data": {"title": title}, **extra}


def update(key: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": "update", "collection": "posts", "id": "{" + key + "}", "data": data, **extra}


def delete(key: str, **extra: Any) -> dict[str, Any]:
    return {"action": "delete", "collection": "posts", "id": "{" + key + "}", **extra}


def ok(name: str, operations: list[dict[str, Any]], *results: Any) -> Scenario:
    return Scenario(
        name,
        "POST",
        BATCH,
        200,
        body={"operations": operations},
        fragments=({"results": list(results)},) if results else (),
    )


def fails(
    name: str, operations: Any, status: int, code: str, *fragments: Any, auth: Any = "admin"
) -> Scenario:
    return Scenario(
        name,
        "POST",
        BATCH,
        status,
        code,
        body={"operations": operations},
        fragments=fragments,
        auth=auth,
    )


ROWS: list[Scenario] = [
    ok(
        "create, update, delete",
        [create("x"), update("a", {"score": 7}), delete("b")],
        {"status": 201, "record": {"title": "x", "version": 1}},
        {"status": 200, "record": {"id": "{a}", "score": 7, "version": 2}},
        {"status": 204, "record": None},
    ),
    ok(
        "create with a client id, then update it",
        [create("x", id="{new}"), update("new", {"title": "y"})],
        {"status": 201, "record": {"id": "{new}", "version": 1}},
        {"status": 200, "record": {"id": "{new}", "title": "y", "version": 2}},
    ),
    ok(
        "two updates of one record",
        [update("a", {"score": 5}, if_match=1), update("a", {"score": 6}, if_match=2)],
        {"status": 200, "record": {"score": 6, "version": 3}},
    ),
    ok("100 operations", [create(f"t{i}") for i in range(100)]),
    ok(
        "delete then create the same id",
        [delete("a"), create("again", id="{a}")],
        {"status": 201, "record": {"id": "{a}", "title": "again", "version": 1}},
    ),
    fails(
        "validation error at 2",
        [create("x"), update("a", {"score": 8}), create(None)],
        400,
        "validation_failed",
        {"operation": 2, "errors": [{"field": "title"}]},
    ),
    fails(
        "stale if_match at 1",
        [create("x"), update("a", {"score": 8}, if_match=9), delete("b")],
        412,
        "precondition_failed",
        {"operation": 1, "current": {"id": "{a}", "version": 1}},
    ),
    fails(
        "unknown record at 2",
        [delete("a"), delete("b"), delete("new")],
        404,
        "not_found",
        {"operation": 2},
    ),
    fails(
        "deleted earlier in the batch at 1",
        [delete("a"), update("a", {"score": 1})],
        404,
        "not_found",
        {"operation": 1},
    ),
    fails(
        "unknown collection at 1",
        [create("x"), {"action": "create", "collection": "nope", "data": {}}],
        404,
        "not_found",
        {"operation": 1},
    ),
    fails(
        "injected collection name at 1",
        [create("x"), {"action": "create", "collection": 'posts"; DROP TABLE _changes; --'}],
        404,
        "not_found",
        {"operation": 1},
    ),
    fails(
        "duplicate unique value inside the batch at 1",
        [
            create("x", data={"title": "x", "slug": "s"}),
            create("y", data={"title": "y", "slug": "s"}),
        ],
        409,
        "conflict",
        {"operation": 1},
    ),
    fails(
        "duplicate id inside the batch at 1",
        [create("x", id="{new}"), create("y", id="{new}")],
        409,
        "conflict",
        {"operation": 1},
    ),
    fails("existing id at 0", [create("x", id="{a}")], 409, "conflict", {"operation": 0}),
    fails("bad id at 0", [delete("bad")], 400, "invalid_id", {"operation": 0}),
    fails(
        "reserved field at 0",
        [update("a", {"version": 9})],
        400,
        "validation_failed",
        {"operation": 0, "errors": [{"field": "version"}]},
    ),
    fails(
        "anonymous (create rule null)",
        [create("x")],
        401,
        "unauthorized",
        {"operation": 0},
        auth="anonymous",
    ),
    fails(
        "a user (create rule null)",
        [create("x")],
        403,
        "forbidden",
        {"operation": 0},
        auth="user",
    ),
    fails("no operations", [], 400, "validation_failed", {"errors": [{"field": "operations"}]}),
    fails(
        "101 operations",
        [create(f"t{i}") for i in range(101)],
        400,
        "validation_failed",
        {"errors": [{"field": "operations"}]},
    ),
    fails("operations not a list", {"0": create()}, 400, "validation_failed"),
    fails(
        "unknown action",
        [{"action": "upsert", "collection": "posts", "data": {}}],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.action"}]},
    ),
    fails(
        "update without id",
        [create("x"), {"action": "update", "collection": "posts", "data": {}}],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.1.id"}]},
    ),
    fails(
        "delete without id",
        [{"action": "delete", "collection": "posts"}],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.id"}]},
    ),
    fails(
        "missing collection",
        [{"action": "create", "data": {}}],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.collection"}]},
    ),
    fails(
        "unknown key in an operation",
        [create("x", upsert=True)],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.upsert"}]},
    ),
    fails(
        "data not an object",
        [{"action": "create", "collection": "posts", "data": ["x"]}],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.data"}]},
    ),
    fails(
        "if_match 0",
        [update("a", {}, if_match=0)],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.if_match"}]},
    ),
    fails(
        "if_match a string",
        [update("a", {}, if_match='"1"')],
        400,
        "validation_failed",
        {"errors": [{"field": "operations.0.if_match"}]},
    ),
    fails("operation not an object", ["create"], 400, "validation_failed"),
    Scenario(
        "unknown top-level key",
        "POST",
        BATCH,
        400,
        "validation_failed",
        body={"operations": [create()], "atomic": False},
    ),
    Scenario("body an array", "POST", BATCH, 400, "invalid_json", body=[create()]),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
async def test_batch(posts: Api, row: Scenario) -> None:
    posts.values["new"] = new_id()
    posts.values["bad"] = "not-an-id"
    before = await posts.snapshot()

    response = await posts.run(row)

    if row.status != 200:
        assert await posts.snapshot() == before, "a failed batch wrote something"
        return
    results = response.json()["results"]
    assert len(results) == len(row.body["operations"])
    changes = (await posts.changes())[len(before[0]) :]
    ops = {201: "create", 200: "update", 204: "delete"}
    assert [change[2] for change in changes] == [ops[result["status"]] for result in results]
