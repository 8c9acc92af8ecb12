"""Fixtures: a fresh app (own SQLite file in a temporary folder) per test, an admin token,
and a real ``roost serve`` subprocess on a free port for tests that need sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from roost.auth.sessions import Device
from roost.components import Components
from roost.http.app import create_app
from roost.settings import Settings

pytest_plugins = ["redis_server", "redis_cluster", "postgres_server"]

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct-horse-battery"
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


TEST_DEVICE = Device(name="pytest", user_agent="pytest", ip="127.0.0.1")
CHEAP_PASSWORDS = {"password_time_cost": 1, "password_memory_kib": 64}
"""argon2id at the lowest cost, so tests that sign in stay fast (the tests of hashing
itself set their own cost)."""
CHEAP_PASSWORDS_ENV = {f"ROOST_{name.upper()}": str(v) for name, v in CHEAP_PASSWORDS.items()}
"""The same, as a ``roost serve`` process's environment."""


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {**CHEAP_PASSWORDS, **overrides}
    return Settings(data_dir=data_dir, secret_key=TEST_SECRET, env="dev", **values)


BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that builds an app runs once per storage backend: SQLite in ``tmp_path``
    and a fresh database on the session's throwaway PostgreSQL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'roost.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Components]]:
    """An app on ``settings``, started, and a client calling it in process; for tests that
    need apps of their own settings (the ``app`` and ``client`` fixtures build one)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as http:
            yield http, app.state.components


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def components(app: Starlette) -> Components:
    found: Components = app.state.components
    return found


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://roost") as http:
        yield http


async def insert_admin(components: Components, email: str = ADMIN_EMAIL) -> str:
    """An admin account, signed in: returns its access token."""
    await components.accounts.create_admin(email, ADMIN_PASSWORD)
    signed_in = await components.accounts.login(email, ADMIN_PASSWORD, TEST_DEVICE)
    return signed_in.access_token


@pytest.fixture
async def admin(components: Components, client: httpx.AsyncClient) -> httpx.AsyncClient:
    """``client`` with an admin token on every request."""
    token = await insert_admin(components)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A ``roost serve`` subprocess; ``kill()`` and ``start()`` keep its data folder."""

    data_dir: Path
    port: int
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the server and the CLI (``ROOST_DATABASE_URL``, ...)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def roost(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "roost", *args, "--data-dir", str(self.data_dir)],
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            check=True,
            env=self._env(),
            timeout=60,
        )
        return done.stdout.decode()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env["ROOST_LOG_LEVEL"] = "warning"
        env.update(self.env)
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir.parent / "server.log").open("ab") as log_file:  # the child keeps a copy
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "roost",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self._env(),
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir.parent / "server.log").read_text()
                raise RuntimeError(f"roost serve exited:\n{log}")
            try:
                if httpx.get(f"{self.url}/api/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("roost serve did not become ready in 30 s")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM to the main process alone, as ``docker stop`` or systemd with
        ``KillMode=mixed`` send it: the instance drains and stops. Its exit code."""
        assert self.process is not None, "not running"
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(data_dir=tmp_path / "data", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def module_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Like ``live_server``, shared by the tests of one module (its own fresh data folder)."""
    server = LiveServer(data_dir=tmp_path_factory.mktemp("live") / "data", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)
