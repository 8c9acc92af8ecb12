"""``roost serve``: Granian (chosen by measurement, see docs/architecture.md) with N workers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import time
from typing import Any

from granian.constants import Interfaces, Loops, RuntimeModes
from granian.log import LogLevels
from granian.server.mp import MPServer
from starlette.applications import Starlette

from roost.components import open_components
from roost.http.app import DRAIN_SIGNAL, create_app
from roost.logs import configure_logging
from roost.metrics import prepare_worker_metrics
from roost.settings import Settings

CLOSE_FRAMES_SECONDS = 0.5
"""On SIGINT, how long the workers get to send realtime clients their close frames."""
OVERRIDES = {
    "host": "ROOST_HOST",
    "port": "ROOST_PORT",
    "workers": "ROOST_WORKERS",
    "role": "ROOST_ROLE",
    "data_dir": "ROOST_DATA_DIR",
}


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and roost.toml, with command-line flags on top.

    Flags are also written to the environment so that worker processes, which build their
    own settings, see the same values.
    """
    for field, variable in OVERRIDES.items():
        value = getattr(args, field, None)
        if value is not None:
            os.environ[variable] = str(value)
    return Settings()


def app_factory() -> Starlette:
    """What each worker process imports: the app, from the environment's settings."""
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # Everything imported so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which otherwise walk it all while holding the event loop
    # (with 10,000 realtime connections those passes took about half a second).
    gc.collect()
    gc.freeze()
    return app


async def _admin_hint(settings: Settings) -> None:
    async with open_components(settings) as components:
        admins = await components.accounts.count_admins()
    if admins == 0:
        print(
            "No admin yet. Create one with:\n"
            f"  roost admin create you@example.com --data-dir {settings.data_dir}",
            file=sys.stderr,
        )


class Server(MPServer):
    """Granian's process manager, draining before it stops (the sequence, for operators,
    is in ``deploy/README.md``): on the first SIGTERM or SIGINT each worker is told
    (``DRAIN_SIGNAL``) to answer ``/api/ready`` with 503 and to close realtime connections
    with "reconnect elsewhere"; the instance keeps serving for ``drain_seconds`` (SIGINT,
    from a terminal: a moment, for the close frames), then Granian stops accepting, lets
    requests in flight finish within ``shutdown_timeout_seconds``, and exits 0."""

    def __init__(self, *args: Any, drain_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain_seconds = drain_seconds
        self.draining = False

    def signal_handler_interrupt(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        if self.draining:
            super().signal_handler_interrupt()  # type: ignore[no-untyped-call]  # a 2nd: stop now
            return
        self.draining = True
        for worker in self.wrks:
            worker.interrupt_by_parent = True  # workers stopped with us are no crash
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.inner.pid, DRAIN_SIGNAL)
        seconds = self.drain_seconds if signum == signal.SIGTERM else CLOSE_FRAMES_SECONDS
        threading.Thread(target=self._stop_after, args=(seconds,), daemon=True).start()

    def _stop_after(self, seconds: float) -> None:
        """Stop once ``seconds`` have passed, or as soon as no worker is left (a signal to
        the whole process group reaches the workers too, and they stop at once)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(w.inner.is_alive() for w in self.wrks):
            time.sleep(0.05)
        super().signal_handler_interrupt()  # type: ignore[no-untyped-call]  # Granian's stop


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args).with_secret()  # invalid settings: see main()
    configure_logging(settings.log_level)  # start-up logs too (waiting for the database)
    asyncio.run(_admin_hint(settings))
    role = "" if settings.role == "all" else f" (role: {settings.role})"
    print(f"Roost listening on http://{settings.host}:{settings.port}{role}", file=sys.stderr)
    server = Server(
        "roost.cli.serve:app_factory",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        # Granian's multi-threaded runtime (its ASGI default) panicked when a WebSocket
        # client stopped reading; single-threaded serves HTTP as fast (make bench-quick).
        runtime_mode=RuntimeModes.st,
        log_level=LogLevels.warning,
        log_access=False,
        workers_kill_timeout=settings.shutdown_timeout_seconds,
        respawn_failed_workers=True,
        drain_seconds=settings.drain_seconds,
    )
    with prepare_worker_metrics(settings):  # one instance's metrics over all its workers
        server.serve()
    return 0
