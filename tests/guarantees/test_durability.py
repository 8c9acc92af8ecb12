"""DESIGN §6: an acknowledged write is durable (survives killing the process) and appears in
the change log exactly once.

A real ``roost serve`` takes creates, batches, updates and deletes from many concurrent
clients over HTTP; the whole process group is SIGKILLed while requests are in flight; the
server restarts on the same data folder. Every write that was acknowledged (201/200/204)
must be there, at its version, and logged exactly once. A write that was in flight at the
kill may or may not have happened, but never half (a batch is all or nothing), and nothing
that no client sent appears.
"""

from __future__ import annotations

import asyncio
import random
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx
import pytest

from guarantees.live import admin_token, create_collection, read_changes, restart
from roost.ids import new_id

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.slow

COLLECTION = "notes"
WRITERS = 16
KILL_AFTER_ACKS = 200  # acknowledged writes before the kill; writes keep streaming past it
LIVE_PER_WRITER = 6  # a writer creates until it holds this many live records
OK = {201, 200, 204}

Op = Literal["create", "update", "delete"]


@dataclass
class Write:
    """One write to one record: what the server's change log should show for it."""

    op: Op
    version: int
    data: dict[str, Any] | None  # the record's client fields after the write; None = deleted


@dataclass
class Tracked:
    """What the client knows about one record."""

    id: str
    acked: list[Write] = field(default_factory=list)
    pending: Write | None = None  # sent, no answer (in flight at the kill)
    batch: int | None = None  # the pending batch's number, when its create was batched

    @property
    def current(self) -> Write | None:
        return self.acked[-1] if self.acked else None

    def ack(self) -> None:
        """The pending write was acknowledged."""
        assert self.pending is not None
        self.acked.append(self.pending)
        self.pending = None


@dataclass
class Run:
    records: dict[str, Tracked] = field(default_factory=dict)
    acks: int = 0
    in_flight: int = 0
    in_flight_at_kill: int = -1
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    unexpected: list[str] = field(default_factory=list)


async def _send(
    http: httpx.AsyncClient, run: Run, method: str, path: str, **kwargs: Any
) -> httpx.Response | None:
    """The response, or None when the connection died (the write's outcome is unknown)."""
    run.in_flight += 1
    try:
        response = await http.request(method, path, **kwargs)
    except httpx.TransportError:
        if not run.killed.is_set():
            raise
        return None
    finally:
        run.in_flight -= 1
    if response.status_code not in OK:
        run.unexpected.append(f"{method} {path} → {response.status_code} {response.text[:300]}")
    return response


async def _writer(http: httpx.AsyncClient, run: Run, number: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + number)
    mine: list[Tracked] = []
    step = 0
    path = f"/api/collections/{COLLECTION}/records"
    while True:
        step += 1
        live = [t for t in mine if t.current is not None and t.current.data is not None]
        if len(live) < LIVE_PER_WRITER and step % 5 == 0:
            # three creates in one atomic batch
            batch = [Tracked(new_id()) for _ in range(3)]
            datas = [{"writer": number, "step": step, "n": i} for i in range(3)]
            for tracked, data in zip(batch, datas, strict=True):
                tracked.pending = Write("create", 1, data)
                tracked.batch = step * 100 + number
                run.records[tracked.id] = tracked
            mine.extend(batch)
            ops = [
                {"action": "create", "collection": COLLECTION, "id": t.id, "data": d}
                for t, d in zip(batch, datas, strict=True)
            ]
            response = await _send(http, run, "POST", "/api/batch", json={"operations": ops})
            if response is None:
                return
            if response.status_code == 200:
                results = response.json()["results"]
                for tracked, result in zip(batch, results, strict=True):
                    assert result["status"] == 201 and result["record"]["version"] == 1
                    tracked.ack()
                run.acks += 1
            continue
        if len(live) < LIVE_PER_WRITER:
            tracked = Tracked(new_id())
            data = {"writer": number, "step": step, "text": f"note {step}"}
            tracked.pending = Write("create", 1, data)
            run.records[tracked.id] = tracked
            mine.append(tracked)
            response = await _send(http, run, "POST", path, json={"id": tracked.id, **data})
            if response is None:
                return
            if response.status_code == 201:
                assert response.json()["version"] == 1
                tracked.ack()
                run.acks += 1
            continue
        tracked = rng.choice(live)
        current = tracked.current
        assert current is not None and current.data is not None
        version = current.version + 1
        headers = {"If-Match": f'"{current.version}"'}
        if rng.random() < 0.15:
            tracked.pending = Write("delete", version, None)
            response = await _send(http, run, "DELETE", f"{path}/{tracked.id}", headers=headers)
            expected_status = 204
        else:
            patch = {"step": step, "count": version}
            tracked.pending = Write("update", version, {**current.data, **patch})
            response = await _send(
                http, run, "PATCH", f"{path}/{tracked.id}", json=patch, headers=headers
            )
            expected_status = 200
        if response is None:
            return
        if response.status_code == expected_status:
            if expected_status == 200:
                assert response.json()["version"] == version
            tracked.ack()
            run.acks += 1


async def _killer(server: LiveServer, run: Run) -> None:
    while run.acks < KILL_AFTER_ACKS:
        await asyncio.sleep(0.005)
    run.in_flight_at_kill = run.in_flight
    run.killed.set()
    # from a thread, so the writers keep sending while the process group dies
    await asyncio.to_thread(server.kill, signal.SIGKILL)


def _shows(record: dict[str, Any] | None, state: Write | None) -> bool:
    """Whether the record as read (None: 404) is the record after ``state``."""
    if state is None or state.data is None:  # never created, or deleted
        return record is None
    if record is None:
        return False
    system = {"id", "owner", "created", "updated", "version"}
    data = {k: v for k, v in record.items() if k not in system}
    return (record["version"], data) == (state.version, state.data)


@pytest.mark.parametrize("workers", [1, 2])
async def test_acknowledged_writes_survive_sigkill(live_server: LiveServer, workers: int) -> None:
    if workers != live_server.workers:
        restart(live_server, workers)
    token = admin_token(live_server)
    create_collection(live_server.url, token, {"name": COLLECTION})
    run = Run()

    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS)
    async with httpx.AsyncClient(
        base_url=live_server.url, headers=auth, timeout=30, limits=limits
    ) as http:
        await asyncio.wait_for(
            asyncio.gather(
                _killer(live_server, run),
                *(_writer(http, run, n, workers) for n in range(WRITERS)),
            ),
            timeout=90,
        )

    assert run.unexpected == []
    assert run.acks >= KILL_AFTER_ACKS
    assert run.in_flight_at_kill > 0, "the kill must land while writes are in flight"

    live_server.start()  # same data folder
    async with httpx.AsyncClient(base_url=live_server.url, headers=auth, timeout=30) as http:
        path = f"/api/collections/{COLLECTION}/records"
        found: dict[str, dict[str, Any] | None] = {}
        for record_id in run.records:
            response = await http.get(f"{path}/{record_id}")
            assert response.status_code in (200, 404), response.text
            found[record_id] = response.json() if response.status_code == 200 else None

        # the restarted server takes writes again, continuing each record's versions
        survivor = next(t for t in run.records.values() if found[t.id] is not None)
        before = found[survivor.id]
        assert before is not None
        response = await http.patch(
            f"{path}/{survivor.id}",
            json={"after": "restart"},
            headers={"If-Match": f'"{before["version"]}"'},
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == before["version"] + 1

    live_server.kill(signal.SIGTERM)
    changes = [
        c
        for c in await read_changes(live_server.data_dir, COLLECTION)
        if c.record_id != survivor.id or c.version <= before["version"]  # not the write above
    ]

    positions = [c.position for c in changes]
    assert positions == sorted(set(positions)), "positions strictly increase"
    logged: dict[tuple[str, int], list[str]] = {}
    for change in changes:
        logged.setdefault((change.record_id, change.version), []).append(change.op)
    duplicates = {key: ops for key, ops in logged.items() if len(ops) > 1}
    assert duplicates == {}, "each write appears in the change log once"

    lost: list[str] = []
    batches: dict[int, set[bool]] = {}
    for tracked in run.records.values():
        record = found[tracked.id]
        acked = tracked.current
        # every acknowledged write is logged exactly once, with its op and version
        for write in tracked.acked:
            ops = logged.get((tracked.id, write.version))
            if ops != [write.op]:
                lost.append(f"{tracked.id} v{write.version} {write.op}: logged {ops}")
        # the record is at its acknowledged state, or at the in-flight write's state
        states: list[Write | None] = [acked]
        if tracked.pending is not None:
            states.append(tracked.pending)
        matches = [state for state in states if _shows(record, state)]
        assert matches, f"{tracked.id}: found {record}, acked {acked}, in flight {tracked.pending}"
        # the log ends where the record is: nothing extra, nothing missing
        versions = sorted(v for (rid, v) in logged if rid == tracked.id)
        assert versions == list(range(1, len(versions) + 1)), f"{tracked.id}: gaps {versions}"
        state = matches[0]
        expected_last = 0 if state is None else state.version
        assert (versions[-1] if versions else 0) == expected_last, tracked.id
        if tracked.batch is not None and tracked.pending is not None:
            batches.setdefault(tracked.batch, set()).add(record is not None)
    assert lost == [], "acknowledged writes missing from the change log"
    # an in-flight batch happened entirely or not at all
    assert all(len(outcomes) == 1 for outcomes in batches.values()), batches
    logged_ids = {rid for rid, _ in logged}
    assert logged_ids <= run.records.keys(), "the log holds only writes that clients sent"
