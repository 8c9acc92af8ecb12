"""Login timing does not tell whether an email has an account (production argon2 cost)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx
import pytest

from conftest import make_settings
from roost.http.app import create_app

ROUNDS = 7


@pytest.mark.slow
async def test_unknown_and_known_emails_cost_the_same(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        password_time_cost=3,
        password_memory_kib=65536,
        auth_rate_limit_ip="1000/minute",
        auth_rate_limit_account="1000/minute",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as http:
            signup = {"email": "known@example.com", "password": "the-right-password"}
            assert (await http.post("/api/auth/signup", json=signup)).status_code == 201

            async def attempt(email: str) -> tuple[float, httpx.Response]:
                started = time.perf_counter()
                answer = await http.post(
                    "/api/auth/login", json={"email": email, "password": "a-wrong-password"}
                )
                return time.perf_counter() - started, answer

            known, unknown = [], []
            for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
                seconds, known_answer = await attempt("known@example.com")
                known.append(seconds)
                seconds, unknown_answer = await attempt("nobody@example.com")
                unknown.append(seconds)
    assert known_answer.status_code == unknown_answer.status_code == 401
    assert known_answer.json() == unknown_answer.json()
    ratio = statistics.median(unknown) / statistics.median(known)
    print(
        f"login median: known {statistics.median(known) * 1000:.1f} ms,"
        f" unknown {statistics.median(unknown) * 1000:.1f} ms, ratio {ratio:.2f}"
    )
    assert 0.7 < ratio < 1.4
