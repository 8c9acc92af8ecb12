"""Throwaway Redis servers for tests: ``redis-server`` on a free port, nothing on disk kept.

Load as a plugin from the root ``conftest.py`` (``pytest_plugins = ["redis_server"]``) for
the ``redis_server`` and ``redis_server_factory`` fixtures, or use ``RedisServer`` directly.
A missing ``redis-server`` binary fails the test with what to install; it never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARY = "redis-server"
INSTALL_HINT = (
    "redis-server is not on PATH; the Redis tests need it (they never skip). Install it:"
    " `apt-get install redis-server` (Debian/Ubuntu), `dnf install redis` (Fedora),"
    " `brew install redis` (macOS)."
)
START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` process; ``stop()`` then ``start()`` keeps its port (not its data)."""

    directory: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def _options(self) -> list[tuple[str, str]]:
        return [
            ("--port", str(self.port)),
            ("--bind", "127.0.0.1"),
            ("--save", ""),  # no snapshots and no append-only file: nothing kept on disk
            ("--appendonly", "no"),
            ("--dir", str(self.directory)),
            ("--daemonize", "no"),
            ("--protected-mode", "yes"),
        ]

    def start(self) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [binary, *(arg for option in self._options() for arg in option)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text()}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer in {START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop the server now (SIGKILL after 10 s of SIGTERM); a no-op when stopped."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


START_ATTEMPTS = 3
"""Fresh ports tried when another process takes the free port before Redis binds it."""


@pytest.fixture
def redis_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], RedisServer]]:
    """Start as many throwaway servers as a test needs; all are stopped after it."""
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        directory = tmp_path_factory.mktemp("redis")
        for attempt in range(START_ATTEMPTS):
            server = RedisServer(directory=directory)
            servers.append(server)
            try:
                server.start()
            except RuntimeError:
                if attempt == START_ATTEMPTS - 1 or "in use" not in server.log_path.read_text():
                    raise
            else:
                return server
        raise AssertionError("unreachable")

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis_server(redis_server_factory: Callable[[], RedisServer]) -> RedisServer:
    """A fresh, empty Redis server for this test alone."""
    return redis_server_factory()
