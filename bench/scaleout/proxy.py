"""HAProxy running the shipped ``deploy/haproxy.cfg`` unchanged in front of 1 to 3 local
servers. Its addresses come from the environment (``ROOST_BIND``, ``ROOST_1`` ..
``ROOST_3``), as ``tests/scaleout/test_load_balancers.py`` starts it. The file names three
servers; an absent one is given a port nothing listens on, and the block starts only once
HAProxy's health checks have marked it DOWN (its log says so), so no request goes to it."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.client import HOST, free_port
from harness.process import serving
from harness.roost import REPO

CONFIG = REPO / "deploy" / "haproxy.cfg"
SLOTS = 3
"""The ``server`` lines of the shipped file (``roost1`` .. ``roost3``)."""
DOWN_TIMEOUT = 15.0
DOWN = re.compile(r"Server roost/(roost\d) is DOWN")


@dataclass
class Proxy:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    absent: list[str]
    """The server names given no server (``roost3`` for two servers)."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def pids(self) -> list[int]:
        return [self.process.pid]  # one process, its threads included in its CPU time

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def unexpected(self) -> list[str]:
        """What HAProxy logged besides the absent servers going DOWN at the start: a server
        that went down under load (its health check failed twice), a retry, an alert."""
        return [
            line
            for line in self.log().splitlines()
            if line.strip() and not ((m := DOWN.search(line)) and m.group(1) in self.absent)
        ]


def _wait_down(proxy: Proxy) -> None:
    deadline = time.monotonic() + DOWN_TIMEOUT
    while time.monotonic() < deadline:
        if set(proxy.absent) <= set(DOWN.findall(proxy.log())):
            return
        time.sleep(0.1)
    raise RuntimeError(f"HAProxy did not mark {proxy.absent} DOWN; its log:\n{proxy.log()}")


@contextmanager
def haproxy(ports: list[int], folder: Path) -> Iterator[Proxy]:
    """``haproxy -db -f deploy/haproxy.cfg`` on a free port before the servers on
    ``ports`` (1 to 3), until the block ends; its log in ``folder``."""
    if not 1 <= len(ports) <= SLOTS:
        raise ValueError(f"deploy/haproxy.cfg has {SLOTS} server lines, not {len(ports)}")
    folder.mkdir(parents=True, exist_ok=True)
    closed = free_port()  # nothing listens there: the absent servers' checks fail at once
    addresses = [*ports, *[closed] * (SLOTS - len(ports))]
    port = free_port()
    env = {
        **os.environ,
        "ROOST_BIND": f"{HOST}:{port}",
        **{f"ROOST_{n}": f"{HOST}:{p}" for n, p in enumerate(addresses, start=1)},
    }
    command = ["haproxy", "-db", "-f", str(CONFIG)]
    log_path = folder / "haproxy.log"
    with serving(command, port, log_path, env, ready="/api/ready") as process:
        absent = [f"roost{n}" for n in range(len(ports) + 1, SLOTS + 1)]
        proxy = Proxy(port, process, log_path, absent)
        _wait_down(proxy)
        yield proxy
