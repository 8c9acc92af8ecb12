"""``/api/collections/{name}/records``: create, get, list, merge-patch, delete, rules."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from api.scenario import Api, Auth, Scenario, ids
from roost.ids import is_uuid7, new_id
from roost.records.fields import SYSTEM_FIELDS

RECORDS = "/api/collections/posts/records"
A = RECORDS + "/{a}"


def invalid(field: str, message: str, body: dict[str, Any], method: str = "POST") -> Scenario:
    """A write refused by the schema, with an error naming ``field``."""
    return Scenario(
        f"{method.lower()}: {message}",
        method,
        RECORDS if method == "POST" else A,
        400,
        "validation_failed",
        body=body,
        fragments=({"detail": message, "errors": [{"field": field, "message": message}]},),
    )


WRITES: list[Scenario] = [
    Scenario(
        "create: server id, defaults",
        "POST",
        RECORDS,
        201,
        body={"title": "t"},
        fragments=({"title": "t", "score": 0, "version": 1, "owner": "{admin}"},),
        response_headers={"etag": '"1"'},
    ),
    Scenario(
        "create: an admin sets the owner",
        "POST",
        RECORDS,
        201,
        body={"title": "t", "owner": "{user}"},
        fragments=({"title": "t", "owner": "{user}"},),
    ),
    Scenario(
        "create: an admin sets no owner",
        "POST",
        RECORDS,
        201,
        body={"title": "t", "owner": None},
        fragments=({"title": "t", "owner": None},),
    ),
    Scenario(
        "create: client UUIDv7 id",
        "POST",
        RECORDS,
        201,
        body={"id": "{new}", "title": "offline"},
        fragments=({"id": "{new}", "title": "offline", "version": 1},),
    ),
    Scenario(
        "create: uppercase client id is stored lowercase",
        "POST",
        RECORDS,
        201,
        body={"id": "{NEW}", "title": "offline"},
        fragments=({"id": "{new}"},),
    ),
    Scenario(
        "create: existing id",
        "POST",
        RECORDS,
        409,
        "conflict",
        body={"id": "{a}", "title": "again"},
        fragments=("{a}",),
    ),
    Scenario(
        "create: UUIDv4 id",
        "POST",
        RECORDS,
        400,
        "invalid_id",
        body={"id": "{v4}", "title": "t"},
    ),
    Scenario("create: id 123", "POST", RECORDS, 400, "invalid_id", body={"id": 123, "title": "t"}),
    Scenario(
        "create: id null", "POST", RECORDS, 400, "invalid_id", body={"id": None, "title": "t"}
    ),
    Scenario(
        "create: fields outside the schema are kept",
        "POST",
        RECORDS,
        201,
        body={"title": "t", "extra": {"deep": [1, "two", None]}},
        fragments=({"extra": {"deep": [1, "two", None]}},),
    ),
    Scenario(
        "create: integral float for an integer",
        "POST",
        RECORDS,
        201,
        body={"title": "t", "score": 2.0},
        fragments=({"score": 2},),
    ),
    Scenario(
        "create: every type",
        "POST",
        RECORDS,
        201,
        body={
            "title": "t",
            "score": 1000,
            "ratio": -0.5,
            "done": False,
            "meta": {"a": {"b": 1}},
            "tags": ["x", 2],
            "published": "2026-11-28T18:04:02Z",
        },
        fragments=({"ratio": -0.5, "done": False, "tags": ["x", 2], "meta": {"a": {"b": 1}}},),
    ),
    *[
        Scenario(
            f"create: datetime {given}",
            "POST",
            RECORDS,
            201,
            body={"title": "t", "published": given},
            fragments=({"published": stored},),
        )
        for given, stored in (
            ("2026-11-28T20:04:02+02:00", "2026-11-28T18:04:02.000Z"),
            ("2026-11-28T18:04:02.123456Z", "2026-11-28T18:04:02.123Z"),
            ("2026-11-28t18:04:02z", "2026-11-28T18:04:02.000Z"),
            ("2026-11-28T13:04:02.5-05:00", "2026-11-28T18:04:02.500Z"),
        )
    ],
    invalid("title", "title is required", {"score": 1}),
    invalid("title", "title is required", {"title": None}),
    invalid("title", "title must be a string", {"title": 7}),
    invalid("title", "title must be at most 200 characters", {"title": "x" * 201}),
    invalid("score", "score must be an integer", {"title": "t", "score": 1.5}),
    invalid("score", "score must be an integer", {"title": "t", "score": "3"}),
    invalid("score", "score must be an integer", {"title": "t", "score": True}),
    invalid("score", "score must be at least 0", {"title": "t", "score": -1}),
    invalid("score", "score must be at most 1000", {"title": "t", "score": 1001}),
    invalid("ratio", "ratio must be a number", {"title": "t", "ratio": "0.5"}),
    invalid("ratio", "ratio must be at most 1", {"title": "t", "ratio": 1.01}),
    invalid("done", "done must be true or false", {"title": "t", "done": 1}),
    invalid("meta", "meta must be an object", {"title": "t", "meta": []}),
    invalid("tags", "tags must be an array", {"title": "t", "tags": {}}),
    *[
        invalid(
            "published",
            "published must be an ISO 8601 date-time with a time zone",
            {"title": "t", "published": value},
        )
        for value in ("2026-11-28T18:04:02", "2026-11-28", "yesterday", 1764352800)
    ],
    Scenario(
        "create: every bad field named at once",
        "POST",
        RECORDS,
        400,
        "validation_failed",
        body={"score": -1, "done": "no"},
        fragments=(
            {"detail": "title is required (and 2 more)"},
            {"errors": [{"field": "title"}, {"field": "score"}, {"field": "done"}]},
        ),
    ),
    Scenario(
        "patch: merge keeps other fields",
        "PATCH",
        A,
        200,
        body={"title": "alpha 2"},
        fragments=({"id": "{a}", "title": "alpha 2", "score": 1, "version": 2},),
        response_headers={"etag": '"2"'},
    ),
    Scenario(
        "patch: null removes a field",
        "PATCH",
        A,
        200,
        body={"score": None},
        fragments=({"title": "alpha", "version": 2},),
        absent=('"score"',),
    ),
    Scenario(
        "patch: datetime normalised",
        "PATCH",
        A,
        200,
        body={"published": "2026-01-01T01:00:00+01:00"},
        fragments=({"published": "2026-01-01T00:00:00.000Z"},),
    ),
    Scenario(
        "patch: an admin changes the owner",
        "PATCH",
        A,
        200,
        body={"owner": "{user}"},
        fragments=({"title": "alpha", "owner": "{user}", "version": 2},),
    ),
    Scenario(
        "patch: an admin clears the owner",
        "PATCH",
        A,
        200,
        body={"owner": None},
        fragments=({"title": "alpha", "owner": None, "version": 2},),
    ),
    Scenario(
        "patch: empty patch still writes a version",
        "PATCH",
        A,
        200,
        body={},
        fragments=({"title": "alpha", "version": 2},),
    ),
    invalid("title", "title is required", {"title": None}, "PATCH"),
    invalid("score", "score must be at most 1000", {"score": 5000}, "PATCH"),
    Scenario(
        "patch: If-Match current",
        "PATCH",
        A,
        200,
        body={"title": "x"},
        headers={"If-Match": '"1"'},
        fragments=({"version": 2},),
    ),
    Scenario(
        "patch: If-Match weak current",
        "PATCH",
        A,
        200,
        body={"title": "x"},
        headers={"If-Match": 'W/"1"'},
    ),
    Scenario(
        "patch: If-Match stale",
        "PATCH",
        A,
        412,
        "precondition_failed",
        body={"title": "x"},
        headers={"If-Match": '"7"'},
        fragments=({"current": {"id": "{a}", "title": "alpha", "score": 1, "version": 1}},),
    ),
    Scenario("patch: unknown record", "PATCH", RECORDS + "/{new}", 404, "not_found", body={}),
    Scenario("patch: not a record id", "PATCH", RECORDS + "/abc", 400, "invalid_id", body={}),
    Scenario("delete", "DELETE", A, 204),
    Scenario("delete: If-Match current", "DELETE", A, 204, headers={"If-Match": '"1"'}),
    Scenario(
        "delete: If-Match stale",
        "DELETE",
        A,
        412,
        "precondition_failed",
        headers={"If-Match": '"2"'},
        fragments=({"current": {"id": "{a}", "version": 1}},),
    ),
    Scenario("delete: unknown record", "DELETE", RECORDS + "/{new}", 404, "not_found"),
    Scenario(
        "delete: unknown collection",
        "DELETE",
        "/api/collections/nope/records/{a}",
        404,
        "not_found",
    ),
    Scenario(
        "anonymous create (rule null)",
        "POST",
        RECORDS,
        401,
        "unauthorized",
        auth="anonymous",
        body={"title": "t"},
    ),
    Scenario(
        "anonymous patch (rule null)", "PATCH", A, 401, "unauthorized", auth="anonymous", body={}
    ),
    Scenario("anonymous delete (rule null)", "DELETE", A, 401, "unauthorized", auth="anonymous"),
    Scenario(
        "user create (rule null)",
        "POST",
        RECORDS,
        403,
        "forbidden",
        auth="user",
        body={"title": "t"},
    ),
    Scenario("user patch (rule null)", "PATCH", A, 403, "forbidden", auth="user", body={}),
    Scenario("user delete (rule null)", "DELETE", A, 403, "forbidden", auth="user"),
    Scenario(
        "unknown token create",
        "POST",
        RECORDS,
        401,
        "unauthorized",
        auth="bogus",
        body={"title": "t"},
    ),
]


@pytest.fixture
def values(posts: Api) -> Api:
    new = new_id()
    posts.values.update(new=new, NEW=new.upper(), v4=str(uuid.uuid4()))
    return posts


@pytest.mark.parametrize("row", WRITES, ids=ids(WRITES))
async def test_writes(values: Api, row: Scenario) -> None:
    before = await values.snapshot()

    response = await values.run(row)

    changes = await values.changes()
    if row.status >= 400:
        assert await values.snapshot() == before
        return
    assert len(changes) == len(before[0]) + 1
    collection, record_id, op, version = changes[-1]
    assert collection == "posts"
    if row.method == "DELETE":
        assert (record_id, op) == (values.values["a"], "delete")
        gone = await values.request("GET", f"{RECORDS}/{record_id}")
        assert gone.status_code == 404
        return
    record = response.json()
    assert (record_id, op, version) == (
        record["id"],
        "create" if row.method == "POST" else "update",
        record["version"],
    )
    assert is_uuid7(record["id"])
    assert record["created"].endswith("Z") and record["updated"].endswith("Z")
    stored = await values.request("GET", f"{RECORDS}/{record['id']}")
    assert stored.json() == record


READS: list[Scenario] = [
    Scenario(
        "get",
        "GET",
        A,
        200,
        fragments=({"id": "{a}", "title": "alpha", "score": 1, "version": 1, "owner": "{admin}"},),
        response_headers={"etag": '"1"'},
    ),
    Scenario("get: uppercase id", "GET", RECORDS + "/{A}", 200, fragments=({"id": "{a}"},)),
    *[
        Scenario(
            f"get: If-None-Match {tag}",
            "GET",
            A,
            304,
            headers={"If-None-Match": tag},
            response_headers={"etag": '"1"'},
        )
        for tag in ('"1"', 'W/"1"', "*", '"0", "1"')
    ],
    Scenario(
        "get: If-None-Match stale",
        "GET",
        A,
        200,
        headers={"If-None-Match": '"2"'},
        fragments=("alpha",),
    ),
    Scenario("get: unknown record", "GET", RECORDS + "/{new}", 404, "not_found"),
    Scenario(
        "get: unknown collection", "GET", "/api/collections/nope/records/{a}", 404, "not_found"
    ),
    Scenario("get: anonymous (view rule '')", "GET", A, 200, auth="anonymous"),
    Scenario("get: a user (view rule '')", "GET", A, 200, auth="user", fragments=({"id": "{a}"},)),
    Scenario("get: unknown token", "GET", A, 401, "unauthorized", auth="bogus"),
    Scenario(
        "list: default order is id",
        "GET",
        RECORDS,
        200,
        items=({"title": "alpha"}, {"title": "beta"}, {"title": "gamma"}),
        fragments=({"next_cursor": None},),
    ),
    Scenario(
        "list: anonymous (list rule '')",
        "GET",
        RECORDS,
        200,
        auth="anonymous",
        items=({"title": "alpha"}, {"title": "beta"}, {"title": "gamma"}),
    ),
    Scenario(
        "list: a user (list rule '')",
        "GET",
        RECORDS,
        200,
        auth="user",
        items=({"title": "alpha"}, {"title": "beta"}, {"title": "gamma"}),
    ),
    Scenario("list: unknown token", "GET", RECORDS, 401, "unauthorized", auth="bogus"),
    Scenario(
        "list: filter",
        "GET",
        RECORDS,
        200,
        params={"filter": "score >= 2"},
        items=({"title": "beta"}, {"title": "gamma"}),
    ),
    Scenario(
        "list: filter contains, case-insensitive",
        "GET",
        RECORDS,
        200,
        params={"filter": 'title ~ "AMM"'},
        items=({"title": "gamma"},),
    ),
    Scenario(
        "list: filter in",
        "GET",
        RECORDS,
        200,
        params={"filter": "score in [1, 3] && title != 'gamma'"},
        items=({"title": "alpha"},),
    ),
    Scenario(
        "list: filter on a system field",
        "GET",
        RECORDS,
        200,
        params={"filter": 'id = "{b}"'},
        items=({"id": "{b}"},),
    ),
    Scenario(
        "list: filter of another type matches nothing",
        "GET",
        RECORDS,
        200,
        params={"filter": 'score = "1"'},
        items=(),
    ),
    Scenario(
        "list: sort descending",
        "GET",
        RECORDS,
        200,
        params={"sort": "-score"},
        items=({"title": "gamma"}, {"title": "beta"}, {"title": "alpha"}),
    ),
    Scenario(
        "list: sort by two fields",
        "GET",
        RECORDS,
        200,
        params={"sort": "-rank,title"},
        items=({"title": "beta"}, {"title": "gamma"}, {"title": "alpha"}),
    ),
    Scenario(
        "list: limit",
        "GET",
        RECORDS,
        200,
        params={"limit": "2"},
        items=({"title": "alpha"}, {"title": "beta"}),
    ),
    Scenario(
        "list: fields",
        "GET",
        RECORDS,
        200,
        params={"fields": "title"},
        items=({"id": "{a}", "title": "alpha"}, {"title": "beta"}, {"title": "gamma"}),
        absent=('"score"', '"version"', '"created"'),
    ),
    Scenario(
        "list: nested fields",
        "GET",
        RECORDS,
        200,
        params={"fields": "meta.x,missing", "filter": "score = 2"},
        items=({"id": "{b}", "meta": {"x": 1}},),
        absent=('"y"', '"missing"', '"title"'),
    ),
    Scenario(
        "list: filter, sort, limit and fields together",
        "GET",
        RECORDS,
        200,
        params={"filter": "score > 1", "sort": "-title", "limit": "1", "fields": "score"},
        items=({"score": 3},),
        absent=('"title"',),
    ),
]


@pytest.mark.parametrize("row", READS, ids=ids(READS))
async def test_reads(values: Api, row: Scenario) -> None:
    values.values["A"] = values.values["a"].upper()
    for key, patch in (("b", {"rank": 2, "meta": {"x": 1, "y": 2}}), ("c", {"rank": 2})):
        response = await values.request("PATCH", f"{RECORDS}/{values.values[key]}", body=patch)
        assert response.status_code == 200
    before = await values.snapshot()

    response = await values.run(row)

    assert await values.snapshot() == before
    if row.status == 304:
        assert response.content == b""


async def test_merge_patch_merges_objects_and_removes_nulls(posts: Api) -> None:
    path = f"{RECORDS}/{posts.values['a']}"
    await posts.request("PATCH", path, body={"meta": {"x": 1, "y": {"deep": 2}}, "tags": [1]})

    response = await posts.request(
        "PATCH", path, body={"meta": {"x": None, "y": {"more": 3}, "z": [4]}, "tags": [2]}
    )

    assert response.status_code == 200, response.text
    record = response.json()
    assert record["meta"] == {"y": {"deep": 2, "more": 3}, "z": [4]}
    assert record["tags"] == [2]
    assert record["version"] == 3


async def test_whole_floats_beyond_safe_integers_stay_floats(posts: Api) -> None:
    # PostgreSQL's jsonb stores 1e16 as the decimal 10000000000000000
    body = {"title": "t", "big": 1e16, "deep": [{"x": -2.5e20}], "safe": 2**53 - 1}
    created = await posts.request("POST", RECORDS, body=body)
    assert created.status_code == 201, created.text
    for response in (created, await posts.request("GET", f"{RECORDS}/{created.json()['id']}")):
        record = response.json()
        assert {key: record[key] for key in body} == body
        assert isinstance(record["big"], float) and isinstance(record["deep"][0]["x"], float)
        assert isinstance(record["safe"], int)


async def test_strict_collection_refuses_undeclared_fields(api: Api) -> None:
    await api.create_collection(
        {"name": "strict", "fields": {"a": {"type": "string"}}, "options": {"strict": True}}
    )
    path = "/api/collections/strict/records"
    ok = await api.request("POST", path, body={"a": "x"})
    refused = await api.request("POST", path, body={"a": "x", "b": 1})
    assert ok.status_code == 201
    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"field": "b", "message": "b is not a field of this collection"}
    ]


async def test_expression_rules_decide_record_by_record(api: Api) -> None:
    """``list`` is compiled into the query, ``view`` hides (404) what it refuses, and
    ``create``/``update``/``delete`` refuse with 401 (anonymous) or 403."""
    await api.create_collection(
        {
            "name": "private",
            "rules": {
                "list": "owner = @auth.id",
                "view": "public = true || owner = @auth.id",
                "create": "@auth.id != null",
                "update": "owner = @auth.id",
                "delete": "owner = @auth.id",
            },
        }
    )
    public = await api.create_record("private", {"public": True})
    secret = await api.create_record("private", {"public": False})
    mine = await api.create_record("private", {"public": False}, auth="user")
    assert public["owner"] == secret["owner"] == api.values["admin"]
    assert mine["owner"] == api.values["user"], "owner is the caller"
    path = "/api/collections/private/records"

    async def listed(auth: Auth) -> list[str]:
        response = await api.request("GET", path, auth=auth)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    async def status(method: str, record: dict[str, Any], auth: Auth, **kw: Any) -> int:
        response = await api.request(method, f"{path}/{record['id']}", auth=auth, **kw)
        return response.status_code

    assert await listed("anonymous") == []
    assert await listed("user") == [mine["id"]]
    assert await listed("admin") == [public["id"], secret["id"], mine["id"]]

    assert await status("GET", public, "anonymous") == 200
    assert await status("GET", secret, "anonymous") == 404
    assert await status("GET", secret, "user") == 404
    assert await status("GET", mine, "user") == 200
    assert await status("GET", mine, "anonymous") == 404
    assert await status("GET", secret, "admin") == 200

    refused = await api.request("POST", path, auth="anonymous", body={"public": True})
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
    assert await status("PATCH", public, "user", body={"x": 1}) == 403
    assert await status("PATCH", public, "anonymous", body={"x": 1}) == 401
    assert await status("PATCH", secret, "user", body={"x": 1}) == 404, "not viewable: 404"
    assert await status("DELETE", public, "user") == 403
    assert await status("DELETE", secret, "user") == 404
    assert await status("PATCH", mine, "user", body={"x": 1}) == 200
    assert await status("DELETE", mine, "user") == 204
    assert await status("DELETE", secret, "admin") == 204
    assert await listed("admin") == [public["id"]]


def expected_order(records: list[dict[str, Any]], sort: str) -> list[str]:
    """Record ids in the order ``sort`` asks for (stable sorts, last key first), ties by id
    in the direction of the last key."""
    keys = [k for k in sort.split(",") if k]
    ordered = sorted(records, key=lambda r: r["id"], reverse=keys[-1].startswith("-"))
    for key in reversed(keys):
        field = key.lstrip("-+")
        ordered.sort(
            key=lambda r: (r.get(field) is not None, r.get(field) or 0), reverse=key.startswith("-")
        )
    return [r["id"] for r in ordered]


async def walk(api: Api, params: dict[str, str], between: Any = None) -> list[str]:
    """Every id of every page, following ``next_cursor``; ``between`` runs after each page."""
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.request("GET", RECORDS, params=page_params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= int(params["limit"])
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if between is not None:
            await between()
    raise AssertionError("pagination did not end")


SORTS = ["id", "-id", "score", "-score,title", "title", "-created,title", "rank,-score"]


async def fill(api: Api, count: int) -> list[dict[str, Any]]:
    made = []
    for i in range(count):
        data: dict[str, Any] = {"title": f"t{(i * 7) % count:02d}", "score": i % 4}
        if i % 3:
            data["rank"] = i % 5
        made.append(await api.create_record("posts", data))
    return made


@pytest.mark.parametrize("sort", SORTS)
async def test_pagination_returns_every_record_once_in_order(posts: Api, sort: str) -> None:
    await fill(posts, 20)
    everything = (await posts.request("GET", RECORDS, params={"limit": "500"})).json()["items"]

    seen = await walk(posts, {"sort": sort, "limit": "4"})

    assert len(seen) == len(set(seen)) == len(everything) == 23
    if sort in ("id", "-id", "score", "title", "-score,title", "rank,-score"):
        assert seen == expected_order(everything, sort)
    else:
        by_title = sorted(everything, key=lambda r: (r["title"], r["id"]))
        assert seen == [r["id"] for r in sorted(by_title, key=lambda r: r["created"], reverse=True)]


@pytest.mark.parametrize("sort", SORTS)
async def test_pagination_is_stable_while_records_are_inserted(posts: Api, sort: str) -> None:
    original = {r["id"] for r in await fill(posts, 20)} | {posts.values[k] for k in ("a", "b", "c")}
    inserted: list[str] = []

    async def insert() -> None:
        n = len(inserted)
        record = await posts.create_record("posts", {"title": f"new{n}", "score": n % 4, "rank": n})
        inserted.append(record["id"])

    seen = await walk(posts, {"sort": sort, "limit": "3"}, between=insert)

    assert len(seen) == len(set(seen)), "a record came back twice"
    assert original <= set(seen), "a record that existed all along was skipped"
    assert set(seen) <= original | set(inserted)
    assert inserted


async def test_pagination_with_concurrent_writers(posts: Api) -> None:
    await fill(posts, 30)
    original = {
        r["id"]
        for r in (await posts.request("GET", RECORDS, params={"limit": "500"})).json()["items"]
    }

    async def writer() -> None:
        for n in range(30):
            await posts.create_record("posts", {"title": f"w{n}", "score": n % 4})

    seen, _ = await asyncio.gather(walk(posts, {"sort": "-score,title", "limit": "2"}), writer())

    assert len(seen) == len(set(seen))
    assert original <= set(seen)


async def test_cursor_keeps_the_filter_and_fields(posts: Api) -> None:
    await fill(posts, 10)
    params = {"filter": "score >= 2", "fields": "score", "limit": "2", "sort": "score"}
    first = (await posts.request("GET", RECORDS, params=params)).json()

    second = await posts.request("GET", RECORDS, params={**params, "cursor": first["next_cursor"]})

    items = first["items"] + second.json()["items"]
    assert all(set(item) == {"id", "score"} and item["score"] >= 2 for item in items)


TRICKY_DATA: list[dict[str, Any]] = [
    {},
    {"text": 'line\u2028separator, quote " backslash \\ tab \t é 🐦'},
    {"big": 1e16, "small": -2.5e-300, "whole": 9007199254740991, "zero": 0.0},
    {"nested": {"list": [None, True, [], {}], "empty": ""}, "z": None},
]


@pytest.mark.parametrize("auth", ["admin", "user"])
async def test_a_page_holds_the_records_exactly_as_reads_by_id_return_them(
    api: Api, auth: Auth
) -> None:
    """A page may be serialised by the database (SQLite writes a record's JSON itself);
    its items must be the records that reads by id return, value for value."""
    await api.create_collection({"name": "notes", "rules": {"list": "", "view": "", "create": ""}})
    for data in TRICKY_DATA:
        await api.create_record("notes", data, auth="user")
    page = await api.request("GET", "/api/collections/notes/records", auth=auth)
    assert page.status_code == 200
    items = page.json()["items"]
    assert [
        {k: v for k, v in item.items() if k not in SYSTEM_FIELDS} for item in items
    ] == TRICKY_DATA
    for item in items:
        one = await api.request("GET", f"/api/collections/notes/records/{item['id']}", auth=auth)
        assert one.json() == item
        assert list(one.json()) == list(item)  # the same order of fields too


async def test_hidden_fields_are_for_admins_and_owners(api: Api) -> None:
    await api.create_collection(
        {
            "name": "profiles",
            "fields": {"phone": {"type": "string", "hidden": True}},
            "rules": {"list": "", "view": "", "create": "@auth.id != null", "update": ""},
        }
    )
    theirs = await api.create_record("profiles", {"nick": "a", "phone": "111"})
    mine = await api.create_record("profiles", {"nick": "b", "phone": "222"}, auth="user")
    path = "/api/collections/profiles/records"
    assert mine["phone"] == "222", "the owner sees their hidden field"

    async def listed(auth: Auth) -> dict[str, Any]:
        response = await api.request("GET", path, auth=auth)
        assert response.status_code == 200, response.text
        return {item["nick"]: item for item in response.json()["items"]}

    assert [item.get("phone") for item in (await listed("admin")).values()] == ["111", "222"]
    assert [item.get("phone") for item in (await listed("user")).values()] == [None, "222"]
    assert [item.get("phone") for item in (await listed("anonymous")).values()] == [None, None]
    one = await api.request("GET", f"{path}/{theirs['id']}", auth="user")
    assert one.status_code == 200 and "phone" not in one.json()
    patched = await api.request("PATCH", f"{path}/{theirs['id']}", auth="user", body={"x": 1})
    assert patched.status_code == 200 and "phone" not in patched.json()

    for params in ({"filter": 'phone = "111"'}, {"sort": "phone"}, {"filter": "phone.x != 1"}):
        for auth in ("user", "anonymous"):
            refused = await api.request("GET", path, auth=auth, params=params)
            assert (refused.status_code, refused.json()["code"]) == (400, "invalid_filter")
        allowed = await api.request("GET", path, params=params)
        assert allowed.status_code == 200, allowed.text
    only = await api.request("GET", path, params={"filter": 'phone = "111"'})
    assert [item["id"] for item in only.json()["items"]] == [theirs["id"]]


async def test_an_admin_writes_user_emails_lowercased(admin: httpx.AsyncClient) -> None:
    """Sign-in looks addresses up lowercased, so a user an admin makes can still sign in."""
    created = await admin.post(
        "/api/collections/users/records", json={"email": " Mixed@Example.COM "}
    )
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "mixed@example.com"
    changed = await admin.patch(
        f"/api/collections/users/records/{created.json()['id']}", json={"email": "Other@X.ORG"}
    )
    assert changed.json()["email"] == "other@x.org"
