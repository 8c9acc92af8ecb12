"""Deployment roles (``roost serve --role``): what an instance of each serves and runs, the
clean-up the ``worker`` role does, and the drain signal ``roost serve`` sends its workers
on SIGTERM. Processes of each role working together: ``tests/scaleout/test_roles.py``."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import make_settings, serving
from roost.auth.cleanup import purge_expired
from roost.http.app import DRAIN_SIGNAL
from roost.records.fields import format_datetime

PATHS = {
    "api": ("GET", "/api/collections"),
    "realtime": ("GET", "/api/realtime/sse"),
}
"""One route of each role apart from the operational ones, which every role answers."""
SERVES = {
    "all": {"api", "realtime"},
    "api": {"api"},
    "realtime": {"realtime"},
    "worker": set(),
}


@pytest.mark.parametrize("role", sorted(SERVES))
async def test_each_role_serves_its_routes_and_the_operational_ones(
    tmp_path: Path, role: str
) -> None:
    async with serving(make_settings(tmp_path, role=role)) as (http, _):
        for path in ("/api/health", "/api/ready", "/metrics"):
            assert (await http.get(path)).status_code != 404, path
        for part, (method, path) in PATHS.items():
            response = await http.request(method, path)
            if part in SERVES[role]:
                assert response.status_code != 404, (path, response.text)
            else:
                assert response.status_code == 404, (path, response.text)
                assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("role", sorted(SERVES))
async def test_only_the_worker_roles_run_the_jobs_and_only_realtime_ones_the_feed(
    tmp_path: Path, role: str
) -> None:
    async with serving(make_settings(tmp_path, role=role)) as (_, components):
        names = {task.get_name() for task in asyncio.all_tasks()}
    assert ("roost-realtime-feed" in names) == ("realtime" in SERVES[role] or role == "all")
    works = role in ("worker", "all")
    assert ("roost-outbox" in names) == works, names
    assert ("roost-cleanup-changes" in names) == works, names
    assert ("roost-cleanup-sign_ins" in names) == works, names


async def test_expired_sign_in_state_is_deleted_a_day_after_it_ended(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url, role="api")  # no clean-up
    now = datetime.now(UTC)
    old, recent, later = (format_datetime(now + timedelta(hours=h)) for h in (-25, -23, 24))
    sessions = {  # id: (expires, revoked)
        "expired-long-ago": (old, None),
        "expired-lately": (recent, None),
        "revoked-long-ago": (later, old),
        "revoked-lately": (later, recent),
        "live": (later, None),
    }
    tokens = {  # hash: (expires, used)
        "t-expired-long-ago": (old, None),
        "t-used-long-ago": (later, old),
        "t-used-lately": (later, recent),
        "t-live": (later, None),
    }
    async with serving(settings) as (_, components):
        storage = components.storage
        async with storage.write() as conn:
            for id, (expires, revoked) in sessions.items():
                await conn.execute(
                    "INSERT INTO _sessions (id, user_id, device, user_agent, ip, created,"
                    " last_used, expires, revoked) VALUES (?, 'u', '', '', '', ?, ?, ?, ?)",
                    (id, old, old, expires, revoked),
                )
                await conn.execute(
                    "INSERT INTO _refresh_tokens (token_hash, session_id, created)"
                    " VALUES (?, ?, ?)",
                    (f"r-{id}", id, old),
                )
            for token_hash, (expires, used) in tokens.items():
                await conn.execute(
                    "INSERT INTO _one_time_tokens (token_hash, user_id, purpose, email,"
                    " created, expires, used) VALUES (?, 'u', 'reset', 'a@b.c', ?, ?, ?)",
                    (token_hash, old, expires, used),
                )
        assert await purge_expired(storage) == 2 + 2 + 2  # sessions, their tokens, one-time
        assert await purge_expired(storage) == 0
        async with storage.read() as conn:
            left = {row["id"] for row in await conn.fetch_all("SELECT id FROM _sessions")}
            refresh = await conn.fetch_all("SELECT token_hash FROM _refresh_tokens")
            one_time = await conn.fetch_all("SELECT token_hash FROM _one_time_tokens")
    assert left == {"expired-lately", "revoked-lately", "live"}
    assert {row["token_hash"] for row in refresh} == {f"r-{id}" for id in left}
    assert {row["token_hash"] for row in one_time} == {"t-used-lately", "t-live"}


async def test_the_drain_signal_turns_ready_off_and_refuses_new_realtime_streams(
    tmp_path: Path,
) -> None:
    async with serving(make_settings(tmp_path)) as (http, components):
        assert (await http.get("/api/ready")).status_code == 200
        os.kill(os.getpid(), DRAIN_SIGNAL)
        for _ in range(100):
            if components.realtime.draining:
                break
            await asyncio.sleep(0.01)
        ready = await http.get("/api/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"instance": "draining"}
        stream = await http.get("/api/realtime/sse", params={"collection": "users"})
        assert stream.status_code == 503, stream.text
        assert (await http.get("/api/health")).status_code == 200  # still serving
