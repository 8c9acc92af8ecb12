"""One codebase as three deployment roles, each its own ``roost serve --role`` process on
one PostgreSQL and Redis: a write sent to the ``api`` instance reaches a WebSocket on the
``realtime`` instance, and mail the ``api`` instance queued is sent by the ``worker``
instance, only once one runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from conftest import CHEAP_PASSWORDS_ENV, LiveServer, free_port
from guarantees.live import SECRET, admin_token, create_collection
from realtime.client import RealtimeClient
from redis_server import RedisServer
from smtp_server import SMTPTestServer

pytestmark = pytest.mark.slow


def instance(folder: Path, role: str, env: dict[str, str]) -> LiveServer:
    return LiveServer(
        data_dir=folder / role / "data", port=free_port(), env={**env, "ROOST_ROLE": role}
    )


async def test_api_realtime_and_worker_instances_work_together(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    async with SMTPTestServer() as smtp:
        env = {
            "ROOST_SECRET_KEY": SECRET,
            "ROOST_DATABASE_URL": postgres_url,
            "ROOST_CACHE_URL": redis_server.url,
            "ROOST_BROKER_URL": redis_server.url,
            "ROOST_SMTP_URL": smtp.url(),
            **CHEAP_PASSWORDS_ENV,
        }
        api, realtime, worker = (instance(tmp_path, r, env) for r in ("api", "realtime", "worker"))
        try:
            await asyncio.gather(*(asyncio.to_thread(s.start) for s in (api, realtime)))
            token = await asyncio.to_thread(admin_token, api)
            create_collection(
                api.url,
                token,
                {"name": "notes", "fields": {"n": {"type": "integer"}}, "rules": {"list": ""}},
            )
            async with (
                RealtimeClient.connect(realtime.url, token) as listener,
                httpx.AsyncClient(timeout=30) as http,
            ):
                await listener.subscribe("s", "notes")
                headers = {"Authorization": f"Bearer {token}"}
                for n in range(3):
                    created = await http.post(
                        f"{api.url}/api/collections/notes/records", json={"n": n}, headers=headers
                    )
                    assert created.status_code == 201, created.text
                heard = await listener.wait_events("s", 3)
                assert [event["record"]["n"] for event in heard] == [0, 1, 2]

                # each serves its own part only
                assert (await http.get(f"{realtime.url}/api/collections")).status_code == 404
                assert (await http.get(f"{api.url}/api/realtime/sse")).status_code == 404
                for server in (api, realtime):
                    assert (await http.get(f"{server.url}/api/ready")).status_code == 200

                signup = {"email": "ann@example.com", "password": "a-long-enough-password"}
                response = await http.post(f"{api.url}/api/auth/signup", json=signup)
                assert response.status_code == 201, response.text
                forgot = {"email": "ann@example.com"}
                response = await http.post(f"{api.url}/api/auth/password/forgot", json=forgot)
                assert response.status_code == 202, response.text
                await asyncio.sleep(3)  # longer than a worker's poll: no instance sends it
                assert smtp.received == []
                await asyncio.to_thread(worker.start)
                (mail,) = await smtp.wait_for(1)
                assert mail.rcpt_tos == ["ann@example.com"]
                assert (await http.get(f"{worker.url}/api/collections")).status_code == 404
        finally:
            for server in (api, realtime, worker):
                server.kill()
