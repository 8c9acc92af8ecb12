"""The data every Roost workload runs on, seeded over the HTTP API like an app would:
collection ``items`` (owner-only rules, an index on ``owner``), USERS users signed up with
``POST /api/auth/signup``, RECORDS records (USERS x 100, record i owned by user i % USERS)
created by the admin with ``POST /api/batch`` and ``owner`` set; and the files the Lua
scripts read (``bench/lua/roost.lua``)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.client import Client

COLLECTION = "items"
USERS = 100
RECORDS = 10_000
BATCH = 100  # the API's most operations per batch
PAGE = 20
SEED_CLIENTS = 4
ADMIN_EMAIL = "bench-admin@example.com"
PASSWORD = "bench-password-not-secret"
"""Every account's password (10+ characters, Roost's policy)."""
RULES = {
    "list": "owner = @auth.id",
    "view": "owner = @auth.id",
    "create": "@auth.id != null",
    "update": "owner = @auth.id",
    "delete": None,
}
DEFINITION: dict[str, Any] = {
    "name": COLLECTION,
    "fields": {"score": {"type": "integer"}, "title": {"type": "string", "max_length": 200}},
    "indexes": [{"fields": ["owner"]}],
    "rules": RULES,
}
RECORDS_PATH = f"/api/collections/{COLLECTION}/records"


@dataclass
class User:
    id: str
    email: str
    token: str


@dataclass
class Dataset:
    """What was seeded, and where the Lua scripts find it (``folder``)."""

    folder: Path
    admin_token: str
    users: list[User] = field(default_factory=list)
    records: list[tuple[int, str]] = field(default_factory=list)
    """(index into ``users`` of the owner, record id) of every seeded record."""
    seconds: dict[str, float] = field(default_factory=dict)

    def write_files(self) -> None:
        """users.txt, records.txt (Lua: 1-based user numbers), ids.txt and owners.txt (the
        keys of the database ceiling)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "users.txt").write_text(
            "".join(f"{u.id} {u.token} {u.email} {PASSWORD}\n" for u in self.users)
        )
        (self.folder / "records.txt").write_text(
            "".join(f"{owner + 1} {record}\n" for owner, record in self.records)
        )
        (self.folder / "ids.txt").write_text("".join(f"{r}\n" for _, r in self.records))
        (self.folder / "owners.txt").write_text("".join(f"{u.id}\n" for u in self.users))

    def write_versions(self, rows: list[tuple[str, str, int]]) -> int:
        """versions.txt ("user id version") of the ``rows`` (owner, id, version) that the
        seeded users own, for the PATCH workload; how many."""
        number = {user.id: i + 1 for i, user in enumerate(self.users)}
        lines = [f"{number[o]} {i} {v}\n" for o, i, v in rows if o in number]
        (self.folder / "versions.txt").write_text("".join(lines))
        return len(lines)


def _sign_in(port: int, email: str) -> str:
    with Client(port) as client:
        status, body = client.call(
            "POST", "/api/auth/login", {"email": email, "password": PASSWORD}
        )
    assert status == 200, (status, body)
    token: str = body["access_token"]
    return token


def seed(port: int, folder: Path) -> Dataset:
    """Seed a fresh Roost on ``port`` whose admin ADMIN_EMAIL exists (``roost admin
    create``); the server must allow USERS sign-ups in a burst (rate limits raised)."""
    t0 = time.monotonic()
    data = Dataset(folder=folder, admin_token=_sign_in(port, ADMIN_EMAIL))
    with Client(port, data.admin_token) as admin:
        status, body = admin.call("POST", "/api/collections", DEFINITION)
    assert status == 201, (status, body)

    def sign_up(i: int) -> User:
        email = f"user{i}@example.com"
        with Client(port) as client:
            status, body = client.call(
                "POST", "/api/auth/signup", {"email": email, "password": PASSWORD}
            )
        assert status == 201, (status, body)
        return User(id=body["user"]["id"], email=email, token=body["access_token"])

    with ThreadPoolExecutor(SEED_CLIENTS) as pool:
        data.users = list(pool.map(sign_up, range(USERS)))
    t1 = time.monotonic()
    data.seconds["signup"] = t1 - t0

    local = threading.local()

    def send(start: int) -> list[tuple[int, str]]:
        if not hasattr(local, "client"):
            local.client = Client(port, data.admin_token)
        numbers = range(start, min(start + BATCH, RECORDS))
        operations = [
            {
                "action": "create",
                "collection": COLLECTION,
                "data": {"owner": data.users[i % USERS].id, "score": i, "title": f"item {i}"},
            }
            for i in numbers
        ]
        status, body = local.client.call("POST", "/api/batch", {"operations": operations})
        ok = status == 200 and all(r["status"] == 201 for r in body["results"])
        assert ok, (status, str(body)[:300])
        return [
            (i % USERS, r["record"]["id"]) for i, r in zip(numbers, body["results"], strict=True)
        ]

    with ThreadPoolExecutor(SEED_CLIENTS) as pool:
        for chunk in pool.map(send, range(0, RECORDS, BATCH)):
            data.records += chunk
    data.seconds["records"] = time.monotonic() - t1
    data.write_files()
    return data


def probe(port: int, data: Dataset) -> None:
    """One request of each workload, checked (also that the rules hold: another user sees
    neither the record nor the page); raises AssertionError with what is wrong."""
    owner, other = data.users[0], data.users[1]
    record = next(r for u, r in data.records if u == 0)
    page = urllib.parse.urlencode({"filter": f'owner = "{owner.id}"', "limit": PAGE})
    with Client(port, owner.token) as client:
        status, body = client.call("GET", f"{RECORDS_PATH}/{record}")
        assert status == 200 and body["owner"] == owner.id, ("read", status, body)
        assert client.last_headers.get("etag") == f'"{body["version"]}"', client.last_headers
        status, body = client.call("GET", f"{RECORDS_PATH}?{page}")
        assert status == 200 and len(body["items"]) == PAGE, ("list", status, body)
        assert {item["owner"] for item in body["items"]} == {owner.id}, ("list", body)
        status, body = client.call("POST", RECORDS_PATH, {"score": 1, "title": "probe"})
        assert status == 201 and body["owner"] == owner.id, ("create", status, body)
        path = f"{RECORDS_PATH}/{body['id']}"
        status, body = client.call("PATCH", path, {"score": 2}, {"If-Match": '"1"'})
        assert status == 200 and body["version"] == 2, ("patch", status, body)
        status, body = client.call("PATCH", path, {"score": 3}, {"If-Match": '"1"'})
        assert status == 412 and body["current"]["version"] == 2, ("stale patch", status, body)
    with Client(port, other.token) as client:
        status, body = client.call("GET", f"{RECORDS_PATH}/{record}")
        assert status == 404, ("view rule", status, body)
        status, body = client.call("GET", f"{RECORDS_PATH}?{page}")
        assert status == 200 and body["items"] == [], ("list rule", status, body)
    assert _sign_in(port, owner.email), "login"
