"""The access log of a real ``roost serve`` (its stderr): one JSON line per request and per
WebSocket connection, naming the route template, the status, the time taken and the user,
and never a password, a token or a query string."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import CHEAP_PASSWORDS_ENV, LiveServer
from realtime.client import ws_url
from roost.ids import new_id
from server_log import access_line, log_text, logging_server

PASSWORD = "a-password-nobody-may-log"
QUERY_SECRET = "query-secret-4f1c"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with logging_server(tmp_path_factory.mktemp("access"), CHEAP_PASSWORDS_ENV) as live:
        yield live


def test_one_line_per_request_with_its_user_and_no_credential(server: LiveServer) -> None:
    record_id = new_id()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        signup = http.post(
            "/api/auth/signup",
            json={"email": "logged@example.com", "password": PASSWORD},
            headers={"X-Request-Id": "signup-1"},
        )
        assert signup.status_code == 201, signup.text
        user_id = signup.json()["user"]["id"]
        login = http.post(
            "/api/auth/login",
            json={"email": "logged@example.com", "password": PASSWORD},
            headers={"X-Request-Id": "login-1"},
        )
        assert login.status_code == 200, login.text
        refreshed = http.post(
            "/api/auth/refresh",
            json={"refresh_token": login.json()["refresh_token"]},
            headers={"X-Request-Id": "refresh-1"},
        )
        assert refreshed.status_code == 200, refreshed.text
        bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
        me = http.get("/api/auth/me", headers={**bearer, "X-Request-Id": "me-1"})
        assert me.status_code == 200
        anonymous = http.get(
            f"/api/collections/nothing/records/{record_id}?token={QUERY_SECRET}",
            headers={"X-Request-Id": "anonymous-1"},
        )
        assert anonymous.status_code == 404, anonymous.text
        bad_token = http.get(
            "/api/auth/me", headers={"Authorization": "Bearer forged", "X-Request-Id": "bad-1"}
        )
        assert bad_token.status_code == 401

    line = access_line(server, "request", request_id="me-1")
    assert line["method"] == "GET"
    assert line["route"] == "/api/auth/me"
    assert line["status"] == 200
    assert line["user_id"] == user_id
    assert line["client"] == "127.0.0.1"
    assert line["bytes_out"] == len(me.content)
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 30_000
    assert line["level"] == "info" and "timestamp" in line
    assert "path" not in line and "trace_id" not in line  # tracing is off

    for request_id, route, status in (
        ("signup-1", "/api/auth/signup", 201),
        ("login-1", "/api/auth/login", 200),
        ("refresh-1", "/api/auth/refresh", 200),
        ("anonymous-1", "/api/collections/{name}/records/{id}", 404),
        ("bad-1", "/api/auth/me", 401),
    ):
        line = access_line(server, "request", request_id=request_id)
        assert (line["route"], line["status"], line["user_id"]) == (route, status, None)

    text = log_text(server)
    credentials = [
        PASSWORD,
        QUERY_SECRET,
        record_id,  # the path itself, which may carry ids
        "forged",
        *(signup.json()[key] for key in ("access_token", "refresh_token")),
        *(login.json()[key] for key in ("access_token", "refresh_token")),
        *(refreshed.json()[key] for key in ("access_token", "refresh_token")),
    ]
    assert [secret for secret in credentials if secret in text] == []


async def test_one_line_per_websocket_connection_when_it_ends(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        signed_in = await http.post("/api/auth/anonymous", json={})
        assert signed_in.status_code == 201, signed_in.text
    token = signed_in.json()["access_token"]
    user_id = signed_in.json()["user"]["id"]

    headers = {"X-Request-Id": "socket-1"}
    async with ws_connect(ws_url(server.url), additional_headers=headers) as socket:
        await socket.send(orjson.dumps({"type": "auth", "token": token}).decode())
        ack = orjson.loads(await socket.recv())
        assert (ack["type"], ack["of"]) == ("ack", "auth")

    line = access_line(server, "websocket", request_id="socket-1")
    assert line["route"] == "/api/realtime"
    assert line["user_id"] == user_id
    assert line["close_code"] == 1000  # the client's normal closure
    assert line["client"] == "127.0.0.1"
    assert 0 <= line["duration_ms"] < 30_000
    assert token not in log_text(server)
