"""Offline sync pages through a change log that grows under it and never skips or repeats.

Concurrent writers make 10,000 changes (creates, updates that move records in and out of
a reader's view, deletes) through the Records service; on PostgreSQL some hold their
transactions open for a while, so transactions commit out of order. Meanwhile readers
page through ``GET /api/sync`` with a small limit until they have caught up after the
writers stop:

- readers that follow the log from a cursor taken before the writes receive exactly the
  change log after it, each change once, in order (an admin: every change as it is; a user:
  each change as the ``public = true || owner = @auth.id`` rule makes it, with tombstones
  for deletes and for records that stopped being public);
- readers that start from scratch while the writes go on (a snapshot, then the log) end
  with exactly the collection's final contents, as they may see them.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import TEST_DEVICE, make_settings
from roost.auth.principal import Principal
from roost.components import Components
from roost.ids import new_id
from roost.records.service import COLUMNS, Operation, to_public
from roost.settings import Settings
from roost.storage.base import Change

pytestmark = pytest.mark.slow

CHANGES = 10_000
WRITERS = 8
SEED = 300
"""Records made before the readers start."""
PAGE = 97
HOLD_EVERY = 20
"""On PostgreSQL, one write in this many keeps its transaction open a few milliseconds."""
DEADLINE_SECONDS = 120.0
ITEMS = {
    "name": "items",
    "fields": {"public": {"type": "boolean"}, "n": {"type": "integer"}},
    "rules": {"list": "public = true || owner = @auth.id",
              "view": "public = true || owner = @auth.id",
              "create": "", "update": "", "delete": ""},
}  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url, postgres_pool_max=WRITERS + 10)


@dataclass
class SyncingReader:
    """A client paging through ``/api/sync`` and applying what it gets by id."""

    client: httpx.AsyncClient
    token: str
    cursor: str | None = None
    view: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[tuple[str, str, int]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    """The position of each log cursor received (snapshot cursors are not positions)."""
    pages: int = 0
    pages_while_writing: int = 0

    async def page(self) -> bool:
        """Read one page; True when it was full (``has_more``)."""
        params = {"collections": "items", "limit": str(PAGE)}
        if self.cursor is not None:
            params["since"] = self.cursor
        response = await self.client.get(
            "/api/sync", params=params, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        for change in body["changes"]:
            self.received.append((change["op"], change["id"], change["version"]))
            if change["op"] in ("delete", "leave"):
                assert change["record"] is None
                self.view.pop(change["id"], None)
            else:
                assert change["record"]["version"] == change["version"]
                self.view[change["id"]] = change["record"]
        self.cursor = body["cursor"]
        if "." in self.cursor:
            self.positions.append(int(self.cursor.rsplit(".", 1)[1]))
        self.pages += 1
        return bool(body["has_more"])

    async def follow(self, writing: asyncio.Event) -> None:
        """Page while the writers run, then until caught up."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            was_writing = writing.is_set()  # before the request: its page saw every write
            self.pages_while_writing += was_writing
            if not await self.page():
                if not was_writing:
                    return
                await asyncio.sleep(0.005)
            else:
                await asyncio.sleep(0)  # let the writers in between full pages
        raise AssertionError("the reader did not catch up in time")


class Writers:
    """``WRITERS`` tasks making ``CHANGES`` changes between them, each on its own records."""

    def __init__(self, components: Components, hold: bool) -> None:
        self.components = components
        self.hold = hold
        self.made = 0
        self.target = 0
        self.rng = random.Random(20261129)

    async def seed(self, count: int) -> None:
        principal = Principal(id=new_id(), role="user")
        for i in range(count):
            await self._write(Operation("create", "items", data={"public": i % 2 == 0}), principal)

    async def run(self) -> None:
        self.target = self.made + CHANGES
        await asyncio.gather(*(self._writer(index) for index in range(WRITERS)))

    async def _writer(self, index: int) -> None:
        rng = random.Random(index)
        principal = Principal(id=new_id(), role="user")
        own: list[str] = []
        while self.made < self.target:
            roll = rng.random()
            if not own or roll < 0.3:
                data = {"public": rng.random() < 0.5, "n": 0}
                outcome = await self._write(Operation("create", "items", data=data), principal)
                assert outcome is not None
                own.append(outcome["id"])
            elif roll < 0.85:
                record_id = rng.choice(own)
                data = {"public": rng.random() < 0.5, "n": rng.randrange(1000)}
                await self._write(Operation("update", "items", record_id, data), principal)
            else:
                record_id = own.pop(rng.randrange(len(own)))
                await self._write(Operation("delete", "items", record_id), principal)

    async def _write(self, operation: Operation, principal: Principal) -> dict[str, Any] | None:
        self.made += 1
        if not (self.hold and self.made % HOLD_EVERY == 0):
            [outcome] = await self.components.records.write([operation], principal)
        else:
            async with self.components.storage.write() as conn:  # commits after later ones
                outcome = await self.components.records.apply(conn, operation, principal)
                await asyncio.sleep(self.rng.uniform(0.001, 0.03))
        body: dict[str, Any] | None = outcome.body
        return body


def sees(reader_id: str, record: str | None) -> bool:
    """The rule, evaluated independently: public, or the reader's own."""
    if record is None:
        return False
    state = orjson.loads(record)
    return state.get("public") is True or state["owner"] == reader_id


def expected_ops(changes: list[Change], reader_id: str) -> list[tuple[str, str, int]]:
    """What each change is to the reader (create, update, delete, enter, leave, or nothing)."""
    found = []
    for change in changes:
        now, then = sees(reader_id, change.record), sees(reader_id, change.before)
        if now:
            op = "update" if then else ("create" if change.op == "create" else "enter")
        elif then:
            op = "delete" if change.op == "delete" else "leave"
        else:
            continue
        found.append((op, change.record_id, change.version))
    return found


async def test_sync_pages_never_skip_or_repeat_under_concurrent_writes(
    admin: httpx.AsyncClient, components: Components, database_url: str
) -> None:
    token = str(admin.headers.pop("Authorization")).removeprefix("Bearer ")
    created = await admin.post("/api/collections", json=ITEMS, headers=_bearer(token))
    assert created.status_code == 201, created.text
    accounts = components.accounts
    user = await accounts.signup("reader@example.com", "a-long-password", TEST_DEVICE, {})
    user_id = user.user["id"]
    writers = Writers(components, hold=database_url.startswith("postgres"))
    await writers.seed(SEED)

    writing = asyncio.Event()
    followers = [SyncingReader(admin, token), SyncingReader(admin, user.access_token)]
    for reader in followers:  # a first sync, before the writes: the snapshot of the seed
        await reader.follow(writing)
        reader.received.clear()
        reader.positions.clear()
    head = (await components.storage.log_state()).head
    assert all(
        reader.cursor is not None and reader.cursor.endswith(f".{head}") for reader in followers
    )
    late = [SyncingReader(admin, token), SyncingReader(admin, user.access_token)]
    writing.set()

    async def write_all() -> None:
        try:
            await writers.run()
        finally:
            writing.clear()

    async def start_late(reader: SyncingReader) -> None:
        while writers.made < SEED + CHANGES // 3:
            await asyncio.sleep(0.01)
        await reader.follow(writing)

    await asyncio.gather(
        write_all(),
        *(reader.follow(writing) for reader in followers),
        *(start_late(reader) for reader in late),
    )
    changes = await components.storage.changes_since(head, ["items"], CHANGES * 2)
    assert len(changes) == writers.made - SEED >= CHANGES

    # followers: the log after their cursor, each change once and in order
    admin_follower, user_follower = followers
    assert admin_follower.received == [(c.op, c.record_id, c.version) for c in changes]
    assert user_follower.received == expected_ops(changes, user_id)
    for reader in followers:
        assert reader.positions == sorted(reader.positions)
        assert reader.positions[-1] == changes[-1].position
    for reader in (*followers, *late):
        assert reader.pages_while_writing > 20, "the readers paged while the writers wrote"
    user_ops = {op for op, _, _ in user_follower.received}
    assert {"create", "update", "delete", "enter", "leave"} <= user_ops

    # everyone: the collection's final contents, as they may see them
    async with components.storage.read() as conn:
        rows = await conn.fetch_all(f'SELECT {COLUMNS} FROM "r_items"')
    final = {row["id"]: to_public(row) for row in rows}
    visible = {key: record for key, record in final.items() if record["public"] is True}
    for reader in (*followers, *late):
        assert reader.positions[-1] == changes[-1].position
    assert late[0].received[0][0] == late[1].received[0][0] == "create"  # a snapshot first
    assert admin_follower.view == late[0].view == final
    assert user_follower.view == late[1].view == visible


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
