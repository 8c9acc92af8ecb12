"""The HTTP ceiling: the bare ASGI hello world (``bench/framework/apps.py``: ``bare``) on
Granian with the settings ``roost serve`` uses (``src/roost/cli/serve.py``).

Usage: python hello.py PORT WORKERS   (with bench/framework on PYTHONPATH)
"""

from __future__ import annotations

import sys

from granian import Granian
from granian.constants import Interfaces, Loops, RuntimeModes
from granian.log import LogLevels

HOST = "127.0.0.1"


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    Granian(
        "apps:bare",
        address=HOST,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        runtime_mode=RuntimeModes.st,  # as roost serve runs it
        log_level=LogLevels.warning,
        log_access=False,
        workers_kill_timeout=10,
        respawn_failed_workers=True,
    ).serve()


if __name__ == "__main__":
    main()
