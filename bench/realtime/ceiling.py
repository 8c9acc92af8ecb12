"""The bare WebSocket app of ``bare.py`` on Granian, in its own session, for a block."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.client import free_port, wait_until_ready
from harness.cpu import session_pids
from harness.roost import VENV_PY

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0


@dataclass
class BareServer:
    process: subprocess.Popen[bytes]
    port: int

    def pids(self) -> list[int]:
        return session_pids(self.process.pid)


@contextmanager
def bare_server(log_path: Path) -> Iterator[BareServer]:
    port = free_port()
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [VENV_PY, str(HERE / "bare.py"), str(port)],
            env={**os.environ, "PYTHONPATH": str(HERE)},
            cwd=HERE,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        wait_until_ready(port, "/", READY_TIMEOUT, lambda: process.poll() is None)
        yield BareServer(process, port)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
