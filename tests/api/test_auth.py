"""Every ``/api/auth`` flow end to end over HTTP, the unhappy paths included.

Each test's client records every response; at teardown no response may hold a password
hash, a stored token hash, an argon2 string, a password the test sent, or a refresh token
outside the response that issued it.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from hashlib import sha256, sha384
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette

from conftest import TEST_SECRET, insert_admin
from roost.auth.tokens import _signing_key
from roost.components import Components
from roost.http.app import create_app
from roost.query.parser import parse
from roost.query.sql import compile_filter
from roost.settings import Settings

PASSWORD = "a-good-long-password"
OTHER_PASSWORD = "another-long-password"
ISSUING = ("/api/auth/signup", "/api/auth/login", "/api/auth/anonymous", "/api/auth/refresh")
NEVER = ("password_hash", "token_hash", "$argon2id$", PASSWORD, OTHER_PASSWORD)
NOTES: dict[str, Any] = {
    "name": "notes",
    "fields": {"text": {"type": "string"}},
    "rules": {
        "list": "owner = @auth.id",
        "view": "owner = @auth.id",
        "create": "@auth.id != null",
        "update": "owner = @auth.id",
        "delete": "owner = @auth.id",
    },
}


@dataclass
class Http:
    """A client of the app under test that remembers every response it got."""

    client: httpx.AsyncClient
    components: Components
    seen: list[tuple[str, str]] = field(default_factory=list)
    admin_token: str = ""

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def signup(self, email: str = "ann@example.com", **body: Any) -> dict[str, Any]:
        response = await self.call(
            "POST", "/api/auth/signup", json={"email": email, "password": PASSWORD, **body}
        )
        assert response.status_code == 201, response.text
        signed_in: dict[str, Any] = response.json()
        return signed_in

    async def login(
        self, email: str = "ann@example.com", password: str = PASSWORD, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self.call(
            "POST", "/api/auth/login", json={"email": email, "password": password}, **kwargs
        )
        assert response.status_code == 200, response.text
        signed_in: dict[str, Any] = response.json()
        return signed_in

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.call("POST", "/api/auth/refresh", json={"refresh_token": refresh_token})

    async def admin(self) -> str:
        if not self.admin_token:
            self.admin_token = await insert_admin(self.components)
        return self.admin_token

    async def create_collection(self, definition: dict[str, Any]) -> None:
        response = await self.call("POST", "/api/collections", await self.admin(), json=definition)
        assert response.status_code == 201, response.text

    async def create(self, token: str, collection: str, data: dict[str, Any]) -> dict[str, Any]:
        response = await self.call(
            "POST", f"/api/collections/{collection}/records", token, json=data
        )
        assert response.status_code == 201, response.text
        record: dict[str, Any] = response.json()
        return record

    async def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self.components.storage.read() as conn:
            return [dict(row) for row in await conn.fetch_all(query, params)]

    async def write_sql(self, query: str, params: tuple[Any, ...] = ()) -> None:
        async with self.components.storage.write() as conn:
            await conn.execute(query, params)


def check_no_secrets(seen: list[tuple[str, str]]) -> None:
    issued: list[tuple[int, str]] = []
    for index, (path, text) in enumerate(seen):
        for secret in NEVER:
            assert secret not in text, f"{secret!r} in the response to {path}: {text[:300]}"
        if path in ISSUING and text.startswith("{"):
            token = json.loads(text).get("refresh_token")
            if isinstance(token, str):
                issued.append((index, token))
    for index, (path, text) in enumerate(seen):
        for where, token in issued:
            assert where == index or token not in text, f"a refresh token in {path}: {text}"


@pytest.fixture
async def http(app: Starlette, components: Components) -> AsyncIterator[Http]:
    seen: list[tuple[str, str]] = []

    async def remember(response: httpx.Response) -> None:
        await response.aread()
        seen.append((response.request.url.path, response.text))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://roost", event_hooks={"response": [remember]}
    ) as client:
        yield Http(client=client, components=components, seen=seen)
    check_no_secrets(seen)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    return problem


# sign-up


ANN = {"email": "ann@example.com", "password": PASSWORD}
BAD = (400, "validation_failed")
FORBIDDEN = (403, "forbidden")
SIGNUP_REFUSALS: list[tuple[str, dict[str, Any], tuple[int, str]]] = [
    ("not an address", {**ANN, "email": "not-an-email"}, BAD),
    ("empty email", {**ANN, "email": ""}, BAD),
    ("no dot in the domain", {**ANN, "email": "ann@example"}, BAD),
    ("space in the email", {**ANN, "email": "ann @example.com"}, BAD),
    ("email too long", {**ANN, "email": "a" * 250 + "@example.com"}, BAD),
    ("email not a string", {**ANN, "email": 42}, BAD),
    ("email missing", {"password": PASSWORD}, BAD),
    ("password too short", {**ANN, "password": "short"}, BAD),
    ("password too long", {**ANN, "password": "x" * 257}, BAD),
    ("password not a string", {**ANN, "password": 12345678901}, BAD),
    ("password missing", {"email": "ann@example.com"}, BAD),
    ("data not an object", {**ANN, "data": "x"}, BAD),
    ("data with a bad field name", {**ANN, "data": {"bad name": 1}}, BAD),
    ("data sets role", {**ANN, "data": {"role": "admin"}}, FORBIDDEN),
    ("data sets verified", {**ANN, "data": {"verified": True}}, FORBIDDEN),
    ("data sets anonymous", {**ANN, "data": {"anonymous": True}}, FORBIDDEN),
    ("data sets email", {**ANN, "data": {"email": "x@y.z"}}, FORBIDDEN),
    ("data sets owner", {**ANN, "data": {"owner": "x"}}, BAD),
    ("data sets id", {**ANN, "data": {"id": "x"}}, BAD),
    ("data sets version", {**ANN, "data": {"version": 7}}, BAD),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [(body, expected) for _, body, expected in SIGNUP_REFUSALS],
    ids=[name for name, _, _ in SIGNUP_REFUSALS],
)
async def test_signup_refuses(http: Http, body: dict[str, Any], expected: tuple[int, str]) -> None:
    response = await http.call("POST", "/api/auth/signup", json=body)
    assert_problem(response, *expected)
    assert await http.sql("SELECT id FROM r_users") == []
    assert await http.sql("SELECT * FROM _credentials") == []
    assert await http.sql("SELECT * FROM _sessions") == []


async def test_signup_returns_a_session_and_the_user(http: Http) -> None:
    response = await http.call(
        "POST",
        "/api/auth/signup",
        json={"email": "  Ann@Example.COM ", "password": PASSWORD, "data": {"name": "Ann"}},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 40
    user = body["user"]
    assert user["email"] == "ann@example.com"
    assert user["name"] == "Ann"
    assert (user["role"], user["verified"], user["anonymous"]) == ("user", False, False)
    assert user["owner"] == user["id"] and user["version"] == 1
    me = await http.call("GET", "/api/auth/me", body["access_token"])
    assert me.status_code == 200 and me.json() == user
    changes = await http.components.storage.changes_since(0, ["users"], 100)
    assert [(c.record_id, c.op) for c in changes] == [(user["id"], "create")]


@pytest.mark.parametrize("email", ["ann@example.com", "ANN@example.com", " Ann@Example.Com"])
async def test_signup_with_a_taken_email_is_a_conflict(http: Http, email: str) -> None:
    await http.signup("ann@example.com")
    response = await http.call(
        "POST", "/api/auth/signup", json={"email": email, "password": OTHER_PASSWORD}
    )
    assert_problem(response, 409, "conflict")
    assert len(await http.sql("SELECT id FROM r_users")) == 1
    await http.login("ann@example.com", PASSWORD)


# login


async def test_login_wrong_password_and_unknown_email_look_the_same(http: Http) -> None:
    await http.signup()
    wrong = await http.call(
        "POST", "/api/auth/login", json={"email": "ann@example.com", "password": OTHER_PASSWORD}
    )
    unknown = await http.call(
        "POST", "/api/auth/login", json={"email": "bob@example.com", "password": PASSWORD}
    )
    assert_problem(wrong, 401, "unauthorized")
    assert_problem(unknown, 401, "unauthorized")
    assert wrong.json() == unknown.json()
    assert wrong.headers["content-type"] == unknown.headers["content-type"]
    for odd in (
        {},
        {"email": 1, "password": PASSWORD},
        {"email": "ann@example.com", "password": None},
        {"email": "ann@example.com", "password": PASSWORD + "x" * 300},
    ):
        response = await http.call("POST", "/api/auth/login", json=odd)
        assert_problem(response, 401, "unauthorized")
        assert response.json() == wrong.json()
    assert await http.sql("SELECT id FROM _sessions") != []  # the signup's only
    assert len(await http.sql("SELECT id FROM _sessions")) == 1


async def test_login_ignores_email_case_and_spaces(http: Http) -> None:
    user = (await http.signup())["user"]
    signed_in = await http.login("  ANN@example.com ")
    assert signed_in["user"]["id"] == user["id"]
    assert signed_in["refresh_token"]


async def test_login_rehashes_when_the_argon2_cost_changes(http: Http, settings: Settings) -> None:
    await http.signup()
    [before] = await http.sql("SELECT password_hash FROM _credentials")
    assert "m=64,t=1," in before["password_hash"]
    cost = {"password_time_cost": 2, "password_memory_kib": 128}
    stronger = create_app(settings.model_copy(update=cost))
    async with stronger.router.lifespan_context(stronger):
        transport = httpx.ASGITransport(app=stronger)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as client:
            body = {"email": "ann@example.com", "password": PASSWORD}
            response = await client.post("/api/auth/login", json=body)
            assert response.status_code == 200, response.text
            [after] = await http.sql("SELECT password_hash FROM _credentials")
            assert "m=128,t=2," in after["password_hash"]
            assert after["password_hash"] != before["password_hash"]
            again = await client.post("/api/auth/login", json=body)
            assert again.status_code == 200
            [same] = await http.sql("SELECT password_hash FROM _credentials")
            assert same == after  # no rehash when the cost is already right
            wrong = {**body, "password": OTHER_PASSWORD}
            assert (await client.post("/api/auth/login", json=wrong)).status_code == 401
    await http.login()  # the cheap app still verifies the stronger hash


# guests


async def test_guest_upgrade_keeps_the_id_and_the_records(http: Http) -> None:
    await http.create_collection(NOTES)
    response = await http.call("POST", "/api/auth/anonymous", json={"device": "Pixel"})
    assert response.status_code == 201, response.text
    guest = response.json()
    assert guest["user"]["anonymous"] is True and "email" not in guest["user"]
    token = guest["access_token"]
    notes = [await http.create(token, "notes", {"text": f"note {n}"}) for n in range(3)]
    user_id = guest["user"]["id"]
    assert {note["owner"] for note in notes} == {user_id}

    response = await http.call(
        "POST", "/api/auth/upgrade", token, json={"email": "Gus@Example.com", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    upgraded = response.json()
    assert "refresh_token" not in upgraded  # the guest's session goes on
    assert upgraded["user"]["id"] == user_id
    assert upgraded["user"]["email"] == "gus@example.com"
    assert upgraded["user"]["anonymous"] is False
    assert upgraded["user"]["version"] == 2

    signed_in = await http.login("gus@example.com")
    assert signed_in["user"]["id"] == user_id
    listed = await http.call("GET", "/api/collections/notes/records", signed_in["access_token"])
    assert [item["id"] for item in listed.json()["items"]] == [note["id"] for note in notes]
    refreshed = await http.refresh(guest["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["user"]["anonymous"] is False


async def test_upgrade_refusals(http: Http) -> None:
    member = await http.signup("ann@example.com")
    body = {"email": "new@example.com", "password": PASSWORD}
    response = await http.call("POST", "/api/auth/upgrade", member["access_token"], json=body)
    assert_problem(response, 409, "conflict")
    guest = (await http.call("POST", "/api/auth/anonymous", json={})).json()
    taken = {"email": "ANN@example.com", "password": PASSWORD}
    response = await http.call("POST", "/api/auth/upgrade", guest["access_token"], json=taken)
    assert_problem(response, 409, "conflict")
    short = {"email": "gus@example.com", "password": "short"}
    response = await http.call("POST", "/api/auth/upgrade", guest["access_token"], json=short)
    assert_problem(response, 400, "validation_failed")
    response = await http.call("POST", "/api/auth/upgrade", json=body)
    assert_problem(response, 401, "unauthorized")
    me = await http.call("GET", "/api/auth/me", guest["access_token"])
    assert me.json()["anonymous"] is True and me.json()["version"] == 1


# refresh


async def test_refresh_rotates_and_each_token_works_once(http: Http) -> None:
    first = await http.signup()
    response = await http.refresh(first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user"]["id"] == first["user"]["id"]
    me = await http.call("GET", "/api/auth/me", second["access_token"])
    assert me.status_code == 200
    third = await http.refresh(second["refresh_token"])
    assert third.status_code == 200
    assert len(await http.sql("SELECT id FROM _sessions")) == 1


async def test_replay_after_the_grace_window_revokes_the_session(http: Http) -> None:
    first = await http.signup()
    other = await http.login()  # another device: untouched
    second = (await http.refresh(first["refresh_token"])).json()
    newest = (await http.refresh(second["refresh_token"])).json()
    await http.write_sql(
        "UPDATE _refresh_tokens SET used = '2000-01-01T00:00:00.000Z' WHERE used IS NOT NULL"
    )
    replay = await http.refresh(first["refresh_token"])
    assert_problem(replay, 401, "unauthorized")
    assert_problem(await http.refresh(newest["refresh_token"]), 401, "unauthorized")
    assert_problem(await http.refresh(second["refresh_token"]), 401, "unauthorized")
    sessions = await http.call("GET", "/api/auth/sessions", other["access_token"])
    assert len(sessions.json()["items"]) == 1
    assert (await http.refresh(other["refresh_token"])).status_code == 200


async def test_replay_with_no_grace_revokes_at_once(
    http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("roost.auth.sessions.REUSE_GRACE_SECONDS", -1)
    first = await http.signup()
    second = (await http.refresh(first["refresh_token"])).json()
    assert_problem(await http.refresh(first["refresh_token"]), 401, "unauthorized")
    assert_problem(await http.refresh(second["refresh_token"]), 401, "unauthorized")


async def test_reuse_within_the_grace_window_is_a_lost_answer(http: Http) -> None:
    first = await http.signup()
    lost = await http.refresh(first["refresh_token"])  # the answer never reached the app
    assert lost.status_code == 200
    retry = await http.refresh(first["refresh_token"])
    assert retry.status_code == 200, retry.text
    retried = retry.json()
    assert retried["refresh_token"] != lost.json()["refresh_token"]
    following = await http.refresh(retried["refresh_token"])
    assert following.status_code == 200, following.text
    # A third use of the first token, after its successor's successor was used: theft.
    assert_problem(await http.refresh(first["refresh_token"]), 401, "unauthorized")
    assert_problem(await http.refresh(following.json()["refresh_token"]), 401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"refresh_token": ""},
        {"refresh_token": 5},
        {"refresh_token": "x" * 500},
        {"refresh_token": "nope"},
    ],
    ids=["missing", "empty", "number", "huge", "unknown"],
)
async def test_refresh_refuses_what_is_not_a_live_token(http: Http, body: dict[str, Any]) -> None:
    await http.signup()
    assert_problem(await http.call("POST", "/api/auth/refresh", json=body), 401, "unauthorized")


async def test_refresh_of_an_expired_session_fails(http: Http) -> None:
    first = await http.signup()
    await http.write_sql("UPDATE _sessions SET expires = '2000-01-01T00:00:00.000Z'")
    assert_problem(await http.refresh(first["refresh_token"]), 401, "unauthorized")


# logout and sessions


async def test_logout_revokes_only_this_session(http: Http) -> None:
    phone = await http.signup()
    laptop = await http.login()
    response = await http.call("POST", "/api/auth/logout", phone["access_token"])
    assert response.status_code == 204
    assert_problem(await http.refresh(phone["refresh_token"]), 401, "unauthorized")
    assert (await http.refresh(laptop["refresh_token"])).status_code == 200
    assert_problem(await http.call("POST", "/api/auth/logout"), 401, "unauthorized")


async def test_sessions_list_names_devices_and_the_current_one(http: Http) -> None:
    phone = await http.signup(device="Ann's iPhone")
    laptop_response = await http.call(
        "POST",
        "/api/auth/login",
        json={"email": "ann@example.com", "password": PASSWORD, "device": "Laptop"},
        headers={"User-Agent": "RoostApp/1.0 macOS"},
    )
    laptop = laptop_response.json()
    response = await http.call("GET", "/api/auth/sessions", laptop["access_token"])
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["device"] for item in items] == ["Laptop", "Ann's iPhone"]
    assert [item["current"] for item in items] == [True, False]
    assert items[0]["user_agent"] == "RoostApp/1.0 macOS"
    for item in items:
        assert set(item) >= {"id", "device", "user_agent", "created", "last_used", "expires"}
    before = items[1]["last_used"]
    time.sleep(0.002)
    assert (await http.refresh(phone["refresh_token"])).status_code == 200
    items = (await http.call("GET", "/api/auth/sessions", laptop["access_token"])).json()["items"]
    assert items[0]["device"] == "Ann's iPhone" and items[0]["last_used"] > before
    assert_problem(await http.call("GET", "/api/auth/sessions"), 401, "unauthorized")


async def test_revoke_one_session(http: Http) -> None:
    phone = await http.signup()
    laptop = await http.login()
    bob = await http.signup("bob@example.com")
    sessions = (await http.call("GET", "/api/auth/sessions", laptop["access_token"])).json()
    [phone_session] = [s for s in sessions["items"] if not s["current"]]
    bob_sessions = (await http.call("GET", "/api/auth/sessions", bob["access_token"])).json()
    [bob_session] = bob_sessions["items"]

    path = f"/api/auth/sessions/{bob_session['id']}"
    assert_problem(await http.call("DELETE", path, laptop["access_token"]), 404, "not_found")
    assert (await http.refresh(bob["refresh_token"])).status_code == 200
    path = f"/api/auth/sessions/{phone_session['id']}"
    assert (await http.call("DELETE", path, laptop["access_token"])).status_code == 204
    assert_problem(await http.call("DELETE", path, laptop["access_token"]), 404, "not_found")
    assert_problem(await http.refresh(phone["refresh_token"]), 401, "unauthorized")
    left = (await http.call("GET", "/api/auth/sessions", laptop["access_token"])).json()
    assert [s["current"] for s in left["items"]] == [True]


async def test_revoke_all_other_sessions(http: Http) -> None:
    first = await http.signup()
    second = await http.login()
    here = await http.login()
    bob = await http.signup("bob@example.com")
    response = await http.call("DELETE", "/api/auth/sessions", here["access_token"])
    assert response.status_code == 200 and response.json() == {"revoked": 2}
    for gone in (first, second):
        assert_problem(await http.refresh(gone["refresh_token"]), 401, "unauthorized")
    assert (await http.refresh(here["refresh_token"])).status_code == 200
    assert (await http.refresh(bob["refresh_token"])).status_code == 200


# password change


async def test_change_password(http: Http) -> None:
    other = await http.signup()
    here = await http.login()
    path = "/api/auth/password/change"
    wrong = {"current_password": OTHER_PASSWORD, "new_password": OTHER_PASSWORD}
    assert_problem(
        await http.call("POST", path, here["access_token"], json=wrong), 401, "unauthorized"
    )
    missing = {"new_password": OTHER_PASSWORD}
    assert_problem(
        await http.call("POST", path, here["access_token"], json=missing), 401, "unauthorized"
    )
    short = {"current_password": PASSWORD, "new_password": "short"}
    assert_problem(
        await http.call("POST", path, here["access_token"], json=short), 400, "validation_failed"
    )
    good = {"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
    assert_problem(await http.call("POST", path, json=good), 401, "unauthorized")
    assert (await http.refresh(other["refresh_token"])).status_code == 200  # nothing changed yet
    other = await http.login()

    assert (await http.call("POST", path, here["access_token"], json=good)).status_code == 204
    assert_problem(await http.refresh(other["refresh_token"]), 401, "unauthorized")
    assert (await http.refresh(here["refresh_token"])).status_code == 200
    old = {"email": "ann@example.com", "password": PASSWORD}
    assert_problem(await http.call("POST", "/api/auth/login", json=old), 401, "unauthorized")
    await http.login(password=OTHER_PASSWORD)
    sessions = await http.sql("SELECT id FROM _sessions WHERE revoked IS NULL")
    assert len(sessions) == 2  # this one and the new login


# the account


async def test_me_get_and_patch(http: Http) -> None:
    ann = await http.signup(data={"name": "Ann"})
    token = ann["access_token"]
    me = (await http.call("GET", "/api/auth/me", token)).json()
    assert me["email"] == "ann@example.com" and me["name"] == "Ann"
    response = await http.call("PATCH", "/api/auth/me", token, json={"bio": "hi", "name": "Annie"})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched == {
        **me,
        "bio": "hi",
        "name": "Annie",
        "version": 2,
        "updated": patched["updated"],
    }
    response = await http.call("PATCH", "/api/auth/me", token, json={"bio": None})
    assert "bio" not in response.json() and response.json()["version"] == 3
    for refused, status in (
        ({"role": "admin"}, 403),
        ({"email": "x@example.com"}, 403),
        ({"verified": True}, 403),
        ({"anonymous": True}, 403),
        ({"owner": "someone-else"}, 400),
        ({"id": "0190c3d8-0000-7000-8000-000000000000"}, 400),
        ({"version": 9}, 400),
        ({"bad name": 1}, 400),
    ):
        response = await http.call("PATCH", "/api/auth/me", token, json=refused)
        assert response.status_code == status, (refused, response.text)
    after = (await http.call("GET", "/api/auth/me", token)).json()
    assert after["version"] == 3 and after["owner"] == after["id"] and after["role"] == "user"
    assert_problem(await http.call("GET", "/api/auth/me"), 401, "unauthorized")
    assert_problem(await http.call("PATCH", "/api/auth/me", json={}), 401, "unauthorized")


async def test_delete_me_removes_the_user_sessions_and_records(http: Http) -> None:
    await http.create_collection(NOTES)
    await http.create_collection({**NOTES, "name": "photos"})
    ann = await http.signup()
    ann_laptop = await http.login()
    bob = await http.signup("bob@example.com")
    ann_id, bob_id = ann["user"]["id"], bob["user"]["id"]
    ann_records = [
        ("notes", (await http.create(ann["access_token"], "notes", {"text": "a1"}))["id"]),
        ("notes", (await http.create(ann["access_token"], "notes", {"text": "a2"}))["id"]),
        ("photos", (await http.create(ann["access_token"], "photos", {"text": "p"}))["id"]),
    ]
    bob_note = await http.create(bob["access_token"], "notes", {"text": "b"})
    before = await http.components.storage.changes_since(0, None, 10_000)

    response = await http.call("DELETE", "/api/auth/me", ann["access_token"])
    assert response.status_code == 204, response.text

    users = await http.sql("SELECT id FROM r_users WHERE id != ?", (await admin_id(http),))
    assert [r["id"] for r in users] == [bob_id]
    assert [r["id"] for r in await http.sql("SELECT id FROM r_notes")] == [bob_note["id"]]
    assert await http.sql("SELECT id FROM r_photos") == []
    for table in ("_sessions", "_credentials"):
        assert await http.sql(f"SELECT * FROM {table} WHERE user_id = ?", (ann_id,)) == []
    orphans = await http.sql(
        "SELECT t.session_id FROM _refresh_tokens t LEFT JOIN _sessions s"
        " ON s.id = t.session_id WHERE s.id IS NULL"
    )
    assert orphans == []
    after = await http.components.storage.changes_since(before[-1].position, None, 10_000)
    assert sorted((c.collection, c.record_id, c.op) for c in after) == sorted(
        [(name, record_id, "delete") for name, record_id in ann_records]
        + [("users", ann_id, "delete")]
    )
    assert all(c.owner == ann_id for c in after)

    for token in (ann["access_token"], ann_laptop["access_token"]):
        assert_problem(await http.call("GET", "/api/auth/me", token), 401, "unauthorized")
    for refresh_token in (ann["refresh_token"], ann_laptop["refresh_token"]):
        assert_problem(await http.refresh(refresh_token), 401, "unauthorized")
    body = {"email": "ann@example.com", "password": PASSWORD}
    assert_problem(await http.call("POST", "/api/auth/login", json=body), 401, "unauthorized")
    assert (await http.call("GET", "/api/auth/me", bob["access_token"])).status_code == 200
    again = await http.signup()  # the address is free again, as a new account
    assert again["user"]["id"] != ann_id


async def admin_id(http: Http) -> str:
    where, params = compile_filter(parse("role = 'admin'"), http.components.storage.dialect, {})
    [row] = await http.sql(f"SELECT id FROM r_users WHERE {where}", tuple(params))
    return str(row["id"])


# access tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = orjson.loads(_unb64(token.split(".")[1]))
    return claims


def _signed(claims: dict[str, Any], **header: Any) -> str:
    kid, key = _signing_key(TEST_SECRET)
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid, **header})


def _payload_changed(token: str) -> str:
    header, _, signature = token.split(".")
    claims = {**_claims(token), "role": "admin"}
    return f"{header}.{_b64(orjson.dumps(claims))}.{signature}"


def _alg_none(token: str) -> str:
    kid, _ = _signing_key(TEST_SECRET)
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT", "kid": kid}))
    return f"{header}.{_b64(orjson.dumps({**_claims(token), 'role': 'admin'}))}."


def _alg_none_keeping_signature(token: str) -> str:
    kid, _ = _signing_key(TEST_SECRET)
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT", "kid": kid}))
    return f"{header}.{token.split('.', 1)[1]}"


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_PUBLIC = _RSA.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _rs256(token: str) -> str:
    kid, _ = _signing_key(TEST_SECRET)
    return jwt.encode(_claims(token), _RSA, algorithm="RS256", headers={"kid": kid})


def _hs256_keyed_with_a_public_key(token: str) -> str:
    kid, _ = _signing_key(TEST_SECRET)
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    return _raw(header, orjson.dumps(_claims(token)), _RSA_PUBLIC)


def _raw(header: dict[str, Any], payload: bytes, key: bytes, digest: Any = sha256) -> str:
    """A JWT signed by hand, so that headers and algorithms PyJWT refuses can be made."""
    head = _b64(orjson.dumps(header))
    body = _b64(payload)
    signature = hmac.new(key, f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _hs384(token: str) -> str:
    kid, key = _signing_key(TEST_SECRET)
    header = {"alg": "HS384", "typ": "JWT", "kid": kid}
    return _raw(header, orjson.dumps(_claims(token)), key, sha384)


def _other_secret(token: str) -> str:
    kid, _ = _signing_key(TEST_SECRET)
    _, key = _signing_key("another-secret-key-that-is-long-enough-0123")
    return jwt.encode(_claims(token), key, algorithm="HS256", headers={"kid": kid})


def _without(name: str) -> Callable[[str], str]:
    def build(token: str) -> str:
        claims = _claims(token)
        del claims[name]
        return _signed(claims)

    return build


def _with(**changes: Any) -> Callable[[str], str]:
    def build(token: str) -> str:
        return _signed({**_claims(token), **changes})

    return build


TAMPERED: list[tuple[str, Callable[[str], str]]] = [
    ("payload changed", _payload_changed),
    ("alg none", _alg_none),
    ("alg none, old signature", _alg_none_keeping_signature),
    ("RS256 with our kid", _rs256),
    ("HS256 keyed with an RSA public key", _hs256_keyed_with_a_public_key),
    ("HS384", _hs384),
    ("another secret", _other_secret),
    ("wrong kid", lambda t: _signed_raw(orjson.dumps(_claims(t)), kid="0" * 16)),
    ("no kid", lambda t: _signed_raw(orjson.dumps(_claims(t)), kid=None)),
    ("kid of a previous key we never had", lambda t: _signed_raw(orjson.dumps(_claims(t)), kid="")),
    ("kid not a string", lambda t: _signed_raw(orjson.dumps(_claims(t)), kid=7)),
    ("kid a list", lambda t: _signed_raw(orjson.dumps(_claims(t)), kid=[1])),
    ("expired", _with(iat=int(time.time()) - 3600, exp=int(time.time()) - 60)),
    ("wrong audience", _with(aud="someone-else")),
    ("wrong issuer", _with(iss="https://evil.example")),
    ("no exp", _without("exp")),
    ("no sub", _without("sub")),
    ("no sid", _without("sid")),
    ("no aud", _without("aud")),
    ("garbage", lambda t: "garbage"),
    ("three garbage parts", lambda t: "a.b.c"),
    ("too long", lambda t: t + "A" * 5000),
    ("truncated", lambda t: t[:-3]),
    ("payload not an object", lambda t: _signed_raw(b"[1, 2]")),
]


def _signed_raw(payload: bytes, **header: Any) -> str:
    kid, key = _signing_key(TEST_SECRET)
    return _raw({"alg": "HS256", "typ": "JWT", "kid": kid, **header}, payload, key)


async def test_a_token_signed_our_way_works(http: Http) -> None:
    """The control for the table below: the test's own signing is right."""
    ann = await http.signup()
    forged = _signed(_claims(ann["access_token"]))
    assert (await http.call("GET", "/api/auth/me", forged)).status_code == 200


@pytest.mark.parametrize(("name", "tamper"), TAMPERED, ids=[name for name, _ in TAMPERED])
async def test_tampered_access_tokens_are_refused(
    http: Http, name: str, tamper: Callable[[str], str]
) -> None:
    await http.create_collection(NOTES)
    ann = await http.signup()
    token = tamper(ann["access_token"])
    for method, path in (
        ("GET", "/api/auth/me"),
        ("GET", "/api/auth/sessions"),
        ("GET", "/api/collections/notes/records"),
        ("GET", "/api/collections"),
    ):
        response = await http.call(method, path, token)
        assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "header", ["Basic abc", "Bearer", "Bearer ", "bearer", "Token abc"], ids=repr
)
async def test_malformed_authorization_headers(http: Http, header: str) -> None:
    response = await http.call("GET", "/api/auth/me", headers={"Authorization": header})
    assert_problem(response, 401, "unauthorized")
