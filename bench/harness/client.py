"""A small blocking JSON client over one keep-alive connection, for seeding and probes."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Client:
    """One keep-alive connection; JSON in, (status, JSON) out. ``base`` is a path prefix
    (``/parse`` for Parse Server); ``headers`` go with every request."""

    def __init__(
        self,
        port: int,
        token: str = "",
        *,
        host: str = HOST,
        base: str = "",
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.token = token
        self.base = base
        self.headers = headers or {}
        self.last_headers: dict[str, str] = {}

    def call(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", **self.headers, **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, self.base + path, body=data, headers=sent)
        response = self.conn.getresponse()
        raw = response.read()
        self.last_headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode("utf-8", "replace")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until_ready(
    port: int, path: str, timeout: float, alive: Callable[[], bool] | None = None
) -> None:
    """Poll ``GET path`` until it answers 200; ``alive()`` False (the server exited) or
    the timeout raises ``RuntimeError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server on :{port} exited before it was ready")
        try:
            with Client(port, timeout=2) as client:
                status, _ = client.call("GET", path)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server on :{port} was not ready in {timeout:.0f} s")
