"""A throwaway three-master Redis Cluster for tests: ``redis-server --cluster-enabled yes``
on free ports, joined with ``redis-cli --cluster create``, nothing kept on disk after.

Load as a plugin from the root ``conftest.py`` (``pytest_plugins = [..., "redis_cluster"]``)
for the ``redis_cluster`` fixture. Creating a cluster takes about two seconds, so one is
started per session and each test gets it with every node running, the cluster ``ok`` and
no keys: a test may stop and start nodes, and the next test finds them all back. A
missing ``redis-server`` or ``redis-cli`` fails the test with what to install; it never
skips. Needs Redis 7 or later (``cluster-port``: each node's bus port is a free port too).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from redis_server import RedisServer, _free_port

CLI = "redis-cli"
INSTALL_HINT = (
    "redis-server and redis-cli (Redis 7 or later) must be on PATH; the Redis Cluster tests"
    " need them (they never skip). Install them: `apt-get install redis-server`"
    " (Debian/Ubuntu), `dnf install redis` (Fedora), `brew install redis` (macOS)."
)
MASTERS = 3
NODE_TIMEOUT_MS = 2000
"""``cluster-node-timeout``: a node silent this long is flagged as failing."""
READY_TIMEOUT = 30.0
"""Seconds the cluster may take to report ``cluster_state:ok`` on every node."""
START_ATTEMPTS = 3
"""Fresh ports tried when another process takes a free port before Redis binds it."""


@dataclass
class ClusterNode(RedisServer):
    """One cluster node: a ``RedisServer`` with cluster mode on and its own bus port."""

    bus_port: int = field(default_factory=_free_port)

    def _options(self) -> list[tuple[str, str]]:
        return [
            *super()._options(),
            ("--cluster-enabled", "yes"),
            ("--cluster-port", str(self.bus_port)),
            ("--cluster-config-file", str(self.directory / "nodes.conf")),
            ("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
        ]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


@dataclass
class RedisClusterServers:
    """Three master nodes; ``stop_node``/``start_node`` keep ports and slots (not data)."""

    directory: Path
    nodes: list[ClusterNode] = field(default_factory=list)
    slots: list[list[tuple[int, int]]] = field(default_factory=list)
    """The slot ranges each node serves, by node index."""

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def create(self) -> None:
        """Start the nodes, join them into one cluster, and wait until it is ``ok``."""
        for binary in ("redis-server", CLI):
            if shutil.which(binary) is None:
                pytest.fail(INSTALL_HINT, pytrace=False)
        for index in range(MASTERS):
            self.nodes.append(self._start_fresh_node(self.directory / f"node{index}"))
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=READY_TIMEOUT,
        )
        if created.returncode != 0:
            output = (created.stdout + created.stderr).decode(errors="replace")
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
        self.wait_until_ok()
        self.slots = [self._slots_of(node) for node in self.nodes]

    def _start_fresh_node(self, directory: Path) -> ClusterNode:
        for attempt in range(START_ATTEMPTS):
            node = ClusterNode(directory=directory)
            try:
                node.start()
            except RuntimeError:
                node.stop()
                if attempt == START_ATTEMPTS - 1 or "in use" not in node.log_path.read_text():
                    raise
            else:
                return node
        raise AssertionError("unreachable")

    def _slots_of(self, node: ClusterNode) -> list[tuple[int, int]]:
        with node.client() as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        own = [
            (int(start), int(end))
            for start, end, master, *_ in ranges
            if int(master[1]) == node.port
        ]
        return own

    def node_of(self, key: str) -> int:
        """The index of the node that serves ``key``."""
        slot = key_slot(key.encode())
        for index, ranges in enumerate(self.slots):
            if any(start <= slot <= end for start, end in ranges):
                return index
        raise AssertionError(f"no node serves slot {slot}")

    def key_on(self, index: int, prefix: str = "key") -> str:
        """A key served by node ``index``: ``prefix`` with a number appended."""
        return next(f"{prefix}{n}" for n in range(100_000) if self.node_of(f"{prefix}{n}") == index)

    def stop_node(self, index: int) -> None:
        self.nodes[index].stop()

    def start_node(self, index: int) -> None:
        """Start a stopped node again (it answers PING; the cluster may not be ``ok`` yet)."""
        self.nodes[index].start()

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()

    def start_all(self) -> None:
        """Start every stopped node and wait until the cluster is ``ok`` again."""
        for node in self.nodes:
            if node.process is None:
                node.start()
        self.wait_until_ok()

    def wait_until_ok(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster was not ok within {READY_TIMEOUT} s")
            time.sleep(0.05)

    @staticmethod
    def _ok(node: ClusterNode) -> bool:
        try:
            with node.client() as client:
                info = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False
        return bool(info.get("cluster_state") == "ok")

    def flush(self) -> None:
        """Delete every key on every node."""
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def close(self) -> None:
        """Stop every node (process groups) and delete the cluster's folder."""
        self.stop_all()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def _shared_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(directory=tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster(_shared_redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's cluster, every node running, ``cluster_state:ok`` and empty."""
    _shared_redis_cluster.start_all()
    _shared_redis_cluster.flush()
    return _shared_redis_cluster
