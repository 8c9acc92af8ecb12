"""Three ``roost serve`` instances on one PostgreSQL and Redis behind a real load balancer:
what the scale-out tests share (imported as ``scaleout.cluster``; no fixtures here)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import CHEAP_PASSWORDS_ENV, LiveServer, free_port
from guarantees.live import SECRET
from metrics.scrape import scrape, value

DEPLOY = Path(__file__).parents[2] / "deploy"
METRICS_TOKEN = "metrics-token-of-the-scale-out-tests"
INSTANCES = 3

Proxy = Callable[[Path, int, list[LiveServer]], subprocess.Popen[bytes]]
"""Starts a load balancer: (its folder, its port, the instances) -> its process."""


@dataclass
class Cluster:
    url: str
    """The load balancer's."""
    servers: list[LiveServer]


def start_haproxy(folder: Path, port: int, servers: list[LiveServer]) -> subprocess.Popen[bytes]:
    """HAProxy running ``deploy/haproxy.cfg`` as shipped, its addresses from the environment."""
    env = {
        **os.environ,
        "ROOST_BIND": f"127.0.0.1:{port}",
        **{f"ROOST_{n}": f"127.0.0.1:{s.port}" for n, s in enumerate(servers, start=1)},
    }
    with (folder / "haproxy.log").open("ab") as log:  # the child keeps a copy
        return subprocess.Popen(
            ["haproxy", "-db", "-f", str(DEPLOY / "haproxy.cfg")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@contextmanager
def running_cluster(
    folder: Path, postgres_url: str, redis_url: str, proxy: Proxy = start_haproxy, **extra: str
) -> Iterator[Cluster]:
    """``INSTANCES`` instances sharing the database, cache and broker, behind ``proxy``;
    ``extra``: more settings, as ``ROOST_*`` variables (``drain_seconds="3"``)."""
    env = {
        "ROOST_SECRET_KEY": SECRET,
        "ROOST_DATABASE_URL": postgres_url,
        "ROOST_CACHE_URL": redis_url,
        "ROOST_BROKER_URL": redis_url,
        "ROOST_METRICS_TOKEN": METRICS_TOKEN,
        "ROOST_TRUSTED_PROXIES": '["127.0.0.1"]',
        **CHEAP_PASSWORDS_ENV,
        **{f"ROOST_{name.upper()}": value for name, value in extra.items()},
    }
    servers = [
        LiveServer(data_dir=folder / f"roost{n}" / "data", port=free_port(), env=env)
        for n in range(1, INSTANCES + 1)
    ]
    port = free_port()
    balancer = None
    try:
        for server in servers:
            server.start()
        balancer = proxy(folder, port, servers)
        wait_for_port(port, balancer)
        yield Cluster(f"http://127.0.0.1:{port}", servers)
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait(timeout=10)
        for server in servers:
            server.kill()


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, "the load balancer exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the load balancer did not listen on {port}")


def answered(server: LiveServer, **labels: str) -> float:
    """How many requests with these labels (``route``, ``status``...) the instance
    answered, from its own metrics."""
    return value(scrape(server.url, METRICS_TOKEN), "roost_http_requests_total", **labels)
