"""Sign-in rate limits per client address and per account, with the in-process backend and
with Redis, behind a trusted proxy and spoofed by an untrusted one; Redis going away
mid-test leaves sign-in answered (fail open), never a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from api.scenario import Scenario, check
from conftest import make_settings
from redis_server import RedisServer
from roost.components import Components
from roost.http.app import create_app
from roost.settings import Settings

IP_LIMIT = 8
ACCOUNT_LIMIT = 3
PROXY = "127.0.0.1"
"""The peer address ``httpx.ASGITransport`` reports by default: our trusted proxy."""
PASSWORD = "correct-horse-battery"
LIMITED = Scenario("limited", "POST", "/api/auth/login", 429, "rate_limited")


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> RedisServer | None:
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


@pytest.fixture
def settings(tmp_path: Path, backend: RedisServer | None) -> Settings:
    return make_settings(
        tmp_path,
        auth_rate_limit_ip=f"{IP_LIMIT}/minute",
        auth_rate_limit_account=f"{ACCOUNT_LIMIT}/minute",
        trusted_proxies=[PROXY],
        ratelimit_url=backend.url if backend is not None else "memory://",
    )


@pytest.fixture
async def stranger(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client connecting from 10.0.0.9, which is no trusted proxy."""
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost") as http:
        yield http


async def login(
    client: httpx.AsyncClient, email: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    return await client.post(
        "/api/auth/login", json={"email": email, "password": "wrong-password!"}, headers=headers
    )


def assert_limited(response: httpx.Response) -> None:
    check(response, LIMITED)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert f"{retry_after} s" in response.json()["detail"]


async def test_the_account_limit_refuses_even_the_right_password(
    client: httpx.AsyncClient,
) -> None:
    signup = await client.post(
        "/api/auth/signup", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert signup.status_code == 201, signup.text
    for _ in range(ACCOUNT_LIMIT - 1):  # the sign-up was the first attempt
        assert (await login(client, "alice@example.com")).status_code == 401

    assert_limited(await login(client, " ALICE@example.com"))  # the same account
    right = await client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert_limited(right)
    forgot = await client.post("/api/auth/password/forgot", json={"email": "alice@example.com"})
    assert_limited(forgot)
    # other accounts from the same address are still answered (that limit is not reached)
    assert (await login(client, "bob@example.com")).status_code == 401


async def test_the_address_limit_spans_every_email(client: httpx.AsyncClient) -> None:
    for n in range(IP_LIMIT):
        assert (await login(client, f"user{n}@example.com")).status_code == 401

    assert_limited(await login(client, "fresh@example.com"))
    anonymous = await client.post("/api/auth/anonymous", json={})
    assert_limited(anonymous)
    oidc = await client.post("/api/auth/oidc/google", json={"id_token": "x"})
    assert_limited(oidc)


async def test_clients_behind_a_trusted_proxy_are_counted_apart(
    client: httpx.AsyncClient,
) -> None:
    for n in range(IP_LIMIT):
        assert (await login(client, f"user{n}@example.com", "10.0.0.1")).status_code == 401
    assert_limited(await login(client, "next@example.com", "10.0.0.1"))

    # entries the client wrote left of what the proxy appended do not make a new client
    assert_limited(await login(client, "next@example.com", "203.0.113.5, 10.0.0.1"))
    assert (await login(client, "next@example.com", "10.0.0.2")).status_code == 401
    assert (await login(client, "next@example.com")).status_code == 401  # the proxy itself


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    stranger: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    for n in range(IP_LIMIT):
        spoofed = f"198.51.100.{n}"
        assert (await login(stranger, f"user{n}@example.com", spoofed)).status_code == 401

    assert_limited(await login(stranger, "next@example.com", "198.51.100.99"))
    assert_limited(await login(stranger, "next@example.com", f"{PROXY}, 10.0.0.1"))
    assert_limited(await login(stranger, "next@example.com"))
    # the peer was limited, not everyone
    assert (await login(client, "next@example.com")).status_code == 401


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_redis_going_away_fails_open(
    client: httpx.AsyncClient, backend: RedisServer | None
) -> None:
    assert backend is not None
    for n in range(IP_LIMIT):
        assert (await login(client, f"user{n}@example.com")).status_code == 401
    assert_limited(await login(client, "next@example.com"))

    backend.stop()

    for n in range(IP_LIMIT + 2):  # answered, not limited and never a 500
        response = await login(client, f"other{n}@example.com")
        assert response.status_code == 401, response.text
    signup = await client.post(
        "/api/auth/signup", json={"email": "carol@example.com", "password": PASSWORD}
    )
    assert signup.status_code == 201, signup.text


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_instances_sharing_redis_share_the_count(
    client: httpx.AsyncClient, settings: Settings, components: Components
) -> None:
    other = create_app(settings)  # a second instance of the same deployment
    async with other.router.lifespan_context(other):
        # Connected first: on a loaded machine a first connection can outlast the 0.25 s
        # timeout, and the limiter then fails open for a while (tested above).
        for limiter in (components.ratelimiter, other.state.components.ratelimiter):
            deadline = time.monotonic() + 10
            while not await limiter.ping():
                assert time.monotonic() < deadline, "Redis did not answer in 10 s"
                await asyncio.sleep(0.1)
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as second:
            for n in range(IP_LIMIT):
                via = client if n % 2 else second
                assert (await login(via, f"user{n}@example.com")).status_code == 401
            assert_limited(await login(client, "next@example.com"))
            assert_limited(await login(second, "next@example.com"))
