"""Bad input, one table: every row is a clear 4xx problem (or, for injection attempts that
are valid text, a harmless answer), never a 500, never a traceback, never a write."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
import pytest

from api.scenario import NO_BODY, Api, Scenario, ids

RECORDS = "/api/collections/posts/records"
A = RECORDS + "/{a}"
JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


def raw(name: str, content: bytes, status: int, code: str, **extra: Any) -> Scenario:
    """A create whose body is ``content`` as sent, declared as JSON unless told otherwise."""
    headers = extra.pop("headers", JSON)
    return Scenario(name, "POST", RECORDS, status, code, content=content, headers=headers, **extra)


def create(name: str, body: Any, status: int, code: str, *fragments: Any) -> Scenario:
    return Scenario(name, "POST", RECORDS, status, code, body=body, fragments=fragments)


def listing(name: str, status: int, code: str | None, *fragments: Any, **params: str) -> Scenario:
    return Scenario(name, "GET", RECORDS, status, code, params=params, fragments=fragments)


def field_error(field: str) -> dict[str, Any]:
    return {"errors": [{"field": field}]}


BIG = b'{"title": "' + b"x" * MIB + b'"}'

ROWS: list[Scenario] = [
    # the body
    raw("malformed JSON", b'{"title": "x",}', 400, "invalid_json", fragments=("byte",)),
    raw("empty body", b"", 400, "invalid_json"),
    raw("truncated JSON", b'{"title": "x"', 400, "invalid_json"),
    raw("NaN", b'{"title": NaN}', 400, "invalid_json"),
    raw("infinite number", b'{"title": "t", "n": 1e400}', 400, "invalid_json"),
    raw("byte order mark", b'\xef\xbb\xbf{"title": "t"}', 400, "invalid_json"),
    raw("invalid UTF-8", b'{"title": "\xff\xfe"}', 400, "invalid_json"),
    raw("lone surrogate escape", b'{"title": "\\ud800"}', 400, "invalid_json"),
    raw("array body", b'[{"title": "t"}]', 400, "invalid_json", fragments=("object",)),
    raw("string body", b'"title"', 400, "invalid_json"),
    raw("null body", b"null", 400, "invalid_json"),
    raw("number body", b"1", 400, "invalid_json"),
    raw(
        "text/plain",
        b'{"title": "t"}',
        415,
        "unsupported_media_type",
        headers={"Content-Type": "text/plain"},
    ),
    raw("no content type", b'{"title": "t"}', 415, "unsupported_media_type", headers={}),
    raw(
        "form encoded",
        b"title=t",
        415,
        "unsupported_media_type",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    raw(
        "json-like media type",
        b'{"title": "t"}',
        415,
        "unsupported_media_type",
        headers={"Content-Type": "application/jsonp"},
    ),
    raw("over 1 MiB, Content-Length", BIG, 413, "payload_too_large"),
    raw("over 1 MiB, streamed", BIG, 413, "payload_too_large", stream=True),
    Scenario(
        "over 1 MiB, batch streamed",
        "POST",
        "/api/batch",
        413,
        "payload_too_large",
        content=BIG,
        headers=JSON,
        stream=True,
    ),
    create("nesting 33 deep", {"title": "t", "d": nested(33)}, 400, "limit_exceeded"),
    raw("nesting 2000 deep", b'{"d": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "limit_exceeded"),
    create(
        "1001 keys", {"title": "t", "d": {f"k{i}": i for i in range(1001)}}, 400, "limit_exceeded"
    ),
    create("1001 top-level keys", {f"k{i}": i for i in range(1001)}, 400, "limit_exceeded"),
    create(
        "string of 100001 characters", {"title": "t", "d": "x" * 100_001}, 400, "limit_exceeded"
    ),
    create(
        "key of 100001 characters", {"title": "t", "d": {"k" * 100_001: 1}}, 400, "limit_exceeded"
    ),
    create(
        "string array over the limit deep inside",
        {"title": "t", "d": [["x" * 100_001]]},
        400,
        "limit_exceeded",
    ),
    # names and values
    *[
        create(
            f"system field {name}",
            {"title": "t", name: "x"},
            400,
            "validation_failed",
            field_error(name),
        )
        for name in ("created", "updated", "version")
    ],
    Scenario(  # admins may set owner (see test_records); nobody else may
        "system field owner from a user",
        "POST",
        RECORDS,
        400,
        "validation_failed",
        auth="user",
        body={"title": "t", "owner": "{user}"},
        fragments=(field_error("owner"),),
    ),
    create(
        "owner not a user id",
        {"title": "t", "owner": 7},
        400,
        "validation_failed",
        field_error("owner"),
    ),
    create(
        "owner too long",
        {"title": "t", "owner": "x" * 65},
        400,
        "validation_failed",
        field_error("owner"),
    ),
    Scenario(
        "id on PATCH",
        "PATCH",
        A,
        400,
        "validation_failed",
        body={"id": "{new}"},
        fragments=(field_error("id"),),
    ),
    Scenario(
        "owner on PATCH from a user",
        "PATCH",
        A,
        400,
        "validation_failed",
        auth="user",
        body={"owner": "{user}"},
        fragments=(field_error("owner"),),
    ),
    Scenario(
        "owner on PATCH not a user id",
        "PATCH",
        A,
        400,
        "validation_failed",
        body={"owner": ["{user}"]},
        fragments=(field_error("owner"),),
    ),
    *[
        create(
            f"field name {name[:20]!r}",
            {"title": "t", name: 1},
            400,
            "validation_failed",
            field_error(name),
        )
        for name in ("1abc", "a-b", "a.b", "a b", "", "_x", "é", "x" * 65, "$where")
    ],
    create("integer 2^53", {"title": "t", "n": 2**53}, 400, "validation_failed", field_error("n")),
    create(
        "integer -2^53", {"title": "t", "n": -(2**53)}, 400, "validation_failed", field_error("n")
    ),
    create(
        "integer 2^64 - 1 nested",
        {"title": "t", "d": {"e": [2**64 - 1]}},
        400,
        "validation_failed",
        field_error("d.e.0"),
    ),
    raw(
        "integer of 26 digits",
        b'{"title": "t", "n": 99999999999999999999999999}',
        400,
        "validation_failed",
        fragments=(field_error("n"),),
    ),
    raw(
        "integer of -20 digits",
        b'{"title": "t", "n": -92233720368547758090}',
        400,
        "validation_failed",
        fragments=(field_error("n"),),
    ),
    raw(
        "integer of 5000 digits",
        b'{"title": "t", "n": ' + b"9" * 5000 + b"}",
        400,
        "invalid_json",
    ),
    Scenario(
        "integer 2^53 on PATCH",
        "PATCH",
        A,
        400,
        "validation_failed",
        body={"score": None, "n": [1, 2**53]},
        fragments=(field_error("n.1"),),
    ),
    create(
        "U+0000 in a string", {"title": "a\u0000b"}, 400, "validation_failed", field_error("title")
    ),
    create(
        "U+0000 deep in a string", {"title": "t", "d": {"e": ["\u0000"]}}, 400, "validation_failed"
    ),
    create("U+0000 in a nested key", {"title": "t", "d": {"a\u0000": 1}}, 400, "validation_failed"),
    create("U+0000 in a field name", {"title": "t", "a\u0000": 1}, 400, "validation_failed"),
    # paths, routes and methods
    Scenario(
        "unknown collection", "POST", "/api/collections/nope/records", 404, "not_found", body={}
    ),
    Scenario("unknown collection, list", "GET", "/api/collections/nope/records", 404, "not_found"),
    Scenario("uppercase collection", "GET", "/api/collections/POSTS/records", 404, "not_found"),
    Scenario(
        "collection posts;drop", "GET", "/api/collections/posts;drop/records", 404, "not_found"
    ),
    Scenario(
        "collection with a quote",
        "POST",
        '/api/collections/posts"; DROP TABLE "_changes/records',
        404,
        "not_found",
        body={"title": "t"},
    ),
    Scenario("collection r_posts", "GET", "/api/collections/r_posts/records", 404, "not_found"),
    Scenario("collection _changes", "GET", "/api/collections/_changes/records", 404, "not_found"),
    *[
        Scenario(
            f"{method} id {name}", method, f"{RECORDS}/{record_id}", 400, "invalid_id", body=body
        )
        for method, body in (("GET", NO_BODY), ("PATCH", {}), ("DELETE", NO_BODY))
        for name, record_id in (
            ("abc", "abc"),
            ("UUIDv4", "{v4}"),
            ("37 characters", "{a}0"),
            ("no dashes", "{nodash}"),
            ("quote", "' OR '1'='1"),
            ("very long", "x" * 5000),
        )
    ],
    Scenario("unknown route", "GET", "/api/nope", 404, "not_found"),
    Scenario("record sub-path", "GET", A + "/extra", 404, "not_found"),
    Scenario("PUT a record", "PUT", A, 405, "method_not_allowed", body={"title": "t"}),
    Scenario("DELETE the collection list", "DELETE", "/api/collections", 405, "method_not_allowed"),
    Scenario("POST health", "POST", "/api/health", 405, "method_not_allowed", body={}),
    Scenario("PATCH records", "PATCH", RECORDS, 405, "method_not_allowed", body={}),
    # cursors
    *[
        listing(f"cursor {name}", 400, "invalid_cursor", cursor=cursor)
        for name, cursor in (
            ("garbage", "garbage!"),
            ("not base64", "%%%%"),
            ("non-ASCII", "é"),
            ("truncated", "{truncated}"),
            ("tampered", "{tampered}"),
            ("another collection", "{notes_cursor}"),
            ("too long", "A" * 5000),
            ("empty JSON", base64.urlsafe_b64encode(b"\0" * 16 + b"[]").decode()),
        )
    ],
    listing("cursor of another sort", 400, "invalid_cursor", cursor="{desc_cursor}", sort="id"),
    listing(
        "cursor of the default sort used with a sort",
        400,
        "invalid_cursor",
        cursor="{cursor}",
        sort="-score",
    ),
    # filters
    *[
        listing(f"filter {name}", 400, "invalid_filter", "position", filter=text)
        for name, text in (
            ("syntax", "title ="),
            ("unknown operator ==", 'title == "x"'),
            ("bare field", "done"),
            ("unterminated string", 'title = "x'),
            ("unknown reference", "owner = @user.id"),
            ("4097 characters", "a = " + " " * 4092 + "1"),
            ("17 levels deep", "(" * 17 + "a = 1" + ")" * 17),
            ("65 terms", " || ".join(["a = 1"] * 65)),
            ("SQL keyword", "title = 'x' OR 1=1"),
            ("semicolon", "title = 'x'; DROP TABLE r_posts"),
            ("SQL comment", "title = 'x' -- "),
            ("path with quote", "title' = 1"),
            ("function call", "json_extract(data, '$.a') = 1"),
            ("integer over 2^53", "score = 9007199254740992"),
            ("U+0000 escape", 'title = "\\u0000"'),
        )
    ],
    listing(
        "injection inside a string matches nothing",
        200,
        None,
        {"items": []},
        filter='title = "x\' OR 1=1 --"',
    ),
    listing(
        "double-quote injection matches nothing",
        200,
        None,
        {"items": []},
        filter='title = \'x" OR "1"="1\'',
    ),
    listing("LIKE wildcard % is literal", 200, None, {"items": []}, filter='title ~ "%"'),
    listing("LIKE wildcard _ is literal", 200, None, {"items": []}, filter='title ~ "_"'),
    # sort and fields
    *[
        listing(f"sort {text!r}", 400, "invalid_filter", sort=text)
        for text in (
            "title;DROP TABLE x",
            "title,title",
            ",",
            "a..b",
            "-",
            "title desc",
            "json_extract(data, '$.a')",
            ",".join(f"f{i}" for i in range(9)),
            "x" * 4097,
        )
    ],
    *[
        listing(f"fields {text[:30]!r}", 400, "invalid_filter", fields=text)
        for text in (
            "title) FROM r_posts; --",
            "tags.0",
            "a..b",
            "*",
            ",".join(f"f{i}" for i in range(65)),
        )
    ],
    # limit
    listing("limit 0", 400, "validation_failed", field_error("limit"), limit="0"),
    listing("limit 501", 400, "validation_failed", field_error("limit"), limit="501"),
    listing("limit -1", 400, "validation_failed", limit="-1"),
    listing("limit abc", 400, "bad_request", "limit", limit="abc"),
    listing("limit 1.5", 400, "bad_request", limit="1.5"),
    listing("limit huge", 400, "validation_failed", limit="9" * 30),
    # headers
    *[
        Scenario(
            f"{method} If-Match {tag!r}",
            method,
            A,
            400,
            "bad_request",
            body=body,
            headers={"If-Match": tag},
        )
        for method, body in (("PATCH", {"score": 5}), ("DELETE", NO_BODY))
        for tag in ("abc", '"x"', '""', "1.0", '"-1"', '"' + "9" * 19 + '"')
    ],
    *[
        Scenario(
            f"{method} Idempotency-Key {name}",
            method,
            path,
            400,
            "bad_request",
            body=body,
            headers={"Idempotency-Key": key},
        )
        for method, path, body in (
            ("POST", RECORDS, {"title": "t"}),
            ("PATCH", A, {"score": 5}),
            ("DELETE", A, NO_BODY),
            (
                "POST",
                "/api/batch",
                {"operations": [{"action": "delete", "collection": "posts", "id": "{a}"}]},
            ),
        )
        for name, key in (
            ("256 characters", "k" * 256),
            ("empty", ""),
            ("non-ASCII", "clé".encode()),
            ("control character", "a\x7fb"),
        )
    ],
]


@pytest.fixture
async def bad(posts: Api) -> Api:
    """``posts`` plus the values the rows name: ids and cursors of every kind."""
    await posts.create_collection({"name": "notes"})
    for _ in range(2):
        await posts.create_record("notes", {"text": "n"})
    posts.values.update(
        v4=str(uuid.uuid4()),
        nodash=posts.values["a"].replace("-", "") + "abcd",
        cursor=await cursor(posts, RECORDS, {}),
        desc_cursor=await cursor(posts, RECORDS, {"sort": "-score"}),
        notes_cursor=await cursor(posts, "/api/collections/notes/records", {}),
    )
    posts.values["truncated"] = posts.values["cursor"][:-3]
    posts.values["tampered"] = tamper(posts.values["cursor"])
    return posts


async def cursor(api: Api, path: str, params: dict[str, str]) -> str:
    response = await api.request("GET", path, params={**params, "limit": "1"})
    found: str = response.json()["next_cursor"]
    assert found
    return found


def tamper(cursor: str) -> str:
    """The same cursor pointing at another row: the payload changed, the signature kept."""
    token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    signature, payload = token[:16], orjson.loads(token[16:])
    payload[1][0] = payload[1][0][:-1] + ("0" if payload[1][0][-1] != "0" else "1")
    forged = signature + orjson.dumps(payload)
    return base64.urlsafe_b64encode(forged).rstrip(b"=").decode()


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
async def test_bad_input(bad: Api, row: Scenario) -> None:
    before = await bad.snapshot()
    notes = await bad.count("notes")

    response = await bad.run(row)

    assert response.status_code < 500
    assert await bad.snapshot() == before, "a refused request wrote something"
    assert await bad.count("notes") == notes
    if response.status_code >= 400:
        assert set(response.json()) >= {"type", "title", "status", "detail", "code"}
