"""No endpoint blocks the event loop: password hashing at the production cost runs off it.

A real ``roost serve`` (one worker, argon2id at the default cost: time 3, 64 MiB) answers
``GET /api/health`` while 20 logins run at once. If hashing ran on the loop, each health
check would wait for the logins queued before it (seconds); off the loop it waits for
nothing but CPU time shared with the hashing threads.

The figures are printed (run with ``-s``) so that they can be quoted.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from conftest import LiveServer
from roost.settings import Settings

pytestmark = pytest.mark.slow

LOGINS = 20
PASSWORD = "a-good-long-password"
HEALTH_INTERVAL_SECONDS = 0.005


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def health_latencies(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("/api/health")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
        await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
    return latencies


async def test_health_answers_quickly_during_concurrent_logins(live_server: LiveServer) -> None:
    defaults = Settings.model_fields
    assert (defaults["password_time_cost"].default, defaults["password_memory_kib"].default) == (
        3,
        65536,
    ), "the server under test runs with the default (production) argon2 cost"
    emails = [f"user{n}@example.com" for n in range(LOGINS)]
    limits = httpx.Limits(max_connections=LOGINS + 5)
    async with (
        httpx.AsyncClient(base_url=live_server.url, timeout=120, limits=limits) as logins,
        httpx.AsyncClient(base_url=live_server.url, timeout=120) as health,
    ):
        for email in emails:  # one at a time: sign-up is not what is measured
            response = await logins.post(
                "/api/auth/signup", json={"email": email, "password": PASSWORD}
            )
            assert response.status_code == 201, response.text

        started = time.perf_counter()
        single = await logins.post(
            "/api/auth/login", json={"email": emails[0], "password": PASSWORD}
        )
        one_login = time.perf_counter() - started
        assert single.status_code == 200, single.text

        idle = await health_latencies_for(health, 50)

        stop = asyncio.Event()
        poller = asyncio.create_task(health_latencies(health, stop))
        await asyncio.sleep(0.05)

        async def login(email: str) -> float:
            began = time.perf_counter()
            response = await logins.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            return time.perf_counter() - began

        started = time.perf_counter()
        durations = await asyncio.gather(*(login(email) for email in emails))
        all_logins = time.perf_counter() - started
        stop.set()
        busy = await poller

    p50, p99, worst = percentile(busy, 0.5), percentile(busy, 0.99), max(busy)
    print(
        f"\nevent loop under {LOGINS} concurrent logins (argon2id t=3, m=64 MiB, 1 worker):"
        f"\n  one login alone:        {one_login * 1000:8.1f} ms"
        f"\n  {LOGINS} logins, wall time:  {all_logins * 1000:8.1f} ms"
        f" (each {min(durations) * 1000:.0f}-{max(durations) * 1000:.0f} ms)"
        f"\n  /api/health idle:       p50 {percentile(idle, 0.5) * 1000:6.1f} ms"
        f"   p99 {percentile(idle, 0.99) * 1000:6.1f} ms"
        f"\n  /api/health under load: p50 {p50 * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms"
        f"   max {worst * 1000:6.1f} ms   ({len(busy)} requests,"
        f" mean {statistics.fmean(busy) * 1000:.1f} ms)"
    )
    assert len(busy) >= 20, "the health checks ran while the logins did"
    assert all_logins > 0.5, "the logins cost what production logins cost"
    assert p99 < 0.1, f"p99 of /api/health was {p99 * 1000:.0f} ms during the logins"
    assert p99 < one_login, "a health check waited as long as a login"


async def health_latencies_for(client: httpx.AsyncClient, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get("/api/health")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
    return latencies
