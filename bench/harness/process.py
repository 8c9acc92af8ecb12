"""A helper server for one block: a Python script in its own session on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from harness.client import wait_until_ready

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


@contextmanager
def serving(
    command: list[str],
    port: int,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    ready: str = "/",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (stderr appended to ``log_path``) until it answers ``GET ready``
    with 200 on ``port``; at the block's end SIGTERM its whole session, SIGKILL if it
    lingers."""
    with log_path.open("ab") as log_file:  # the child keeps its own copy
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        wait_until_ready(port, ready, READY_TIMEOUT, lambda: process.poll() is None)
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
