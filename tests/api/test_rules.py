"""Data-leak tests: two users, A and B, and collections whose rules keep them apart.

Every row is a request by B (or another caller) and what must come back; A's private
titles and hidden values must never appear in B's responses, whatever B asks.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.scenario import Api, Scenario, ids
from conftest import TEST_DEVICE

A_PRIVATE = "A-private-title"
A_SECRET = "A-hidden-value"
OWNED = "owner = @auth.id"

NOTES: dict[str, Any] = {
    "name": "notes",
    "fields": {
        "title": {"type": "string"},
        "score": {"type": "integer"},
        "secret": {"type": "string", "hidden": True},
    },
    "indexes": [{"fields": ["score"]}],
    "rules": {"list": OWNED, "view": OWNED, "create": "@auth.id != null", "update": OWNED,
              "delete": OWNED},
}  # fmt: skip
POSTS: dict[str, Any] = {
    "name": "posts",
    "fields": {
        "title": {"type": "string"},
        "public": {"type": "boolean"},
        "secret": {"type": "string", "hidden": True},
    },
    "rules": {
        "list": "public = true || owner = @auth.id",
        "view": "public = true || owner = @auth.id",
        "create": "@auth.id != null",
        "update": OWNED,
        "delete": OWNED,
    },
}
PROFILES: dict[str, Any] = {
    "name": "profiles",
    "fields": {"nickname": {"type": "string"}, "role": {"type": "string"}},
    "rules": {
        "list": "",
        "view": "",
        "create": "@auth.id != null && @request.data.role = null",
        "update": "owner = @auth.id && @request.data.role = null",
        "delete": OWNED,
    },
}
NEVER = (A_PRIVATE, A_SECRET)
"""What B's responses must never hold (rows add their own)."""


async def sign_up(api: Api, name: str) -> None:
    signed_in = await api.components.accounts.signup(
        f"{name}@example.com", "a-good-long-password", TEST_DEVICE, {}
    )
    api.values[f"{name}_token"] = signed_in.access_token
    api.values[f"{name}_id"] = signed_in.user["id"]


async def create_as(api: Api, who: str, collection: str, data: dict[str, Any]) -> str:
    response = await api.request(
        "POST",
        f"/api/collections/{collection}/records",
        auth="anonymous",
        body=data,
        headers={"Authorization": f"Bearer {api.values[who + '_token']}"},
    )
    assert response.status_code == 201, response.text
    record_id: str = response.json()["id"]
    return record_id


@pytest.fixture
async def world(api: Api) -> Api:
    """Users ``a`` and ``b``; A's private records and B's own, in notes/posts/profiles."""
    for definition in (NOTES, POSTS, PROFILES):
        await api.create_collection(definition)
    await sign_up(api, "a")
    await sign_up(api, "b")
    for n in range(3):
        api.values[f"a_note{n}"] = await create_as(
            api, "a", "notes", {"title": A_PRIVATE, "score": 10 + n, "secret": A_SECRET}
        )
    for n in range(2):
        api.values[f"b_note{n}"] = await create_as(
            api, "b", "notes", {"title": f"b note {n}", "score": n, "secret": "b-secret"}
        )
    api.values["a_public"] = await create_as(
        api, "a", "posts", {"title": "A public", "public": True, "secret": A_SECRET}
    )
    api.values["a_hidden_post"] = await create_as(
        api, "a", "posts", {"title": A_PRIVATE, "public": False, "secret": A_SECRET}
    )
    api.values["b_post"] = await create_as(api, "b", "posts", {"title": "B post", "public": False})
    api.values["b_profile"] = await create_as(api, "b", "profiles", {"nickname": "bee"})
    return api


def as_b(**row: Any) -> Scenario:
    """A row sent with B's token, which must not reveal A's private values."""
    headers = {"Authorization": "Bearer {b_token}", **row.pop("headers", {})}
    absent = (*NEVER, *row.pop("absent", ()))
    return Scenario(auth="anonymous", headers=headers, absent=absent, **row)


def as_a(**row: Any) -> Scenario:
    headers = {"Authorization": "Bearer {a_token}", **row.pop("headers", {})}
    return Scenario(auth="anonymous", headers=headers, **row)


NOTE = "/api/collections/notes/records/{a_note0}"
B_NOTES = ({"id": "{b_note0}"}, {"id": "{b_note1}"})
PRIVATE_ROWS = [
    as_b(id="list shows only B's", method="GET", path="/api/collections/notes/records",
         status=200, items=B_NOTES),
    as_b(id="view A's is missing", method="GET", path=NOTE, status=404, code="not_found"),
    as_b(id="view A's with If-None-Match", method="GET", path=NOTE, status=404,
         code="not_found", headers={"If-None-Match": '"1"'}),
    as_b(id="update A's is missing", method="PATCH", path=NOTE, body={"title": "mine"},
         status=404, code="not_found"),
    as_b(id="update A's with a stale If-Match", method="PATCH", path=NOTE, body={"title": "x"},
         headers={"If-Match": '"7"'}, status=404, code="not_found"),
    as_b(id="delete A's is missing", method="DELETE", path=NOTE, status=404, code="not_found"),
    as_b(id="delete A's with If-Match", method="DELETE", path=NOTE, headers={"If-Match": '"1"'},
         status=404, code="not_found"),
    as_b(id="batch update of A's", method="POST", path="/api/batch", status=404,
         code="not_found", body={"operations": [
             {"action": "update", "collection": "notes", "id": "{a_note0}", "data": {"t": 1}}]}),
    as_b(id="batch delete of A's", method="POST", path="/api/batch", status=404,
         code="not_found", body={"operations": [
             {"action": "delete", "collection": "notes", "id": "{a_note0}"}]}),
    as_b(id="filter on A's title", method="GET", path="/api/collections/notes/records",
         params={"filter": f'title = "{A_PRIVATE}"'}, status=200, items=()),
    as_b(id="filter on A's id", method="GET", path="/api/collections/notes/records",
         params={"filter": 'id = "{a_note0}"'}, status=200, items=()),
    as_b(id="filter on A as owner", method="GET", path="/api/collections/notes/records",
         params={"filter": 'owner = "{a_id}"'}, status=200, items=()),
    as_b(id="filter that would match all", method="GET", path="/api/collections/notes/records",
         params={"filter": "score >= 0 || score = null"}, status=200, items=B_NOTES),
    as_b(id="negated filter", method="GET", path="/api/collections/notes/records",
         params={"filter": 'owner != "{b_id}"'}, status=200, items=()),
    as_b(id="sort by score descending", method="GET", path="/api/collections/notes/records",
         params={"sort": "-score"}, status=200, items=tuple(reversed(B_NOTES))),
    as_b(id="sort by owner", method="GET", path="/api/collections/notes/records",
         params={"sort": "owner,-created"}, status=200,
         items=({"id": "{b_note1}"}, {"id": "{b_note0}"})),
    as_b(id="page of one", method="GET", path="/api/collections/notes/records",
         params={"limit": "1", "sort": "-score"}, status=200, items=({"id": "{b_note1}"},)),
    as_b(id="max page", method="GET", path="/api/collections/notes/records",
         params={"limit": "500"}, status=200, items=B_NOTES),
    as_b(id="fields of A's", method="GET", path="/api/collections/notes/records",
         params={"fields": "title,secret"}, status=200, items=B_NOTES),
    Scenario(id="anonymous lists nothing", method="GET", path="/api/collections/notes/records",
             auth="anonymous", status=200, items=(), absent=NEVER),
    Scenario(id="anonymous view is missing", method="GET", path=NOTE, auth="anonymous",
             status=404, code="not_found", absent=NEVER),
    Scenario(id="bogus token", method="GET", path="/api/collections/notes/records",
             auth="bogus", status=401, code="unauthorized", absent=NEVER),
    as_a(id="A sees its own, secret included", method="GET", path=NOTE, status=200,
         fragments=({"title": A_PRIVATE, "secret": A_SECRET},)),
    Scenario(id="admin sees everything", method="GET", path="/api/collections/notes/records",
             status=200, params={"filter": f'secret = "{A_SECRET}"'},
             items=({"id": "{a_note0}"}, {"id": "{a_note1}"}, {"id": "{a_note2}"})),
]  # fmt: skip


@pytest.mark.parametrize("row", PRIVATE_ROWS, ids=ids(PRIVATE_ROWS))
async def test_private_records(world: Api, row: Scenario) -> None:
    before = await world.snapshot("notes")
    await world.run(row)
    if row.method != "GET":
        assert await world.snapshot("notes") == before


async def test_b_pages_through_its_own_records_only(world: Api) -> None:
    seen: list[str] = []
    cursor = ""
    headers = {"Authorization": f"Bearer {world.values['b_token']}"}
    for _ in range(10):
        params = {"limit": "1", "sort": "score", **({"cursor": cursor} if cursor else {})}
        response = await world.request(
            "GET", "/api/collections/notes/records", auth="anonymous", headers=headers,
            params=params,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"] or ""
        if not cursor:
            break
    assert seen == [world.values["b_note0"], world.values["b_note1"]]


POST = "/api/collections/posts/records"
HIDDEN_ROWS = [
    as_b(id="list shows A's public post without its hidden field", method="GET", path=POST,
         status=200, items=({"id": "{a_public}", "title": "A public"}, {"id": "{b_post}"})),
    as_b(id="view A's public post", method="GET", path=POST + "/{a_public}", status=200,
         fragments=({"title": "A public"},)),
    as_b(id="view A's private post", method="GET", path=POST + "/{a_hidden_post}",
         status=404, code="not_found"),
    as_b(id="update A's public post", method="PATCH", path=POST + "/{a_public}",
         body={"title": "defaced"}, status=403, code="forbidden"),
    as_b(id="delete A's public post", method="DELETE", path=POST + "/{a_public}",
         status=403, code="forbidden"),
    as_b(id="filter on the hidden field", method="GET", path=POST,
         params={"filter": f'secret = "{A_SECRET}"'}, status=400, code="invalid_filter"),
    as_b(id="filter on a hidden field's prefix", method="GET", path=POST,
         params={"filter": 'secret ~ "A"'}, status=400, code="invalid_filter"),
    as_b(id="filter on the hidden field being null", method="GET", path=POST,
         params={"filter": "secret = null"}, status=400, code="invalid_filter"),
    as_b(id="filter on the hidden field inside a negation", method="GET", path=POST,
         params={"filter": 'public = true && !(secret > "M")'}, status=400,
         code="invalid_filter"),
    as_b(id="filter on a path inside the hidden field", method="GET", path=POST,
         params={"filter": "secret.length > 3"}, status=400, code="invalid_filter"),
    as_b(id="filter with the hidden field in a list", method="GET", path=POST,
         params={"filter": 'title in ["x", secret]'}, status=400),
    as_b(id="sort by the hidden field", method="GET", path=POST, params={"sort": "secret"},
         status=400, code="invalid_filter"),
    as_b(id="sort by the hidden field descending", method="GET", path=POST,
         params={"sort": "title,-secret"}, status=400, code="invalid_filter"),
    as_b(id="project the hidden field", method="GET", path=POST,
         params={"fields": "secret"}, status=200,
         items=({"id": "{a_public}"}, {"id": "{b_post}"})),
    as_a(id="A sees its hidden field", method="GET", path=POST + "/{a_public}", status=200,
         fragments=({"secret": A_SECRET},)),
    Scenario(id="admin may filter on it", method="GET", path=POST, status=200,
             params={"filter": f'secret = "{A_SECRET}"', "sort": "id"},
             items=({"id": "{a_public}"}, {"id": "{a_hidden_post}"})),
]  # fmt: skip


@pytest.mark.parametrize("row", HIDDEN_ROWS, ids=ids(HIDDEN_ROWS))
async def test_hidden_fields(world: Api, row: Scenario) -> None:
    before = await world.snapshot("posts")
    response = await world.run(row)
    if row.method != "GET":
        assert await world.snapshot("posts") == before
    if row.status == 200 and row.headers.get("Authorization") == "Bearer {b_token}":
        body = response.json()
        for item in body.get("items", [body]):
            if item["id"] != world.values["b_post"]:
                assert "secret" not in item, item


PROFILE = "/api/collections/profiles/records"
NOTES_PATH = "/api/collections/notes/records"
WRITE_ROWS = [
    as_b(id="create with role", method="POST", path=PROFILE,
         body={"nickname": "x", "role": "admin"}, status=403, code="forbidden"),
    as_b(id="create with role null is no role", method="POST", path=PROFILE,
         body={"nickname": "x", "role": None}, status=201),
    as_b(id="create without role", method="POST", path=PROFILE, body={"nickname": "x"},
         status=201, fragments=({"owner": "{b_id}"},)),
    as_b(id="update own with role", method="PATCH", path=PROFILE + "/{b_profile}",
         body={"role": "admin"}, status=403, code="forbidden"),
    as_b(id="update own without role", method="PATCH", path=PROFILE + "/{b_profile}",
         body={"nickname": "bumble"}, status=200, fragments=({"nickname": "bumble"},)),
    as_b(id="batch create with role", method="POST", path="/api/batch", status=403,
         code="forbidden", body={"operations": [
             {"action": "create", "collection": "profiles", "data": {"nickname": "ok"}},
             {"action": "create", "collection": "profiles", "data": {"role": "admin"}}]}),
    as_b(id="create owned by A", method="POST", path=NOTES_PATH,
         body={"title": "planted", "owner": "{a_id}"}, status=400, code="validation_failed"),
    as_b(id="create owned by nobody", method="POST", path=NOTES_PATH,
         body={"title": "planted", "owner": None}, status=400, code="validation_failed"),
    as_b(id="give own note to A", method="PATCH", path=NOTES_PATH + "/{b_note0}",
         body={"owner": "{a_id}"}, status=400, code="validation_failed"),
    as_b(id="batch create owned by A", method="POST", path="/api/batch", status=400,
         code="validation_failed", body={"operations": [
             {"action": "create", "collection": "notes", "data": {"owner": "{a_id}"}}]}),
    as_b(id="system fields are the server's", method="PATCH", path=NOTES_PATH + "/{b_note0}",
         body={"version": 99, "created": "2000-01-01T00:00:00.000Z"}, status=400,
         code="validation_failed"),
    Scenario(id="admin may set owner", method="POST", path=NOTES_PATH,
             body={"title": "given", "owner": "{a_id}"}, status=201,
             fragments=({"owner": "{a_id}"},)),
]  # fmt: skip


@pytest.mark.parametrize("row", WRITE_ROWS, ids=ids(WRITE_ROWS))
async def test_mass_assignment(world: Api, row: Scenario) -> None:
    before = [await world.snapshot(name) for name in ("notes", "profiles")]
    await world.run(row)
    if row.status >= 400:
        assert [await world.snapshot(name) for name in ("notes", "profiles")] == before


USERS = "/api/collections/users/records"
USER_ROWS = [
    as_b(id="users lists only B", method="GET", path="/api/users", status=200,
         items=({"id": "{b_id}", "email": "b@example.com"},), absent=("a@example.com",)),
    as_b(id="users view of A", method="GET", path="/api/users/{a_id}", status=404,
         code="not_found", absent=("a@example.com",)),
    as_b(id="users view of self", method="GET", path="/api/users/{b_id}", status=200,
         fragments=({"email": "b@example.com", "role": "user"},)),
    as_b(id="records API lists only B", method="GET", path=USERS, status=200,
         items=({"id": "{b_id}"},), absent=("a@example.com",)),
    as_b(id="filter users by A's email", method="GET", path="/api/users",
         params={"filter": 'email = "a@example.com"'}, status=400, code="invalid_filter"),
    as_b(id="sort users by email", method="GET", path="/api/users", params={"sort": "email"},
         status=400, code="invalid_filter"),
    as_b(id="make self admin", method="PATCH", path=USERS + "/{b_id}", body={"role": "admin"},
         status=403, code="forbidden"),
    as_b(id="verify self", method="PATCH", path=USERS + "/{b_id}", body={"verified": True},
         status=403, code="forbidden"),
    as_b(id="change own email", method="PATCH", path=USERS + "/{b_id}",
         body={"email": "x@example.com"}, status=403, code="forbidden"),
    as_b(id="patch A", method="PATCH", path=USERS + "/{a_id}", body={"nickname": "x"},
         status=404, code="not_found"),
    as_b(id="delete A", method="DELETE", path=USERS + "/{a_id}", status=404, code="not_found"),
    as_b(id="create a user", method="POST", path=USERS,
         body={"email": "c@example.com", "role": "admin"}, status=403, code="forbidden"),
    as_b(id="batch makes self admin", method="POST", path="/api/batch", status=403,
         code="forbidden", body={"operations": [
             {"action": "update", "collection": "users", "id": "{b_id}",
              "data": {"role": "admin"}}]}),
    Scenario(id="admin lists every user", method="GET", path="/api/users", status=200,
             params={"filter": 'role = "user"'}, fragments=(
                 {"items": [{"id": "{a_id}", "email": "a@example.com"},
                            {"id": "{b_id}", "email": "b@example.com"}]},)),
    Scenario(id="admin may filter on email", method="GET", path="/api/users", status=200,
             params={"filter": 'email = "a@example.com"'}, items=({"id": "{a_id}"},)),
    Scenario(id="admin views A", method="GET", path="/api/users/{a_id}", status=200,
             fragments=({"email": "a@example.com"},)),
    Scenario(id="anonymous lists no user", method="GET", path="/api/users", auth="anonymous",
             status=200, items=()),
]  # fmt: skip


@pytest.mark.parametrize("row", USER_ROWS, ids=ids(USER_ROWS))
async def test_users_collection(world: Api, row: Scenario) -> None:
    before = await world.snapshot("users")
    await world.run(row)
    if row.method != "GET":
        assert await world.snapshot("users") == before


OPEN_USER_ROWS = [
    as_b(id="B sees A but not A's email", method="GET", path="/api/users",
         params={"filter": 'id in ["{a_id}", "{b_id}"]'}, status=200,
         items=({"id": "{a_id}"}, {"id": "{b_id}", "email": "b@example.com"}),
         absent=("a@example.com",)),
    as_b(id="B views A without the email", method="GET", path="/api/users/{a_id}", status=200,
         absent=("a@example.com",)),
    as_b(id="filter on email is still refused", method="GET", path="/api/users",
         params={"filter": 'email ~ "a@"'}, status=400, code="invalid_filter"),
    as_b(id="nickname on self", method="PATCH", path=USERS + "/{b_id}",
         body={"nickname": "bee"}, status=200, fragments=({"nickname": "bee", "role": "user"},)),
    as_b(id="role on self is still refused", method="PATCH", path=USERS + "/{b_id}",
         body={"role": "admin"}, status=403, code="forbidden"),
    as_b(id="anonymous flag on self is refused", method="PATCH", path=USERS + "/{b_id}",
         body={"anonymous": True}, status=403, code="forbidden"),
    as_b(id="nickname on A", method="PATCH", path=USERS + "/{a_id}", body={"nickname": "x"},
         status=403, code="forbidden"),
]  # fmt: skip


@pytest.mark.parametrize("row", OPEN_USER_ROWS, ids=ids(OPEN_USER_ROWS))
async def test_users_collection_with_open_rules(world: Api, row: Scenario) -> None:
    """Even when an admin lets everyone list users and edit themselves, emails stay hidden
    and account fields stay with the auth endpoints."""
    response = await world.request(
        "PATCH",
        "/api/collections/users",
        body={"rules": {"list": "", "view": "", "update": "id = @auth.id"}},
    )
    assert response.status_code == 200, response.text
    await world.run(row)
