"""``GET /api/sync``: a snapshot first, then the change log, each change as the caller may
see it; only readable records, tombstones for deletes and for records that left the
caller's view, pages that add up to the same as one big page, and clear errors."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from api.scenario import Api, Scenario, ids
from conftest import TEST_DEVICE
from roost.realtime.changes import encode_cursor
from roost.realtime.sync import MAX_COLLECTIONS, MAX_LIMIT

OWNED = "owner = @auth.id"
OPEN = {"list": "", "view": "", "create": "", "update": "", "delete": ""}
NOTES: dict[str, Any] = {
    "name": "notes",
    "fields": {"text": {"type": "string"}, "secret": {"type": "string", "hidden": True}},
    "rules": {"list": OWNED, "view": OWNED, "create": "@auth.id != null", "update": OWNED,
              "delete": OWNED},
}  # fmt: skip
SHARED: dict[str, Any] = {
    "name": "shared",
    "fields": {"public": {"type": "boolean"}, "secret": {"type": "string", "hidden": True}},
    "rules": {**OPEN, "list": "public = true || owner = @auth.id",
              "view": "public = true || owner = @auth.id"},
}  # fmt: skip
SECRET = "never-shown-to-others"


@dataclass
class Device:
    """A client: its token, its cursor and its copy of the records, applied by id."""

    api: Api
    token: str | None
    names: str
    cursor: str | None = None
    view: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    async def page(self, limit: int = 100) -> dict[str, Any]:
        params = {"collections": self.names, "limit": str(limit)}
        if self.cursor is not None:
            params["since"] = self.cursor
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.api.client.get("/api/sync", params=params, headers=headers)
        assert response.status_code == 200, response.text
        self.texts.append(response.text)
        body: dict[str, Any] = response.json()
        assert set(body) == {"changes", "cursor", "has_more"}
        for change in body["changes"]:
            assert set(change) == {"op", "collection", "id", "version", "record"}
            if change["op"] in ("delete", "leave"):
                assert change["record"] is None
                self.view.pop(change["id"], None)
            else:
                assert change["record"]["id"] == change["id"]
                assert change["record"]["version"] == change["version"]
                self.view[change["id"]] = change["record"]
        self.received.extend(body["changes"])
        self.cursor = body["cursor"]
        return body

    async def pull(self, limit: int = 100) -> list[dict[str, Any]]:
        """Every page until ``has_more`` is false; the changes received on the way."""
        start = len(self.received)
        for _ in range(10_000):
            if not (await self.page(limit))["has_more"]:
                return self.received[start:]
        raise AssertionError("has_more never became false")

    def ops(self, changes: list[dict[str, Any]] | None = None) -> list[tuple[str, str, int]]:
        return [(c["op"], c["id"], c["version"]) for c in (changes or self.received)]


async def sign_up(api: Api, name: str) -> str:
    """A new user ``name``: its id is ``{name}``; returns its access token."""
    signed_in = await api.components.accounts.signup(
        f"{name}@example.com", "a-good-long-password", TEST_DEVICE, {}
    )
    api.values[name] = signed_in.user["id"]
    return signed_in.access_token


async def write(
    api: Api, method: str, path: str, token: str | None = None, body: Any = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token or api.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    response = await api.client.request(
        method, path, headers=headers, content=None if body is None else orjson.dumps(body)
    )
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.content else {}


async def create(api: Api, name: str, data: dict[str, Any], token: str | None = None) -> str:
    record = await write(api, "POST", f"/api/collections/{name}/records", token, data)
    record_id: str = record["id"]
    return record_id


async def patch(api: Api, name: str, record_id: str, data: dict[str, Any]) -> None:
    await write(api, "PATCH", f"/api/collections/{name}/records/{record_id}", body=data)


async def delete(api: Api, name: str, record_id: str, token: str | None = None) -> None:
    await write(api, "DELETE", f"/api/collections/{name}/records/{record_id}", token)


async def log_cursor(api: Api) -> str:
    log = await api.components.storage.log_state()
    return encode_cursor(log.epoch, log.head)


async def test_first_sync_of_an_empty_collection(api: Api) -> None:
    await api.create_collection({"name": "empty", "rules": OPEN})
    device = Device(api, None, "empty")
    body = await device.page()
    assert body == {"changes": [], "cursor": await log_cursor(api), "has_more": False}
    assert (await device.page()) == body  # nothing new: the same cursor back


async def test_first_sync_of_a_populated_collection_then_its_changes(posts: Api) -> None:
    api = posts
    device = Device(api, api.user_token, "posts")
    changes = await device.pull()
    expected = sorted(api.values[key] for key in "abc")
    assert device.ops(changes) == [("create", record_id, 1) for record_id in expected]
    for change in changes:
        response = await api.client.get(f"/api/collections/posts/records/{change['id']}")
        assert change["record"] == response.json()
        assert change["collection"] == "posts"
    assert device.cursor == await log_cursor(api)

    new = await create(api, "posts", {"title": "delta"})
    await patch(api, "posts", new, {"score": 9})
    await patch(api, "posts", api.values["a"], {"title": "alpha 2"})
    await delete(api, "posts", new)
    await delete(api, "posts", api.values["b"])
    changes = await device.pull()
    assert device.ops(changes) == [
        ("create", new, 1),
        ("update", new, 2),
        ("update", api.values["a"], 2),
        ("delete", new, 3),
        ("delete", api.values["b"], 2),
    ]
    assert changes[1]["record"]["score"] == 9 and changes[2]["record"]["title"] == "alpha 2"
    assert set(device.view) == {api.values["a"], api.values["c"]}
    assert (await device.pull()) == []


async def test_a_user_never_sees_another_users_records_not_even_ids(api: Api) -> None:
    await api.create_collection(NOTES)
    ann, bob = await sign_up(api, "ann"), await sign_up(api, "bob")
    ann_notes = [await create(api, "notes", {"text": f"ann {i}"}, ann) for i in range(3)]
    bob_note = await create(api, "notes", {"text": "bob", "secret": "bob's own"}, bob)
    bob_device = Device(api, bob, "notes")
    assert bob_device.ops(await bob_device.pull()) == [("create", bob_note, 1)]
    assert bob_device.view[bob_note]["secret"] == "bob's own"  # the owner sees hidden fields

    await patch(api, "notes", ann_notes[0], {"text": "ann changed"})
    await delete(api, "notes", ann_notes[1], ann)
    ann_notes.append(await create(api, "notes", {"text": "ann new"}, ann))
    await patch(api, "notes", bob_note, {"text": "bob 2"})
    assert bob_device.ops(await bob_device.pull(limit=2)) == [("update", bob_note, 2)]
    for text in bob_device.texts:
        assert "ann" not in text
        assert not any(record_id in text for record_id in ann_notes)

    admin = Device(api, api.token, "notes")
    await admin.pull()
    assert set(admin.view) == {*ann_notes, bob_note} - {ann_notes[1]}


async def test_an_update_that_hides_a_record_is_a_leave_one_that_shows_it_an_enter(
    api: Api,
) -> None:
    await api.create_collection(SHARED)
    record = await create(api, "shared", {"public": True})
    device = Device(api, api.user_token, "shared")
    assert device.ops(await device.pull()) == [("create", record, 1)]

    await patch(api, "shared", record, {"public": False})
    await patch(api, "shared", record, {"secret": "x"})  # unseen before and after: nothing
    await patch(api, "shared", record, {"public": True})
    await patch(api, "shared", record, {"public": True, "n": 1})
    changes = await device.pull()
    assert device.ops(changes) == [
        ("leave", record, 2),
        ("enter", record, 4),
        ("update", record, 5),
    ]
    assert changes[0]["record"] is None and changes[1]["record"]["public"] is True
    hidden = await create(api, "shared", {"public": False})
    await patch(api, "shared", hidden, {"public": True})
    await delete(api, "shared", hidden)
    assert device.ops(await device.pull()) == [("enter", hidden, 2), ("delete", hidden, 3)]


async def test_a_rule_change_applies_at_the_next_sync(api: Api) -> None:
    await api.create_collection({**SHARED, "rules": OPEN})
    mine = await create(api, "shared", {"public": False}, api.user_token)
    theirs = await create(api, "shared", {"public": False})
    device = Device(api, api.user_token, "shared")
    await device.pull()
    assert set(device.view) == {mine, theirs}

    rules = {**OPEN, "list": OWNED, "view": OWNED}
    await write(api, "PATCH", "/api/collections/shared", body={"rules": rules})
    await patch(api, "shared", theirs, {"n": 1})  # now never seen by the user
    await patch(api, "shared", mine, {"n": 1})
    assert device.ops(await device.pull()) == [("update", mine, 2)]
    fresh = Device(api, api.user_token, "shared")
    assert fresh.ops(await fresh.pull()) == [("create", mine, 2)]

    view_admins_only = {**OPEN, "list": "", "view": None}
    await write(api, "PATCH", "/api/collections/shared", body={"rules": view_admins_only})
    await patch(api, "shared", mine, {"n": 2})
    assert await device.pull() == []
    assert await Device(api, api.user_token, "shared").pull() == []

    await write(api, "PATCH", "/api/collections/shared", body={"rules": {"list": None}})
    response = await api.request("GET", "/api/sync", auth="user", params={"collections": "shared"})
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_hidden_fields_are_in_no_record_the_caller_may_not_see_them_in(api: Api) -> None:
    await api.create_collection(SHARED)
    await api.create_collection({**NOTES, "rules": {**OPEN, "list": "", "view": "text != null"}})
    shared = await create(api, "shared", {"public": True, "secret": SECRET})
    note = await create(api, "notes", {"text": "t", "secret": SECRET})
    device = Device(api, api.user_token, "shared,notes")
    await device.pull(limit=1)
    await patch(api, "shared", shared, {"n": 1})
    await patch(api, "notes", note, {"n": 1})
    await patch(api, "shared", shared, {"public": False})
    await patch(api, "shared", shared, {"public": True})
    await create(api, "shared", {"public": True, "secret": SECRET})
    await device.pull()
    assert [op for op, _, _ in device.ops()] == [
        *("create", "create", "update", "update", "leave", "enter", "create")
    ]
    assert all("secret" not in change["record"] for change in device.received if change["record"])
    assert not any(SECRET in text for text in device.texts)

    admin = Device(api, api.token, "shared,notes")
    await admin.pull()
    assert admin.view[shared]["secret"] == SECRET and admin.view[note]["secret"] == SECRET


async def test_small_pages_add_up_to_one_big_page(api: Api) -> None:
    await api.create_collection(SHARED)
    await api.create_collection({**NOTES, "rules": {**OPEN, "list": "", "view": "text != 'x'"}})
    made = [await create(api, "shared", {"public": i % 3 != 0}) for i in range(12)]
    made += [await create(api, "notes", {"text": "x" if i % 4 == 0 else "y"}) for i in range(9)]
    cursor = await log_cursor(api)
    for record_id in made[::2]:
        name = "shared" if record_id in made[:12] else "notes"
        await patch(api, name, record_id, {"public": True} if name == "shared" else {"text": "x"})
    for record_id in made[1::5]:
        await delete(api, "shared" if record_id in made[:12] else "notes", record_id)

    async def everything(limit: int, since: str | None) -> Device:
        device = Device(api, api.user_token, "shared,notes", cursor=since)
        await device.pull(limit)
        return device

    for since in (None, cursor):
        whole = await everything(MAX_LIMIT, since)
        assert whole.received and len(whole.texts) == 1
        for limit in (1, 2, 3, 7, 20):
            paged = await everything(limit, since)
            assert paged.received == whole.received, limit
            assert paged.cursor == whole.cursor == await log_cursor(api)
            assert paged.view == whole.view


async def test_the_cursor_moves_past_changes_the_caller_does_not_see(api: Api) -> None:
    await api.create_collection(NOTES)
    ann = await sign_up(api, "ann")
    device = Device(api, api.user_token, "notes")
    await device.pull()
    start = device.cursor
    assert start is not None
    note = await create(api, "notes", {"text": "ann"}, ann)
    for i in range(4):
        await write(api, "PATCH", f"/api/collections/notes/records/{note}", ann, {"n": i})
    first = await device.page(limit=2)
    assert first["changes"] == [] and first["has_more"] is True
    assert first["cursor"] != start
    position = int(first["cursor"].rsplit(".", 1)[1])
    assert position == int(start.rsplit(".", 1)[1]) + 2  # invisible changes, passed over
    await device.pull(limit=2)
    assert device.received == [] and device.cursor == await log_cursor(api)


async def test_resync_required_when_the_log_no_longer_holds_the_cursors_changes(
    posts: Api,
) -> None:
    api = posts
    cursor = await log_cursor(api)
    device = Device(api, api.token, "posts")
    snapshot = (await device.page(limit=1))["cursor"]  # in the middle of the snapshot
    await patch(api, "posts", api.values["a"], {"score": 5})
    await patch(api, "posts", api.values["a"], {"score": 6})
    middle = await log_cursor(api)
    await patch(api, "posts", api.values["a"], {"score": 7})
    head = await log_cursor(api)  # (PostgreSQL prunes only the changes readers can see)
    assert await api.components.storage.prune_changes("2999-01-01T00:00:00.000Z") >= 6
    for since in (cursor, snapshot, middle):
        response = await api.request(
            "GET", "/api/sync", params={"collections": "posts", "since": since}
        )
        assert response.status_code == 410, response.text
        assert response.json()["code"] == "resync_required"
    device = Device(api, api.token, "posts", cursor=head)
    assert await device.pull() == []  # the head itself is still a good cursor
    await patch(api, "posts", api.values["a"], {"score": 8})
    assert device.ops(await device.pull()) == [("update", api.values["a"], 5)]
    fresh = Device(api, api.token, "posts")  # syncing from scratch works again
    await fresh.pull()
    assert len(fresh.view) == 3 and fresh.view[api.values["a"]]["score"] == 8


def _snapshot_cursor(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


def sync_row(
    id: str, status: int, code: str | None, auth: Any = "admin", **params: str
) -> Scenario:
    return Scenario(id, "GET", "/api/sync", status, code, params=params, auth=auth)


BAD_INPUT = [
    sync_row("no collections", 400, "validation_failed"),
    sync_row("empty collections", 400, "validation_failed", collections=""),
    sync_row("empty name", 400, "validation_failed", collections="posts,,"),
    sync_row("unknown collection", 404, "not_found", collections="posts,nope"),
    sync_row("not a name", 404, "not_found", collections="Posts!"),
    sync_row("too many collections", 400, "validation_failed",
             collections=",".join(f"c{i}" for i in range(MAX_COLLECTIONS + 1))),
    *(
        sync_row(f"limit {limit}", 400, "validation_failed", collections="posts", limit=limit)
        for limit in ("0", "1001", "abc", "-1", "1.5", "1_0", "99999999999999999999", "²")
    ),
    *(
        sync_row(f"since {since[:30]}", 400, "invalid_cursor", collections="posts", since=since)
        for since in (
            "abc", "abc.", ".5", "{epoch}.x", "{epoch}.-1", "{epoch}.²", "{epoch}.99999999",
            "{epoch}." + "9" * 20, "x" * 2000, "é", "{epoch}.1.2", "{other_collections}",
            _snapshot_cursor(["not", "a", "cursor"]),
            _snapshot_cursor(["e", 0, "x", 0, None, "extra"]),
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        )
    ),
    sync_row("another epoch", 410, "resync_required", collections="posts",
             since="0123456789abcdef.1"),
    sync_row("a snapshot of another epoch", 410, "resync_required", collections="posts",
             since=_snapshot_cursor(["0123456789abcdef", 0, "x", 0, None])),
    sync_row("bogus token", 401, "unauthorized", "bogus", collections="posts"),
    sync_row("admins-only list, anonymous", 401, "unauthorized", "anonymous",
             collections="locked"),
    sync_row("admins-only list, user", 403, "forbidden", "user", collections="posts,locked"),
    sync_row("admins-only list, admin", 200, None, collections="locked"),
    sync_row("repeated names are one", 200, None, "anonymous", collections="posts,posts",
             limit=""),
]  # fmt: skip


@pytest.mark.parametrize("row", BAD_INPUT, ids=ids(BAD_INPUT))
async def test_bad_input(posts: Api, row: Scenario) -> None:
    api = posts
    await api.create_collection({"name": "locked"})
    log = await api.components.storage.log_state()
    api.values["epoch"] = log.epoch
    api.values["other_collections"] = _snapshot_cursor([log.epoch, 0, "0" * 16, 0, None])
    response = await api.run(row)
    if row.status == 200:
        assert response.json()["has_more"] is False
    if "admins-only" in row.id:  # exactly what listing the records answers
        listed = await api.request("GET", "/api/collections/locked/records", auth=row.auth)
        assert listed.status_code == row.status


async def test_the_users_collection_syncs_under_its_rules(api: Api) -> None:
    device = Device(api, api.user_token, "users")
    changes = await device.pull()
    assert device.ops(changes) == [("create", api.values["user"], 1)]
    assert changes[0]["record"]["email"] == "user@example.com"
    assert api.values["admin"] not in device.texts[0]
