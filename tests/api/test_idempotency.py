"""``Idempotency-Key``: a retry returns the first result and writes nothing twice."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from api.scenario import Api, Scenario, ids

RECORDS = "/api/collections/posts/records"
A = RECORDS + "/{a}"
KEY = {"Idempotency-Key": "key-1"}
OTHER_KEY = {"Idempotency-Key": "key-2"}


def batch(*titles: str) -> dict[str, object]:
    return {
        "operations": [
            {"action": "create", "collection": "posts", "data": {"title": title}}
            for title in titles
        ]
    }


@dataclass(frozen=True)
class Retry:
    """Two requests in a row; what the second returns and how many writes both made."""

    id: str
    first: Scenario
    second: Scenario
    writes: int
    replayed: bool = False
    """The second response is the first one, byte for byte."""


def post(
    status: int, body: object, code: str | None = None, headers: dict[str, str] = KEY
) -> Scenario:
    return Scenario("post", "POST", RECORDS, status, code, body=body, headers=headers)


BROKEN_BATCH = {
    "operations": [
        {"action": "create", "collection": "posts", "data": {"title": "x"}},
        {"action": "create", "collection": "nope", "data": {}},
    ]
}

RETRIES: list[Retry] = [
    Retry("create retried", post(201, {"title": "t"}), post(201, {"title": "t"}), 1, True),
    Retry(
        "patch retried",
        Scenario("patch", "PATCH", A, 200, body={"score": 9}, headers=KEY),
        Scenario(
            "patch", "PATCH", A, 200, body={"score": 9}, headers=KEY, fragments=({"version": 2},)
        ),
        1,
        True,
    ),
    Retry(
        "delete retried",
        Scenario("delete", "DELETE", A, 204, headers=KEY),
        Scenario("delete", "DELETE", A, 204, headers=KEY),
        1,
        True,
    ),
    Retry(
        "batch retried",
        Scenario("batch", "POST", "/api/batch", 200, body=batch("x", "y"), headers=KEY),
        Scenario("batch", "POST", "/api/batch", 200, body=batch("x", "y"), headers=KEY),
        2,
        True,
    ),
    Retry(
        "same key, other body",
        post(201, {"title": "t"}),
        post(422, {"title": "u"}, "idempotency_key_reused"),
        1,
    ),
    Retry(
        "same key, other path",
        Scenario("patch a", "PATCH", A, 200, body={"score": 9}, headers=KEY),
        Scenario(
            "patch b",
            "PATCH",
            RECORDS + "/{b}",
            422,
            "idempotency_key_reused",
            body={"score": 9},
            headers=KEY,
        ),
        1,
    ),
    Retry(
        "same key, other method",
        Scenario("patch a", "PATCH", A, 200, body={}, headers=KEY),
        Scenario("delete a", "DELETE", A, 422, "idempotency_key_reused", headers=KEY),
        1,
    ),
    Retry(
        "same key, batch then create",
        Scenario("batch", "POST", "/api/batch", 200, body=batch("x"), headers=KEY),
        post(422, batch("x"), "idempotency_key_reused"),
        1,
    ),
    Retry(
        "different keys write twice",
        post(201, {"title": "t"}),
        post(201, {"title": "t"}, headers=OTHER_KEY),
        2,
    ),
    Retry(
        "a failed attempt is not kept: fixed retry writes",
        post(400, {"score": 1}, "validation_failed"),
        post(201, {"title": "t"}),
        1,
    ),
    Retry(
        "a failed attempt is not kept: same retry fails again",
        post(400, {"score": 1}, "validation_failed"),
        post(400, {"score": 1}, "validation_failed"),
        0,
    ),
    Retry(
        "a conflict is not kept",
        Scenario(
            "patch",
            "PATCH",
            A,
            412,
            "precondition_failed",
            body={},
            headers={**KEY, "If-Match": '"5"'},
        ),
        Scenario("patch", "PATCH", A, 200, body={}, headers=KEY),
        1,
    ),
    Retry(
        "a failed batch is not kept",
        Scenario("batch", "POST", "/api/batch", 404, "not_found", body=BROKEN_BATCH, headers=KEY),
        Scenario("batch", "POST", "/api/batch", 404, "not_found", body=BROKEN_BATCH, headers=KEY),
        0,
    ),
    Retry(
        "keys are scoped per caller",
        Scenario("admin", "POST", "/api/collections/open/records", 201, body={"n": 1}, headers=KEY),
        Scenario(
            "anonymous",
            "POST",
            "/api/collections/open/records",
            201,
            body={"n": 1},
            headers=KEY,
            auth="anonymous",
        ),
        2,
    ),
    Retry(
        "keys are scoped per user",
        Scenario("admin", "POST", "/api/collections/open/records", 201, body={"n": 1}, headers=KEY),
        Scenario(
            "user",
            "POST",
            "/api/collections/open/records",
            201,
            body={"n": 1},
            headers=KEY,
            auth="user",
            fragments=({"owner": "{user}"},),
        ),
        2,
    ),
    Retry(
        "keys are scoped per caller, other body",
        Scenario("admin", "POST", "/api/collections/open/records", 201, body={"n": 1}, headers=KEY),
        Scenario(
            "anonymous",
            "POST",
            "/api/collections/open/records",
            201,
            body={"n": 2},
            headers=KEY,
            auth="anonymous",
        ),
        2,
    ),
]


@pytest.fixture
async def ready(posts: Api) -> Api:
    await posts.create_collection({"name": "open", "rules": {"create": ""}})
    return posts


@pytest.mark.parametrize("retry", RETRIES, ids=[retry.id for retry in RETRIES])
async def test_retry(ready: Api, retry: Retry) -> None:
    before = len(await ready.changes())

    first = await ready.run(retry.first)
    second = await ready.run(retry.second)

    assert len(await ready.changes()) == before + retry.writes
    if retry.replayed:
        assert second.content == first.content
        assert second.headers.get("etag") == first.headers.get("etag")


async def test_a_retry_after_a_later_write_returns_the_first_result(posts: Api) -> None:
    first = await posts.request("POST", RECORDS, body={"title": "t"}, headers=KEY)
    record = first.json()
    await posts.request("PATCH", f"{RECORDS}/{record['id']}", body={"title": "changed"})
    before = await posts.snapshot()

    retry = await posts.request("POST", RECORDS, body={"title": "t"}, headers=KEY)

    assert retry.status_code == 201
    assert retry.json() == record
    assert await posts.snapshot() == before


REQUESTS = [
    Scenario("create", "POST", RECORDS, 201, body={"title": "t"}, headers=KEY),
    Scenario("patch", "PATCH", A, 200, body={"score": 5}, headers=KEY),
    Scenario("delete", "DELETE", A, 204, headers=KEY),
    Scenario("batch", "POST", "/api/batch", 200, body=batch("x", "y", "z"), headers=KEY),
]


@pytest.mark.parametrize("row", REQUESTS, ids=ids(REQUESTS))
async def test_concurrent_retries_write_once(posts: Api, row: Scenario) -> None:
    before = await posts.changes()

    responses = await asyncio.gather(*(posts.run(row) for _ in range(8)))

    new = (await posts.changes())[len(before) :]
    assert len(new) == (3 if row.path == "/api/batch" else 1)
    assert len({response.content for response in responses}) == 1
    assert (
        await posts.count("posts") == 3 + {"POST": len(new), "PATCH": 0, "DELETE": -1}[row.method]
    )
