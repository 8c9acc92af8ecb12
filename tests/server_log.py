"""A ``LiveServer`` logging at ``info``, and the JSON lines it wrote to its stderr
(``server.log`` beside its data).

Imported as ``server_log`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import LiveServer, free_port

Line = dict[str, Any]


@contextmanager
def logging_server(folder: Path, env: dict[str, str]) -> Iterator[LiveServer]:
    """A ``roost serve`` with its data in ``folder``, ``env`` added to its environment and
    its access lines on (``LiveServer`` logs warnings only by default)."""
    live = LiveServer(folder / "data", free_port(), env={"ROOST_LOG_LEVEL": "info", **env})
    live.start()
    try:
        yield live
    finally:
        live.kill(signal.SIGTERM)


def log_text(server: LiveServer) -> str:
    return (server.data_dir.parent / "server.log").read_text()


def access_line(server: LiveServer, event: str, timeout: float = 10.0, **match: Any) -> Line:
    """The one ``event`` line whose fields include ``match``, waiting for it: the server
    writes an access line once the response has gone."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(text) for text in log_text(server).splitlines() if text[:1] == "{"]
        found = [
            line
            for line in lines
            if line["event"] == event and all(line.get(k) == v for k, v in match.items())
        ]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
