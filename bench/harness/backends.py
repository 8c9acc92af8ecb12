"""Where Roost keeps its data in a configuration: the embedded SQLite file, or a throwaway
durable PostgreSQL (``tests/postgres_server.py``) tuned like the Parse peer's cluster;
optionally a throwaway Redis (cache and broker)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cpu import children_and_self
from harness.roost import REPO, RoostServer

if TYPE_CHECKING:
    from postgres_server import PostgresServer
    from redis_server import RedisServer

sys.path.insert(0, str(REPO / "tests"))  # postgres_server.py, redis_server.py

DATABASE = "roost"  # the database start_server() creates
PGBENCH_DATABASE = "pgbench"
PEER_SETTINGS = {"shared_buffers": "512MB", "effective_cache_size": "2GB", "work_mem": "8MB"}
"""What the Parse peer's ``services.sh`` adds to its cluster's postgresql.conf; the same
here, so that Roost and Parse run on equally configured PostgreSQL (both durable)."""
COLUMNS = "id, owner, created, updated, version, data"
SQL = {  # the ceiling's statements: the rows of one (a) and one (b) request, one query each
    "sqlite": {
        "a": f"SELECT {COLUMNS} FROM r_items WHERE id = ?",
        "b": f"SELECT {COLUMNS} FROM r_items WHERE owner = ? ORDER BY id LIMIT 21",
    },
    "postgres": {
        "a": f"SELECT {COLUMNS} FROM r_items WHERE id = $1",
        "b": f"SELECT {COLUMNS} FROM r_items WHERE owner = $1 ORDER BY id LIMIT 21",
    },
}
POOL = {"sqlite": 4, "postgres": 10}
"""Connections per worker, as Roost's defaults (``sqlite_readers``, ``postgres_pool_max``)."""


@dataclass
class Backend:
    name: str  # "sqlite" or "postgres"
    folder: Path
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    environment: dict[str, str] = field(default_factory=dict)
    """What Roost needs to use this backend (``ROOST_DATABASE_URL``, ...)."""

    @property
    def label(self) -> str:
        return self.name + ("+redis" if self.redis is not None else "")

    def target(self, server: RoostServer) -> str:
        """What the database ceiling connects to: the SQLite file or the PostgreSQL URL."""
        if self.pg is not None:
            return self.pg.url
        return str(server.data_dir / "roost.db")

    def groups(self, server: RoostServer | None) -> dict[str, Callable[[], list[int]]]:
        """The processes whose CPU a run reports: the server's (Roost), PostgreSQL's."""
        found: dict[str, Callable[[], list[int]]] = {}
        if server is not None:
            found["server"] = server.pids
        if self.pg is not None:
            pg = self.pg
            found["postgres"] = lambda: children_and_self(pg.pid)
        return found

    def sql(self, statement: str) -> str:
        assert self.pg is not None
        return self.pg.psql(statement, DATABASE).strip()

    def analyze(self) -> None:
        """After seeding: statistics for the planner (PostgreSQL; SQLite needs none here)."""
        if self.pg is not None:
            self.sql("VACUUM ANALYZE r_items")

    def versions(self, server: RoostServer) -> list[tuple[str, str, int]]:
        """(owner, id, version) of every record of ``items``, read from the database (the
        PATCH workload starts each run from the current versions)."""
        query = "SELECT owner, id, version FROM r_items"
        if self.pg is not None:
            lines = self.pg.psql(f"COPY ({query}) TO STDOUT", DATABASE).splitlines()
            rows = [line.split("\t") for line in lines if line]
            return [(owner, id_, int(version)) for owner, id_, version in rows]
        import sqlite3

        uri = f"file:{server.data_dir / 'roost.db'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            return [(o, i, int(v)) for o, i, v in db.execute(query)]

    def version(self) -> str:
        if self.pg is not None:
            return "PostgreSQL " + self.sql("SHOW server_version")
        import sqlite3

        return "SQLite " + sqlite3.sqlite_version


def _tune(pg: PostgresServer) -> None:
    for name, value in PEER_SETTINGS.items():
        pg.psql(f"ALTER SYSTEM SET {name} = '{value}'")
    pg.stop()
    pg.start()


@contextmanager
def open_backend(name: str, *, redis: bool = False, keep: bool = False) -> Iterator[Backend]:
    """A throwaway backend (and Redis with ``redis``) in a temporary folder, destroyed on
    the way out (with ``keep``, the folder stays; PostgreSQL and Redis are stopped)."""
    folder = Path(tempfile.mkdtemp(prefix=f"roost-bench-{name}-"))
    backend = Backend(name=name, folder=folder)
    try:
        if name == "postgres":
            from postgres_server import start_server

            backend.pg = start_server(durable=True)
            _tune(backend.pg)
            backend.environment["ROOST_DATABASE_URL"] = backend.pg.url
        elif name != "sqlite":
            raise ValueError(f"unknown backend {name!r}: sqlite or postgres")
        if redis:
            from redis_server import RedisServer

            backend.redis = RedisServer(directory=folder / "redis")
            backend.redis.start()
            backend.environment["ROOST_CACHE_URL"] = backend.redis.url
            backend.environment["ROOST_BROKER_URL"] = backend.redis.url
        yield backend
    finally:
        if backend.redis is not None:
            backend.redis.stop()
        if backend.pg is not None:
            backend.pg.destroy()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
