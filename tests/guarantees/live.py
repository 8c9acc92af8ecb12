"""Helpers shared by the guarantee tests that run a real ``roost serve``.

Imported as ``guarantees.live`` (``tests/`` is on ``sys.path``); it holds no fixtures, so
no second ``conftest.py`` is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from roost.settings import Settings
from roost.storage.base import Change, open_storage

if TYPE_CHECKING:
    from conftest import LiveServer

ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "a-long-enough-password"
SECRET = "guarantees-secret-key-that-is-long-enough-42"


def admin_token(server: LiveServer, email: str = ADMIN_EMAIL) -> str:
    """Create an admin with the CLI (password on stdin), sign in over HTTP as a client
    would, and return the access token."""
    server.roost("admin", "create", email, stdin=ADMIN_PASSWORD + "\n")
    return sign_in(server.url, email, ADMIN_PASSWORD)


def sign_in(url: str, email: str, password: str) -> str:
    """``POST /api/auth/login``; the access token of the new session."""
    response = httpx.post(
        f"{url}/api/auth/login", json={"email": email, "password": password}, timeout=30
    )
    assert response.status_code == 200, response.text
    signed_in = response.json()
    assert signed_in["token_type"] == "Bearer" and signed_in["user"]["role"] == "admin"
    token: str = signed_in["access_token"]
    return token


def restart(server: LiveServer, workers: int) -> None:
    """Stop ``server`` (gracefully) and start it again on the same data with ``workers``."""
    server.kill(15)
    server.workers = workers
    server.start()


def create_collection(url: str, token: str, definition: dict[str, Any]) -> None:
    response = httpx.post(
        f"{url}/api/collections",
        json=definition,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text


async def read_changes(data_dir: Path, collection: str) -> list[Change]:
    """Every change of ``collection``, read from the data folder with a fresh storage."""
    settings = Settings(data_dir=data_dir, secret_key=SECRET, env="dev")
    storage = open_storage(settings)
    await storage.open()
    try:
        return await storage.changes_since(0, [collection], 1_000_000)
    finally:
        await storage.aclose()
