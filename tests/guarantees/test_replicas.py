"""Read replicas: reads go to a streaming replica, a client always reads its own writes,
and a replica that lags past the bound or is down is skipped.

Runs on a real primary and a real ``pg_basebackup -R`` replica. Pausing the replica's
replay (``pg_wal_replay_pause()``) makes it visibly behind: a record written since is
missing there, so a 404 shows a read went to the replica and a 200 that it did not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from conftest import insert_admin, make_settings
from postgres_server import PostgresServer
from roost.http.app import create_app

pytestmark = pytest.mark.slow

Replicated = tuple[PostgresServer, PostgresServer]


@asynccontextmanager
async def roost(
    tmp_path: Path, replicated: Replicated, max_lag: float
) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's client of an app on the primary with the replica, a ``notes`` collection
    created and replayed."""
    primary, replica = replicated
    settings = make_settings(
        tmp_path,
        database_url=primary.url,
        database_replica_urls=[replica.url],
        database_replica_max_lag_seconds=max_lag,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        token = await insert_admin(app.state.components)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://roost",
            headers={"Authorization": f"Bearer {token}"},
        ) as http:
            created = await http.post("/api/collections", json={"name": "notes"})
            assert created.status_code == 201, created.text
            await wait_until_replayed(replicated)
            yield http


async def wait_until_replayed(replicated: Replicated) -> None:
    primary, replica = replicated
    position = primary.psql("SELECT pg_current_wal_lsn()").strip()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        behind = replica.psql(f"SELECT pg_last_wal_replay_lsn() < '{position}'").strip()
        if behind == "f":
            await asyncio.sleep(0.5)  # and the monitor has seen it (it checks every 0.2 s)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica did not catch up in 10 s")


async def write(http: httpx.AsyncClient) -> tuple[str, str]:
    """A new record's id and the position its response carries."""
    response = await http.post("/api/collections/notes/records", json={"text": "hello"})
    assert response.status_code == 201, response.text
    return response.json()["id"], response.headers["Roost-Position"]


async def status(http: httpx.AsyncClient, record_id: str, position: str | None = None) -> int:
    headers = {"Roost-Position": position} if position else {}
    response = await http.get(f"/api/collections/notes/records/{record_id}", headers=headers)
    assert response.status_code in (200, 404), response.text
    return response.status_code


async def until_status(
    http: httpx.AsyncClient, record_id: str, wanted: int, seconds: float = 10
) -> None:
    """Reads without a position until one answers ``wanted`` (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while await status(http, record_id) != wanted:
        assert time.monotonic() < deadline, f"no {wanted} within {seconds} s"
        await asyncio.sleep(0.05)


async def test_reads_go_to_the_replica_and_a_client_reads_its_own_writes(
    tmp_path: Path, replicated_postgres: Replicated
) -> None:
    _, replica = replicated_postgres
    async with roost(tmp_path, replicated_postgres, max_lag=60) as http:
        replica.psql("SELECT pg_wal_replay_pause()")
        record_id, position = await write(http)

        assert await status(http, record_id) == 404  # another client: the replica, behind
        assert await status(http, record_id, position) == 200  # the writer: the primary
        listed = await http.get(
            "/api/collections/notes/records", headers={"Roost-Position": position}
        )
        assert [item["id"] for item in listed.json()["items"]] == [record_id]

        replica.psql("SELECT pg_wal_replay_resume()")

        await until_status(http, record_id, 200)
        bad = await http.get(
            f"/api/collections/notes/records/{record_id}", headers={"Roost-Position": "x"}
        )
        assert bad.status_code == 400
        assert bad.json()["code"] == "bad_request"


async def test_a_replica_lagging_past_the_bound_is_skipped(
    tmp_path: Path, replicated_postgres: Replicated
) -> None:
    _, replica = replicated_postgres
    async with roost(tmp_path, replicated_postgres, max_lag=1.0) as http:
        replica.psql("SELECT pg_wal_replay_pause()")
        record_id, _ = await write(http)
        assert await status(http, record_id) == 404

        await until_status(http, record_id, 200, seconds=5)  # lag 1 s, checks every 0.2 s
        replica.psql("SELECT pg_wal_replay_resume()")


async def test_a_replica_that_is_down_is_skipped_and_used_again_when_back(
    tmp_path: Path, replicated_postgres: Replicated
) -> None:
    _, replica = replicated_postgres
    async with roost(tmp_path, replicated_postgres, max_lag=60) as http:
        record_id, _ = await write(http)
        replica.stop()
        await asyncio.sleep(0.5)  # the monitor notices within 0.2 s
        for _ in range(20):
            assert await status(http, record_id) == 200

        replica.start()
        replica.psql("SELECT pg_wal_replay_pause()")
        later, _ = await write(http)

        await until_status(http, later, 404)
        replica.psql("SELECT pg_wal_replay_resume()")
