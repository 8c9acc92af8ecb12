"""Optimistic concurrency: many writers race to PATCH one record with ``If-Match``.

Exactly one write wins per version (the others get 412 with the current record), the
record's final version is the number of wins + 1 with no gaps, and the change log holds
exactly one change per win, versions 1..N in position order. Run in-process (one event
loop, writes serialised by the adapter's lock) and over sockets against two worker
processes (serialised by SQLite's own lock).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from guarantees.live import admin_token, create_collection, read_changes, restart
from roost.components import Components
from roost.storage.base import Change

if TYPE_CHECKING:
    from conftest import LiveServer

COLLECTION = "counters"
TASKS = 20
ROUNDS = 5


@dataclass
class Race:
    wins: list[tuple[int, int]] = field(default_factory=list)  # (If-Match version, new version)
    stale: int = 0
    other: list[str] = field(default_factory=list)


async def _contender(http: httpx.AsyncClient, path: str, number: int, race: Race) -> None:
    for round_ in range(ROUNDS):
        seen = await http.get(path)
        assert seen.status_code == 200, seen.text
        version = seen.json()["version"]
        response = await http.patch(
            path,
            json={"by": number, "round": round_, "hits": version},
            headers={"If-Match": f'"{version}"'},
        )
        if response.status_code == 200:
            body = response.json()
            assert response.headers["etag"] == f'"{body["version"]}"'
            race.wins.append((version, body["version"]))
        elif response.status_code == 412:
            problem = response.json()
            assert problem["code"] == "precondition_failed"
            assert problem["current"]["version"] > version, problem
            race.stale += 1
        else:
            race.other.append(f"{response.status_code} {response.text[:300]}")


async def _race(http: httpx.AsyncClient) -> tuple[str, Race, dict[str, Any]]:
    created = await http.post(f"/api/collections/{COLLECTION}/records", json={"hits": 0})
    assert created.status_code == 201, created.text
    path = f"/api/collections/{COLLECTION}/records/{created.json()['id']}"
    race = Race()
    await asyncio.wait_for(
        asyncio.gather(*(_contender(http, path, n, race) for n in range(TASKS))), timeout=60
    )
    final = await http.get(path)
    assert final.status_code == 200
    return created.json()["id"], race, final.json()


def _check(record_id: str, race: Race, final: dict[str, Any], changes: list[Change]) -> None:
    assert race.other == []
    assert len(race.wins) + race.stale == TASKS * ROUNDS
    assert race.stale > 0, "the writers must actually contend"
    # exactly one winner per version read
    per_version = Counter(expected for expected, _ in race.wins)
    assert all(count == 1 for count in per_version.values()), per_version
    # each win moved the record exactly one version on, with no gaps
    assert all(new == expected + 1 for expected, new in race.wins)
    assert sorted(new for _, new in race.wins) == list(range(2, len(race.wins) + 2))
    assert final["version"] == len(race.wins) + 1
    # the change log: one create, then one update per win, in order
    mine = [c for c in changes if c.record_id == record_id]
    assert [c.version for c in mine] == list(range(1, final["version"] + 1))
    assert [c.op for c in mine] == ["create"] + ["update"] * len(race.wins)
    positions = [c.position for c in mine]
    assert positions == sorted(set(positions))


async def test_if_match_one_winner_per_version_in_process(
    admin: httpx.AsyncClient, components: Components
) -> None:
    response = await admin.post("/api/collections", json={"name": COLLECTION})
    assert response.status_code == 201, response.text
    record_id, race, final = await _race(admin)
    changes = await components.storage.changes_since(0, [COLLECTION], 100_000)
    _check(record_id, race, final, changes)


@pytest.mark.slow
async def test_if_match_one_winner_per_version_across_workers(live_server: LiveServer) -> None:
    restart(live_server, workers=2)
    token = admin_token(live_server)
    create_collection(live_server.url, token, {"name": COLLECTION})
    limits = httpx.Limits(max_connections=TASKS, max_keepalive_connections=TASKS)
    async with httpx.AsyncClient(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        limits=limits,
    ) as http:
        record_id, race, final = await _race(http)
    live_server.kill(signal.SIGTERM)
    _check(record_id, race, final, await read_changes(live_server.data_dir, COLLECTION))
