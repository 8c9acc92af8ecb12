"""One ``roost serve`` process (all its workers in one session) on a throwaway data folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.client import HOST, free_port, wait_until_ready
from harness.cpu import session_pids

REPO = Path(__file__).resolve().parents[2]
VENV_PY = os.environ.get("VENV_PY", str(REPO / ".venv/bin/python"))
"""The project venv's python (Roost, Granian, asyncpg, aiosqlite, py-spy)."""
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
ERROR_MARKERS = ("Traceback", '"level": "error"', '"level": "critical"', "[ERROR]")
"""Lines of the server's log that count as errors (see ``RoostServer.errors``)."""
WARNING_MARKERS = ('"level": "warning"', "[WARNING]")


@dataclass
class RoostServer:
    """``python -m roost serve --workers N`` in its own session, stderr in ``log_path``.

    ``environment`` adds to (and wins over) the bench's defaults: a day-long access token
    (outlives the run), no per-request access log line, no ./roost.toml. Any other
    ``ROOST_*`` variable of the caller's environment reaches Roost too.
    """

    folder: Path
    environment: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "roost.log"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ROOST_DATA_DIR": str(self.data_dir),
            "ROOST_LOG_LEVEL": "warning",  # no access log line per request
            "ROOST_CONFIG": str(self.folder / "no-roost.toml"),  # ignore any ./roost.toml
            "ROOST_ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600),  # outlives the run
            **self.environment,
        }

    def cli(self, *args: str, stdin: str = "") -> str:
        """``roost ARGS --data-dir D`` with the server's environment; its stdout."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [VENV_PY, "-m", "roost", *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.folder,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"roost {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Start and wait until ``GET /api/ready`` answers 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            VENV_PY,
            "-m",
            "roost",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log_path.open("ab") as log_file:  # the child keeps its own copy
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=self.folder,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        process = self.process
        try:
            wait_until_ready(self.port, "/api/ready", READY_TIMEOUT, lambda: process.poll() is None)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}; its log:\n{self.log()}") from None

    def stop(self) -> None:
        """SIGTERM to the session (the main process and every worker), SIGKILL after
        STOP_TIMEOUT."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)
        except ProcessLookupError:
            pass

    def pids(self) -> list[int]:
        """Every process of the server: the Granian main process and its workers."""
        return session_pids(self.process.pid) if self.process is not None else []

    def log(self) -> str:
        """What the server wrote to stderr since its last start."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._log_offset)
            return log_file.read().decode("utf-8", "replace")

    def errors(self) -> list[str]:
        """Log lines since the last start that look like errors (tracebacks, error level)."""
        return [line for line in self.log().splitlines() if any(m in line for m in ERROR_MARKERS)]

    def warnings(self) -> list[str]:
        """Log lines since the last start at warning level."""
        return [line for line in self.log().splitlines() if any(m in line for m in WARNING_MARKERS)]


STARTED = time.monotonic()


def log(message: str) -> None:
    """``message`` on stderr, after the seconds since the harness was imported."""
    print(f"[{time.monotonic() - STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)
