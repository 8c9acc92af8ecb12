"""The peer: Parse Server (``../shared/peers/parse-server``, seeded by its ``seed.js``)
driven through its REST API with the same workloads (``bench/lua/parse.lua``).

With its folder (``PEER_PARSE_DIR``) the harness restarts it with as many Node processes
as the Roost configuration it is compared with (``./start.sh --stop``, ``PARSE_WORKERS=N
./start.sh --bg``) and, before each round, deletes what earlier runs wrote (the objects
of the create workload, the sessions of the login workload) like the peer's own
``bench.sh``; without it, Parse is measured as it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from harness.client import Client
from harness.cpu import children_and_self

USERS = 100
OWNERS = 100
PAGE = 1000


@dataclass
class ParsePeer:
    url: str
    """Where Parse is mounted: ``http://127.0.0.1:1337/parse``."""
    app_id: str
    rest_key: str
    master_key: str
    password: str
    """The seeded users' password (``user_0`` .. ``user_99``)."""
    folder: Path
    """Where the Lua scripts' files go (ids.txt, users.txt)."""
    directory: Path | None = None
    _pg_root: str = ""

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.url)

    @property
    def root(self) -> str:
        """The server's root URL, which wrk wants (the scripts add the mount path)."""
        return f"{self.parts.scheme}://{self.parts.netloc}/"

    @property
    def prefix(self) -> str:
        return self.parts.path.rstrip("/")

    def client(self, *, master: bool = False) -> Client:
        key = {"X-Parse-Master-Key": self.master_key} if master else {}
        return Client(
            self.parts.port or 80,
            host=self.parts.hostname or "127.0.0.1",
            base=self.prefix,
            headers={
                "X-Parse-Application-Id": self.app_id,
                **(key or {"X-Parse-REST-API-Key": self.rest_key}),
            },
        )

    def lua_env(self) -> dict[str, str]:
        return {
            "PARSE_APP_ID": self.app_id,
            "PARSE_REST_KEY": self.rest_key,
            "PARSE_PREFIX": self.prefix,
        }

    # -- data ---------------------------------------------------------------------------

    def prepare(self) -> int:
        """ids.txt (every seeded object, owner_0..owner_99) and users.txt; the count."""
        ids: list[str] = []
        last = ""
        with self.client() as client:
            while True:
                where: dict[str, object] = {"owner": {"$regex": "^owner_"}}
                if last:
                    where["objectId"] = {"$gt": last}
                query = urllib.parse.urlencode(
                    {
                        "limit": PAGE,
                        "order": "objectId",
                        "keys": "objectId",
                        "where": json.dumps(where),
                    }
                )
                status, body = client.call("GET", f"/classes/Item?{query}")
                assert status == 200, (status, body)
                ids += [item["objectId"] for item in body["results"]]
                if len(body["results"]) < PAGE:
                    break
                last = ids[-1]
        assert ids, "Parse has no Item objects: run its seed.js first"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
        (self.folder / "users.txt").write_text(
            "".join(f"user_{n} {self.password}\n" for n in range(USERS))
        )
        return len(ids)

    def probe(self) -> None:
        """One request of each workload, checked."""
        first = (self.folder / "ids.txt").read_text().split("\n", 1)[0]
        where = urllib.parse.urlencode({"where": '{"owner":"owner_42"}', "limit": 20})
        with self.client() as client:
            status, body = client.call("GET", f"/classes/Item/{first}")
            assert status == 200 and body["objectId"] == first, ("read", status, body)
            status, body = client.call("GET", f"/classes/Item?{where}")
            assert status == 200 and len(body["results"]) == 20, ("list", status, body)
            status, body = client.call("POST", "/classes/Item", {"owner": "writer_0", "score": 1})
            assert status == 201, ("create", status, body)
            status, body = client.call("PUT", f"/classes/Item/{body['objectId']}", {"score": 2})
            assert status == 200, ("update", status, body)
            login = {"username": "user_0", "password": self.password}
            status, body = client.call("POST", "/login", login)
            assert status == 200 and body.get("sessionToken"), ("login", status, body)

    def version(self) -> str:
        with self.client(master=True) as client:
            status, body = client.call("GET", "/serverInfo")
        return str(body.get("parseServerVersion", "?")) if status == 200 else "?"

    # -- the process (with its folder only) ---------------------------------------------

    def _shell(self, script: str, **env: str) -> str:
        assert self.directory is not None
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.directory,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script} in {self.directory} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def running(self) -> int:
        """Node processes serving now: 1, or the cluster's workers (not its primary)."""
        pids = self.pids()
        return 1 if len(pids) <= 1 else len(pids) - 1

    def restart(self, workers: int) -> None:
        """Parse with ``workers`` Node processes (no-op without its folder, or if so)."""
        if self.directory is None or workers == self.running():
            return
        self._shell("./start.sh --stop && ./start.sh --bg", PARSE_WORKERS=str(workers))

    def clean(self) -> None:
        """Delete what the write workloads made (objects of writer_*, every session), then
        VACUUM ANALYZE, as the peer's bench.sh does; needs its folder."""
        if self.directory is None:
            return
        self._shell(
            '. ./env.sh && export PGPASSWORD="$PG_PASSWORD" && "$PG_BIN/psql" -h 127.0.0.1'
            ' -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -Atq -v ON_ERROR_STOP=1'
            ' -c "DELETE FROM \\"Item\\" WHERE owner LIKE \'writer\\_%\'"'
            ' -c "DELETE FROM \\"_Session\\""'
            ' -c "VACUUM ANALYZE \\"Item\\"" -c "VACUUM ANALYZE \\"_Session\\""'
        )

    def pids(self) -> list[int]:
        """The Node processes (the primary and its cluster workers), known with the folder."""
        if self.directory is None:
            return []
        try:
            pid = int((self.directory / "run" / "parse.pid").read_text().strip())
        except (OSError, ValueError):
            return []
        return children_and_self(pid)

    def postgres_pids(self) -> list[int]:
        """Parse's PostgreSQL (the postmaster of the peer's cluster and its backends)."""
        if self.directory is None:
            return []
        if not self._pg_root:
            self._pg_root = self._shell('. ./env.sh && echo "$PG_ROOT"').strip()
        try:
            postmaster = Path(self._pg_root) / "data" / "postmaster.pid"
            pid = int(postmaster.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return []
        return children_and_self(pid)
