"""On PostgreSQL a cursor never skips a change, even when transactions commit out of order.

Concurrent writers hold their transactions open for random times, so transactions that
began (and appended changes) first often commit last, while a reader follows the change
log with a cursor the whole time. At the end the reader has seen every committed change
exactly once, in increasing positions, and each transaction's changes in its own order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import make_settings
from roost.storage.base import Change, Storage, open_storage, table_name

NOW = "2026-01-01T00:00:00.000Z"
WRITERS = 40
CHANGES_PER_WRITER = 3
READ_LIMIT = 7
DEADLINE_SECONDS = 30.0


@pytest.fixture
async def storage(postgres_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    settings = make_settings(
        tmp_path, database_url=postgres_url, postgres_pool_min=2, postgres_pool_max=WRITERS + 5
    )
    backend = open_storage(settings)
    await backend.open()
    async with backend.write() as conn:
        await backend.define_collection(conn, "posts", ())
    try:
        yield backend
    finally:
        await backend.aclose()


@dataclass
class Reader:
    """Follows the change log from position 0, ``READ_LIMIT`` changes a call."""

    storage: Storage
    cursor: int = 0
    seen: list[Change] = field(default_factory=list)

    async def step(self) -> int:
        changes = await self.storage.changes_since(self.cursor, None, READ_LIMIT)
        if changes:
            self.seen.extend(changes)
            self.cursor = changes[-1].position
        return len(changes)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await self.step() == 0:
                await asyncio.sleep(0.002)

    async def drain(self, expected: int) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(self.seen) < expected and time.monotonic() < deadline:
            if await self.step() == 0:
                await asyncio.sleep(0.01)
        await self.step()  # nothing more may come


async def write(storage: Storage, writer: int, hold: float) -> tuple[int, float]:
    """One transaction of ``CHANGES_PER_WRITER`` changes, held open ``hold`` seconds after
    its first change; returns its transaction id and when it committed."""
    async with storage.write() as conn:
        row = await conn.fetch_one("SELECT pg_current_xact_id()::text AS xid")
        assert row is not None
        for step in range(CHANGES_PER_WRITER):
            record_id = f"w{writer}-{step}"
            await conn.execute(
                f"INSERT INTO {table_name('posts')} (id, owner, created, updated, version, data)"
                " VALUES (?, NULL, ?, ?, 1, '{}')",
                (record_id, NOW, NOW),
            )
            await storage.append_change(conn, "posts", record_id, "create", 1, None, NOW)
            if step == 0:
                await asyncio.sleep(hold)
    return int(row["xid"]), time.monotonic()


def check(seen: list[Change], expected: set[str]) -> None:
    ids = [change.record_id for change in seen]
    assert len(ids) == len(set(ids)), "a change was seen twice"
    assert set(ids) == expected, f"never seen: {sorted(expected - set(ids))[:10]}"
    positions = [change.position for change in seen]
    assert all(a < b for a, b in zip(positions, positions[1:], strict=False))
    position_of = {change.record_id: change.position for change in seen}
    for writer in {record_id.split("-")[0] for record_id in expected}:
        own = [position_of[f"{writer}-{step}"] for step in range(CHANGES_PER_WRITER)]
        assert own == sorted(own), "a transaction's changes are out of order"


async def test_an_old_transaction_committing_last_is_not_skipped(storage: Storage) -> None:
    reader = Reader(storage)
    early_started = asyncio.Event()
    release_early = asyncio.Event()

    async def early() -> None:
        async with storage.write() as conn:
            await conn.execute(
                "INSERT INTO r_posts (id, created, updated, version, data)"
                " VALUES ('early', ?, ?, 1, '{}')",
                (NOW, NOW),
            )
            await storage.append_change(conn, "posts", "early", "create", 1, None, NOW)
            early_started.set()
            await release_early.wait()

    task = asyncio.create_task(early())
    try:
        await early_started.wait()
        async with storage.write() as conn:  # a later transaction commits first
            await conn.execute(
                "INSERT INTO r_posts (id, created, updated, version, data)"
                " VALUES ('late', ?, ?, 1, '{}')",
                (NOW, NOW),
            )
            await storage.append_change(conn, "posts", "late", "create", 1, None, NOW)
        await reader.step()
        assert reader.seen == []  # held back behind the open older transaction, not lost
    finally:
        release_early.set()
        await task
    await reader.drain(2)
    assert [change.record_id for change in reader.seen] == ["early", "late"]
    assert reader.seen[0].position < reader.seen[1].position


async def test_a_cursor_never_skips_under_concurrent_out_of_order_commits(
    storage: Storage,
) -> None:
    rng = random.Random(20260101)
    reader = Reader(storage)
    stop = asyncio.Event()
    follower = asyncio.create_task(reader.follow(stop))

    async def writer(index: int) -> tuple[int, float]:
        await asyncio.sleep(rng.uniform(0, 0.3))  # staggered starts
        hold = rng.choice([0.0, 0.0, rng.uniform(0, 0.05), rng.uniform(0.2, 0.6)])
        return await write(storage, index, hold)

    results = await asyncio.gather(*(writer(index) for index in range(WRITERS)))
    stop.set()
    await follower
    expected = {f"w{w}-{s}" for w in range(WRITERS) for s in range(CHANGES_PER_WRITER)}
    await reader.drain(len(expected))
    check(reader.seen, expected)

    # The run did exercise out-of-order commits: some transaction with a larger id
    # committed before one with a smaller id.
    by_commit = [xid for xid, _ in sorted(results, key=lambda result: result[1])]
    assert by_commit != sorted(by_commit)
    # Many reads happened while writers were still running.
    assert reader.cursor > 0


async def test_failed_transactions_leave_no_gap_a_reader_waits_on(storage: Storage) -> None:
    reader = Reader(storage)
    with pytest.raises(RuntimeError):
        async with storage.write() as conn:
            await storage.append_change(conn, "posts", "rolled-back", "create", 1, None, NOW)
            raise RuntimeError("boom")
    await write(storage, 0, 0.0)
    await reader.drain(CHANGES_PER_WRITER)
    check(reader.seen, {f"w0-{step}" for step in range(CHANGES_PER_WRITER)})
