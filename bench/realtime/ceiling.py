"""The bare WebSocket app of ``bare.py`` on Granian, in its own session, for a block."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.client import free_port
from harness.cpu import session_pids
from harness.process import serving
from harness.roost import VENV_PY

HERE = Path(__file__).resolve().parent


@dataclass
class BareServer:
    process: subprocess.Popen[bytes]
    port: int

    def pids(self) -> list[int]:
        return session_pids(self.process.pid)


@contextmanager
def bare_server(log_path: Path) -> Iterator[BareServer]:
    port = free_port()
    command = [VENV_PY, str(HERE / "bare.py"), str(port)]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    with serving(command, port, log_path, env, cwd=HERE) as process:
        yield BareServer(process, port)
