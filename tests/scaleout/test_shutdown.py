"""Stopping and starting one ``roost serve`` (two workers), without a load balancer:

- SIGTERM: every realtime connection closes at once with ``1012`` (reconnect and resume),
  ``/api/ready`` answers 503 while the instance keeps serving for ``drain_seconds``, and
  the process exits 0.
- A request still arriving (a slow upload) when SIGTERM comes is answered in full.
- Start-up waits for a database that is not up yet.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, free_port
from guarantees.live import SECRET, admin_token, create_collection
from postgres_server import PostgresServer
from realtime.client import RealtimeClient
from server_log import log_text

pytestmark = pytest.mark.slow

DRAIN_SECONDS = 4
"""Long enough for the checks made while draining, on a busy machine."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    running = LiveServer(
        data_dir=tmp_path / "data",
        port=free_port(),
        workers=2,
        env={"ROOST_SECRET_KEY": SECRET, "ROOST_DRAIN_SECONDS": str(DRAIN_SECONDS)},
    )
    running.start()
    try:
        yield running
    finally:
        running.kill()


def prepare(server: LiveServer) -> str:
    token = admin_token(server)
    create_collection(
        server.url,
        token,
        {"name": "notes", "fields": {"text": {"type": "string"}}, "rules": {"list": ""}},
    )
    return token


async def test_sigterm_closes_realtime_with_1012_drains_and_exits_0(server: LiveServer) -> None:
    token = prepare(server)
    async with AsyncExitStack() as clients:
        connected = [  # spread over both workers
            await clients.enter_async_context(RealtimeClient.connect(server.url, token))
            for _ in range(6)
        ]
        started = time.monotonic()
        stopped = asyncio.create_task(asyncio.to_thread(server.stop, 30))
        for client in connected:
            code, _ = await client.wait_closed(timeout=1.5)
            assert code == 1012
        fresh = {"Connection": "close"}  # a new connection each: any worker may answer
        async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=fresh) as http:
            for _ in range(4):  # both workers drain, and both still serve
                assert (await http.get("/api/ready")).status_code == 503
                assert (await http.get("/api/health")).status_code == 200
        assert await stopped == 0
        assert time.monotonic() - started >= DRAIN_SECONDS


async def slowly(body: bytes, pieces: int, seconds: float) -> AsyncIterator[bytes]:
    step = len(body) // pieces
    for start in range(0, len(body), step):
        yield body[start : start + step]
        await asyncio.sleep(seconds / pieces)


async def test_a_request_arriving_when_sigterm_comes_is_answered(server: LiveServer) -> None:
    token = prepare(server)
    text = "x" * 30_000
    body = b'{"text": "' + text.encode() + b'"}'
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        upload = asyncio.create_task(
            http.post(
                "/api/collections/notes/records",
                content=slowly(body, 20, DRAIN_SECONDS + 1.5),
                headers=headers,
            )
        )
        await asyncio.sleep(0.3)
        stopped = asyncio.create_task(asyncio.to_thread(server.stop, 30))  # the body goes on
        response = await upload  # arriving past the drain
    assert response.status_code == 201, response.text
    assert response.json()["text"] == text
    assert await stopped == 0
    server.start()  # and it was stored
    stored = httpx.get(
        f"{server.url}/api/collections/notes/records/{response.json()['id']}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert stored.status_code == 200, stored.text


def test_start_up_waits_for_the_database(
    tmp_path: Path, postgres_server_factory: Callable[..., PostgresServer]
) -> None:
    database = postgres_server_factory()
    url = database.url_for(database.create_database())
    database.stop()
    server = LiveServer(
        data_dir=tmp_path / "data",
        port=free_port(),
        env={"ROOST_SECRET_KEY": SECRET, "ROOST_DATABASE_URL": url},
    )
    later = threading.Timer(3, database.start)
    later.start()
    try:
        server.start()  # ready once the database is: within LiveServer's 30 s
    finally:
        later.join()
        server.kill()
    assert "database_unavailable" in log_text(server)
