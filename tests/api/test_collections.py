"""``/api/collections``: definitions, schema, indexes, rules; admins only."""

from __future__ import annotations

from typing import Any

import pytest

from api.scenario import POSTS, Api, Scenario, ids
from roost.auth.principal import ANONYMOUS
from roost.query.parser import parse
from roost.query.sql import compile_filter
from roost.records.service import ExpressionContext
from roost.storage.sqlite import SQLiteStorage

COLLECTIONS = "/api/collections"
NOTES = {"name": "notes"}


def definition(**changes: Any) -> dict[str, Any]:
    return {"name": "things", **changes}


CREATE: list[Scenario] = [
    Scenario(
        "every field type",
        "POST",
        COLLECTIONS,
        201,
        body=POSTS,
        fragments=(
            {"name": "posts", "version": 1, "options": {"strict": False}},
            {"fields": {"title": {"type": "string", "required": True, "max_length": 200}}},
            {"fields": {"score": {"type": "integer", "min": 0, "max": 1000, "default": 0}}},
            {"fields": {"published": {"type": "datetime"}, "meta": {"type": "object"}}},
            {"indexes": [{"fields": ["slug"], "unique": True}, {"fields": ["score"]}]},
            {"rules": {"list": "", "view": "", "create": None}},
        ),
    ),
    Scenario(
        "name only: defaults",
        "POST",
        COLLECTIONS,
        201,
        body=definition(),
        fragments=(
            {"name": "things", "fields": {}, "indexes": [], "options": {"strict": False}},
            {"rules": {"list": None, "view": None, "create": None, "update": None}},
        ),
    ),
    Scenario(
        "rules stored as given",
        "POST",
        COLLECTIONS,
        201,
        body=definition(rules={"list": "public = true || owner = @auth.id", "view": ""}),
        fragments=({"rules": {"list": "public = true || owner = @auth.id", "view": ""}},),
    ),
    Scenario(
        "compound and system-field indexes",
        "POST",
        COLLECTIONS,
        201,
        body=definition(indexes=[{"fields": ["author.name", "created"]}]),
        fragments=({"indexes": [{"fields": ["author.name", "created"], "unique": False}]},),
    ),
    Scenario(
        "61-character name (the longest: PostgreSQL names its table r_ + name in 63 bytes)",
        "POST",
        COLLECTIONS,
        201,
        body={"name": "a" * 61},
        fragments=({"name": "a" * 61},),
    ),
    Scenario("duplicate name", "POST", COLLECTIONS, 409, "conflict", body=NOTES),
    Scenario("anonymous", "POST", COLLECTIONS, 401, "unauthorized", body=POSTS, auth="anonymous"),
    Scenario("unknown token", "POST", COLLECTIONS, 401, "unauthorized", body=POSTS, auth="bogus"),
    Scenario("not an admin", "POST", COLLECTIONS, 403, "forbidden", body=POSTS, auth="user"),
    Scenario(
        "malformed Authorization",
        "POST",
        COLLECTIONS,
        401,
        "unauthorized",
        body=POSTS,
        auth="anonymous",
        headers={"Authorization": "Basic YWRtaW46YWRtaW4="},
    ),
    *[
        Scenario(
            f"name {name!r}",
            "POST",
            COLLECTIONS,
            400,
            "validation_failed",
            body={"name": name},
            fragments=({"errors": [{"field": "name"}]},),
        )
        for name in (
            *("Posts", "1posts", "_posts", "posts-x", "posts;drop", "", "a" * 62, "é"),
            *([None], ["users"], {"a": 1}, 3, None),  # not strings
        )
    ],
    Scenario(
        "reserved name users",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body={"name": "users"},
        fragments=({"errors": [{"field": "name"}]}, "reserved"),
    ),
    Scenario(
        "name not a string",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body={"name": 7},
        fragments=({"errors": [{"field": "name"}]},),
    ),
    Scenario("name missing", "POST", COLLECTIONS, 400, "validation_failed", body={}),
    Scenario(
        "unknown section",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(triggers=[]),
        fragments=({"errors": [{"field": "triggers"}]},),
    ),
    *[
        Scenario(
            f"field name {name!r}",
            "POST",
            COLLECTIONS,
            400,
            "validation_failed",
            body=definition(fields={name: {"type": "string"}}),
            fragments=({"errors": [{"field": "fields"}]},),
        )
        for name in ("1abc", "a-b", "a.b", "id", "owner", "created", "version", "x" * 65)
    ],
    Scenario(
        "unknown field type",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"body": {"type": "text"}}),
        fragments=({"errors": [{"field": "fields.body.type"}]},),
    ),
    Scenario(
        "max_length on an integer",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"n": {"type": "integer", "max_length": 3}}),
        fragments=("max_length applies to string fields only",),
    ),
    Scenario(
        "min on a string",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"s": {"type": "string", "min": 1}}),
        fragments=("min and max apply",),
    ),
    Scenario(
        "min above max",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"n": {"type": "number", "min": 5, "max": 1}}),
        fragments=("min is greater than max",),
    ),
    Scenario(
        "default of the wrong type",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"n": {"type": "integer", "default": "zero"}}),
        fragments=("default does not match",),
    ),
    Scenario(
        "default outside min/max",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"n": {"type": "integer", "min": 1, "default": 0}}),
        fragments=("default does not match",),
    ),
    Scenario(
        "negative max_length",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(fields={"s": {"type": "string", "max_length": -1}}),
        fragments=({"errors": [{"field": "fields.s.max_length"}]},),
    ),
    *[
        Scenario(
            f"rule {rule!r}",
            "POST",
            COLLECTIONS,
            400,
            "validation_failed",
            body=definition(rules={"update": rule}),
            fragments=({"errors": [{"field": "rules.update"}]}, "position"),
        )
        for rule in ("title ==", "owner = @auth.nope", "done", "(a = 1", "a = 'x")
    ],
    Scenario(
        "unknown rule action",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(rules={"read": ""}),
        fragments=({"errors": [{"field": "rules.read"}]},),
    ),
    *[
        Scenario(
            f"index {index!r}",
            "POST",
            COLLECTIONS,
            400,
            "validation_failed",
            body=definition(indexes=[index]),
            fragments=({"errors": [{"field": "indexes.0.fields"}]},),
        )
        for index in (
            {"fields": []},
            {"fields": ["a..b"]},
            {"fields": ["a", "a"]},
            {"fields": ["id.x"]},
            {"fields": ["x; DROP TABLE _admins"]},
            {"fields": [f"f{i}" for i in range(9)]},
        )
    ],
    Scenario(
        "unknown option",
        "POST",
        COLLECTIONS,
        400,
        "validation_failed",
        body=definition(options={"strict": True, "ttl": 5}),
        fragments=({"errors": [{"field": "options.ttl"}]},),
    ),
]


@pytest.mark.parametrize("row", CREATE, ids=ids(CREATE))
async def test_create(api: Api, row: Scenario) -> None:
    await api.create_collection(NOTES)
    before = await api.request("GET", COLLECTIONS)
    await api.run(row)
    after = await api.request("GET", COLLECTIONS)
    created = 1 if row.status == 201 else 0
    assert len(after.json()["items"]) == len(before.json()["items"]) + created


READ_CHANGE_DROP: list[Scenario] = [
    Scenario(
        "list",
        "GET",
        COLLECTIONS,
        200,
        fragments=({"items": [{"name": "users"}, {"name": "posts"}, {"name": "notes"}]},),
    ),
    Scenario("get", "GET", f"{COLLECTIONS}/posts", 200, fragments=({"name": "posts"},)),
    Scenario("get unknown", "GET", f"{COLLECTIONS}/nope", 404, "not_found"),
    Scenario("get invalid name", "GET", f"{COLLECTIONS}/No-Such", 404, "not_found"),
    Scenario(
        "get the built-in users",
        "GET",
        f"{COLLECTIONS}/users",
        200,
        fragments=(
            {
                "name": "users",
                "fields": {
                    "email": {"type": "string", "hidden": True},
                    "role": {"type": "string", "values": ["user", "admin"], "default": "user"},
                    "verified": {"type": "boolean"},
                    "anonymous": {"type": "boolean"},
                },
                "indexes": [{"fields": ["email"], "unique": True}],
                "rules": {"list": "id = @auth.id", "view": "id = @auth.id", "create": None},
            },
        ),
    ),
    Scenario("list anonymous", "GET", COLLECTIONS, 401, "unauthorized", auth="anonymous"),
    Scenario("get anonymous", "GET", f"{COLLECTIONS}/posts", 401, "unauthorized", auth="anonymous"),
    Scenario("list not an admin", "GET", COLLECTIONS, 403, "forbidden", auth="user"),
    Scenario("get not an admin", "GET", f"{COLLECTIONS}/posts", 403, "forbidden", auth="user"),
    Scenario(
        "patch rules",
        "PATCH",
        f"{COLLECTIONS}/posts",
        200,
        body={"rules": {"list": "", "create": ""}},
        fragments=({"name": "posts", "version": 2, "rules": {"create": "", "view": None}},),
    ),
    Scenario(
        "patch keeps the sections not given",
        "PATCH",
        f"{COLLECTIONS}/posts",
        200,
        body={"options": {"strict": True}},
        fragments=(
            {"options": {"strict": True}, "fields": {"title": {"type": "string"}}},
            {"indexes": [{"fields": ["slug"], "unique": True}]},
        ),
    ),
    Scenario(
        "patch fields",
        "PATCH",
        f"{COLLECTIONS}/posts",
        200,
        body={"fields": {"body": {"type": "string"}}},
        fragments=({"fields": {"body": {"type": "string"}}},),
        absent=('"title"',),
    ),
    Scenario(
        "patch same name",
        "PATCH",
        f"{COLLECTIONS}/posts",
        200,
        body={"name": "posts"},
        fragments=({"version": 2},),
    ),
    Scenario(
        "patch rename",
        "PATCH",
        f"{COLLECTIONS}/posts",
        400,
        "validation_failed",
        body={"name": "articles"},
        fragments=({"errors": [{"field": "name"}]},),
    ),
    Scenario(
        "patch bad rule",
        "PATCH",
        f"{COLLECTIONS}/posts",
        400,
        "validation_failed",
        body={"rules": {"delete": "owner == @auth.id"}},
        fragments=({"errors": [{"field": "rules.delete"}]}, "position 6"),
    ),
    Scenario(
        "patch bad field",
        "PATCH",
        f"{COLLECTIONS}/posts",
        400,
        "validation_failed",
        body={"fields": {"a-b": {"type": "string"}}},
    ),
    Scenario(
        "patch unknown section",
        "PATCH",
        f"{COLLECTIONS}/posts",
        400,
        "validation_failed",
        body={"hooks": {}},
    ),
    Scenario("patch unknown", "PATCH", f"{COLLECTIONS}/nope", 404, "not_found", body={}),
    Scenario(
        "patch users keeps its own fields and index",
        "PATCH",
        f"{COLLECTIONS}/users",
        200,
        body={"fields": {"nickname": {"type": "string"}}, "indexes": []},
        fragments=(
            {"fields": {"nickname": {"type": "string"}, "email": {"hidden": True}}},
            {"indexes": [{"fields": ["email"], "unique": True}], "version": 2},
        ),
    ),
    Scenario(
        "patch users rules",
        "PATCH",
        f"{COLLECTIONS}/users",
        200,
        body={"rules": {"list": "", "view": ""}},
        fragments=({"rules": {"list": "", "view": ""}},),
    ),
    Scenario(
        "patch users rename",
        "PATCH",
        f"{COLLECTIONS}/users",
        400,
        "validation_failed",
        body={"name": "people"},
    ),
    Scenario(
        "patch not an admin",
        "PATCH",
        f"{COLLECTIONS}/posts",
        403,
        "forbidden",
        body={},
        auth="user",
    ),
    Scenario(
        "patch anonymous",
        "PATCH",
        f"{COLLECTIONS}/posts",
        401,
        "unauthorized",
        body={},
        auth="anonymous",
    ),
    Scenario("delete", "DELETE", f"{COLLECTIONS}/notes", 204),
    Scenario("delete unknown", "DELETE", f"{COLLECTIONS}/nope", 404, "not_found"),
    Scenario("drop the built-in users", "DELETE", f"{COLLECTIONS}/users", 403, "forbidden"),
    Scenario(
        "delete not an admin", "DELETE", f"{COLLECTIONS}/notes", 403, "forbidden", auth="user"
    ),
    Scenario(
        "delete anonymous", "DELETE", f"{COLLECTIONS}/posts", 401, "unauthorized", auth="anonymous"
    ),
]


@pytest.mark.parametrize("row", READ_CHANGE_DROP, ids=ids(READ_CHANGE_DROP))
async def test_read_change_drop(posts: Api, row: Scenario) -> None:
    await posts.create_collection(NOTES)
    before = (await posts.request("GET", f"{COLLECTIONS}/posts")).json()
    users_before = (await posts.request("GET", f"{COLLECTIONS}/users")).json()
    await posts.run(row)
    after = await posts.request("GET", f"{COLLECTIONS}/posts")
    if row.method == "PATCH" and row.status != 200:
        assert after.json() == before
    if row.method == "DELETE" and row.status != 204:
        assert await posts.count("notes") == 0 and await posts.count("posts") == 3
    users_after = await posts.request("GET", f"{COLLECTIONS}/users")
    assert users_after.status_code == 200, "users is never dropped"
    if row.status >= 400:
        assert users_after.json() == users_before


async def test_dropping_a_collection_drops_its_records_and_changes(posts: Api) -> None:
    await posts.create_collection(NOTES)
    await posts.create_record("notes", {"text": "kept"})
    assert await posts.count("posts") == 3

    response = await posts.request("DELETE", f"{COLLECTIONS}/posts")

    assert response.status_code == 204
    assert await posts.count("posts") == -1
    assert [change[0] for change in await posts.changes()] == ["users", "users", "notes"]
    gone = await posts.request("GET", f"{COLLECTIONS}/posts/records/{posts.values['a']}")
    assert gone.status_code == 404
    await posts.create_collection({"name": "posts"})
    fresh = await posts.request("GET", f"{COLLECTIONS}/posts/records")
    assert fresh.json() == {"items": [], "next_cursor": None}


async def test_unique_index_refuses_duplicates_on_create_and_update(posts: Api) -> None:
    path = f"{COLLECTIONS}/posts/records"
    first = await posts.create_record("posts", {"title": "x", "slug": "same"})
    other = await posts.create_record("posts", {"title": "y", "slug": "other"})
    before = await posts.snapshot()

    created = await posts.request("POST", path, body={"title": "z", "slug": "same"})
    updated = await posts.request("PATCH", f"{path}/{other['id']}", body={"slug": "same"})

    for response in (created, updated):
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "conflict"
        assert "unique" in response.json()["detail"]
    assert await posts.snapshot() == before
    assert first["slug"] == "same"


async def test_unique_index_cannot_be_declared_over_duplicates(posts: Api) -> None:
    await posts.create_record("posts", {"title": "alpha"})
    before = (await posts.request("GET", f"{COLLECTIONS}/posts")).json()
    indexes = await _index_sql(posts)

    response = await posts.request(
        "PATCH",
        f"{COLLECTIONS}/posts",
        body={"indexes": [{"fields": ["title"], "unique": True}]},
    )

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "conflict"
    assert (await posts.request("GET", f"{COLLECTIONS}/posts")).json() == before
    assert await _index_sql(posts) == indexes


async def _index_sql(api: Api, table: str = "r_posts") -> list[str]:
    """The statements that made the table's indexes (not its primary key's), by name."""
    if isinstance(api.components.storage, SQLiteStorage):
        sql = (
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL ORDER BY name"
        )
    else:
        sql = (
            "SELECT indexdef AS sql FROM pg_indexes WHERE tablename = ?"
            " AND NOT indexname LIKE '%_pkey' ORDER BY indexname"
        )
    async with api.components.storage.read() as conn:
        rows = await conn.fetch_all(sql, (table,))
    return [row["sql"] for row in rows]


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""SQLite's query plans; PostgreSQL prefers a scan on a table this small, so its plans are
checked on a large one in ``test_postgres_plans.py``."""


async def _plan(api: Api, filter: str, order: str = "") -> str:
    storage = api.components.storage
    where, params = compile_filter(parse(filter), storage.dialect, ExpressionContext(ANONYMOUS))
    async with storage.read() as conn:
        # EXPLAIN does not reload a schema another connection changed; a real query does.
        await conn.fetch_all('SELECT id FROM "r_posts" LIMIT 1')
        rows = await conn.fetch_all(
            f'EXPLAIN QUERY PLAN SELECT * FROM "r_posts" WHERE {where} {order}', params
        )
    return "\n".join(row["detail"] for row in rows)


PLANS = [
    ("score = 2", "score"),
    ("score > 1 && title = 'beta'", "score"),
    ("slug = 'x'", "slug"),
    ("author.name = 'ann' && rank = 3", "author.name"),
]


@pytest.mark.parametrize(("filter", "field"), PLANS, ids=[p[0] for p in PLANS])
@SQLITE_ONLY
async def test_declared_indexes_are_real_and_used(posts: Api, filter: str, field: str) -> None:
    await posts.request(
        "PATCH",
        f"{COLLECTIONS}/posts",
        body={"indexes": [*POSTS["indexes"], {"fields": ["author.name", "rank"]}]},
    )
    wanted = posts.components.storage.dialect.field_sql(field)
    assert any(wanted in sql for sql in await _index_sql(posts))

    plan = await _plan(posts, filter)

    assert "USING INDEX ix_posts_" in plan, plan
    assert "SCAN" not in plan, plan


@SQLITE_ONLY
async def test_an_undeclared_field_scans_and_a_dropped_index_is_gone(posts: Api) -> None:
    assert "SCAN" in await _plan(posts, "title = 'beta'")
    response = await posts.request("PATCH", f"{COLLECTIONS}/posts", body={"indexes": []})
    assert response.status_code == 200
    assert await _index_sql(posts) == ['CREATE INDEX "owner_id_posts" ON "r_posts" (owner, id)']
    assert "SCAN" in await _plan(posts, "score = 2")


@SQLITE_ONLY
async def test_a_sort_on_an_indexed_field_uses_the_index(posts: Api) -> None:
    field = posts.components.storage.dialect.field_sql("score")
    plan = await _plan(posts, "score > 0", f"ORDER BY {field}, id")
    assert "USING INDEX ix_posts_" in plan, plan


async def test_each_read_by_id_uses_the_definition_stored_now(api: Api) -> None:
    """Definitions are parsed once per process and reused: a changed rule, a drop and a
    re-create under the same name must still apply to the very next read."""
    await api.create_collection({"name": "diary", "rules": {"view": "", "create": ""}})
    record = await api.create_record("diary", {"text": "x"}, auth="user")
    path = f"{COLLECTIONS}/diary/records/{record['id']}"
    assert (await api.request("GET", path, auth="user")).status_code == 200

    await api.request("PATCH", f"{COLLECTIONS}/diary", body={"rules": {"view": "owner = ''"}})
    assert (await api.request("GET", path, auth="user")).status_code == 404
    await api.request("PATCH", f"{COLLECTIONS}/diary", body={"rules": {"view": ""}})
    assert (await api.request("GET", path, auth="user")).status_code == 200

    assert (await api.request("DELETE", f"{COLLECTIONS}/diary")).status_code == 204
    dropped = await api.request("GET", path, auth="user")
    assert dropped.status_code == 404 and "collection 'diary'" in dropped.json()["detail"]
    await api.create_collection({"name": "diary", "rules": {"create": ""}})
    again = await api.create_record("diary", {"text": "y"}, auth="user")
    path = f"{COLLECTIONS}/diary/records/{again['id']}"
    assert (await api.request("GET", path, auth="user")).status_code == 403
