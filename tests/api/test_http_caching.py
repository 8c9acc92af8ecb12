"""HTTP caching for phones on slow networks: records and pages carry validators, a client
that holds the current copy gets a 304, and a shared cache may keep only what anyone may
read."""

from __future__ import annotations

from typing import Any

import pytest

from api.scenario import Api

PATH = "/api/collections/posts/records"


async def read(api: Api, path: str, etag: str | None = None, **params: str) -> Any:
    headers = api.auth_headers("admin")
    if etag is not None:
        headers["If-None-Match"] = etag
    return await api.client.get(path, headers=headers, params=params)


async def test_a_record_revalidates_with_its_version(posts: Api) -> None:
    path = f"{PATH}/{posts.values['a']}"
    first = await read(posts, path)
    assert first.status_code == 200
    assert (first.headers["etag"], first.headers["cache-control"]) == ('"1"', "private, no-cache")
    again = await read(posts, path, first.headers["etag"])
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == '"1"'
    assert (await read(posts, path, 'W/"1", "9"')).status_code == 304
    changed = await posts.client.patch(path, json={"score": 5}, headers=posts.auth_headers("admin"))
    assert changed.status_code == 200
    stale = await read(posts, path, '"1"')
    assert (stale.status_code, stale.headers["etag"], stale.json()["score"]) == (200, '"2"', 5)


async def test_a_page_revalidates_with_a_content_tag(posts: Api) -> None:
    first = await read(posts, PATH, sort="score")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('W/"')
    assert (await read(posts, PATH, etag, sort="score")).status_code == 304
    assert (await read(posts, PATH, etag, sort="-score")).status_code == 200  # another page
    await posts.create_record("posts", {"title": "delta", "score": 4})
    after = await read(posts, PATH, etag, sort="score")
    assert after.status_code == 200 and after.headers["etag"] != etag
    assert len(after.json()["items"]) == 4


@pytest.mark.parametrize(
    ("rules", "hidden", "expected"),
    [
        ({"list": "", "view": ""}, False, "public, max-age=60"),
        ({"list": "", "view": ""}, True, "private, max-age=60"),  # owners see more
        ({"list": "owner = @auth.id", "view": "owner = @auth.id"}, False, "private, max-age=60"),
    ],
)
async def test_only_data_anyone_may_read_is_cacheable_by_shared_caches(
    api: Api, rules: dict[str, str], hidden: bool, expected: str
) -> None:
    fields = {"note": {"type": "string", "hidden": True}} if hidden else {}
    await api.create_collection(
        {"name": "feed", "fields": fields, "rules": rules, "options": {"cache_max_age": 60}}
    )
    created = await api.create_record("feed", {"title": "x"})
    page = await read(api, "/api/collections/feed/records")
    record = await read(api, f"/api/collections/feed/records/{created['id']}")
    assert page.headers["cache-control"] == record.headers["cache-control"] == expected


async def test_a_bad_max_age_is_refused(api: Api) -> None:
    response = await api.client.post(
        "/api/collections",
        json={"name": "feed", "options": {"cache_max_age": -1}},
        headers=api.auth_headers("admin"),
    )
    assert (response.status_code, response.json()["code"]) == (400, "validation_failed")
