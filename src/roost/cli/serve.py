"""``roost serve``: Granian (chosen by measurement, see docs/architecture.md) with N workers."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys

from granian import Granian
from granian.constants import Interfaces, Loops, RuntimeModes
from granian.log import LogLevels
from starlette.applications import Starlette

from roost.components import open_components
from roost.http.app import create_app
from roost.logs import configure_logging
from roost.settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 10
OVERRIDES = {
    "host": "ROOST_HOST",
    "port": "ROOST_PORT",
    "workers": "ROOST_WORKERS",
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


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args).with_secret()  # invalid settings: see main()
    asyncio.run(_admin_hint(settings))
    print(f"Roost listening on http://{settings.host}:{settings.port}", file=sys.stderr)
    Granian(
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
        workers_kill_timeout=GRACEFUL_SHUTDOWN_SECONDS,
        respawn_failed_workers=True,
    ).serve()
    return 0
