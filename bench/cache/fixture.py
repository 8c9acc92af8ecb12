"""The data of the cache bench, seeded over the HTTP API: collection ``items`` that anyone
may list and view (rules ``""``, list pages cached: ``options.cache_lists``), RECORDS
records in CATEGORIES categories with a random ``score``; one signed-up user whose token
the load carries; the hot set of record ids and the list pages the load asks for."""

from __future__ import annotations

import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import dataset
from harness.client import Client

if TYPE_CHECKING:
    from postgres_server import PostgresServer

COLLECTION = "items"  # its table is r_items: the SQL of harness.backends.SQL["postgres"]["a"]
RECORDS_PATH = f"/api/collections/{COLLECTION}/records"
PAGE = 20
BATCH = 100  # the API's most operations per batch
SEED_CLIENTS = 4
SEED = 20261129
DEFINITION: dict[str, Any] = {
    "name": COLLECTION,
    "fields": {
        "category": {"type": "string", "max_length": 20},
        "score": {"type": "integer"},
        "title": {"type": "string", "max_length": 200},
    },
    "indexes": [{"fields": ["category", "score"]}],
    "rules": {"list": "", "view": "", "create": None, "update": None, "delete": None},
    "options": {"cache_lists": True},
}
USER_EMAIL = "reader@example.com"


def list_path(category: str) -> str:
    """The list page of one category, best scores first."""
    query = urllib.parse.urlencode(
        {"filter": f'category = "{category}"', "sort": "-score", "limit": PAGE}
    )
    return f"{RECORDS_PATH}?{query}"


@dataclass
class Data:
    folder: Path
    admin_token: str = ""
    user_token: str = ""
    ids: list[str] = field(default_factory=list)
    hot: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def read_paths(self) -> Path:
        return self.folder / "reads.txt"

    @property
    def list_paths(self) -> Path:
        return self.folder / "lists.txt"

    @property
    def hot_ids(self) -> Path:
        """The DB ceiling's keys for the record read: the hot set, one id a line."""
        return self.folder / "hot.txt"

    @property
    def category_keys(self) -> Path:
        """The DB ceiling's keys for the list page: each category as its jsonb text."""
        return self.folder / "categories.txt"

    def write_files(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.read_paths.write_text("".join(f"{RECORDS_PATH}/{i}\n" for i in self.hot))
        self.list_paths.write_text("".join(f"{list_path(c)}\n" for c in self.categories))
        self.hot_ids.write_text("".join(f"{i}\n" for i in self.hot))
        self.category_keys.write_text("".join(f'"{c}"\n' for c in self.categories))


def _sign_in(port: int, email: str) -> str:
    with Client(port) as client:
        status, body = client.call(
            "POST", "/api/auth/login", {"email": email, "password": dataset.PASSWORD}
        )
    assert status == 200, (status, body)
    token: str = body["access_token"]
    return token


def seed(port: int, folder: Path, *, records: int, hot: int, categories: int) -> Data:
    """Seed a fresh Roost on ``port`` whose admin ``dataset.ADMIN_EMAIL`` exists."""
    started = time.monotonic()
    data = Data(folder=folder, admin_token=_sign_in(port, dataset.ADMIN_EMAIL))
    data.categories = [f"c{i}" for i in range(categories)]
    with Client(port, data.admin_token) as admin:
        status, body = admin.call("POST", "/api/collections", DEFINITION)
        assert status == 201, (status, body)
    with Client(port) as client:
        credentials = {"email": USER_EMAIL, "password": dataset.PASSWORD}
        status, body = client.call("POST", "/api/auth/signup", credentials)
        assert status == 201, (status, body)
        data.user_token = body["access_token"]
    rng = random.Random(SEED)
    scores = [rng.randrange(1_000_000) for _ in range(records)]
    local = threading.local()

    def send(start: int) -> list[str]:
        if not hasattr(local, "client"):
            local.client = Client(port, data.admin_token)
        operations = [
            {
                "action": "create",
                "collection": COLLECTION,
                "data": {
                    "category": data.categories[i % categories],
                    "score": scores[i],
                    "title": f"item {i}",
                },
            }
            for i in range(start, min(start + BATCH, records))
        ]
        status, body = local.client.call("POST", "/api/batch", {"operations": operations})
        ok = status == 200 and all(r["status"] == 201 for r in body["results"])
        assert ok, (status, str(body)[:300])
        return [r["record"]["id"] for r in body["results"]]

    with ThreadPoolExecutor(SEED_CLIENTS) as pool:
        for chunk in pool.map(send, range(0, records, BATCH)):
            data.ids += chunk
    data.hot = rng.sample(data.ids, min(hot, len(data.ids)))
    data.seconds = time.monotonic() - started
    data.write_files()
    return data


def answers(port: int, data: Data, paths: list[str]) -> dict[str, Any]:
    """{path: JSON body} of a GET of each path as the user; raises unless all are 200."""
    found = {}
    with Client(port, data.user_token) as client:
        for path in paths:
            status, body = client.call("GET", path)
            assert status == 200, (path, status, body)
            found[path] = body
    return found


def all_paths(data: Data) -> list[str]:
    """Every path the load asks for: each hot record and each list page."""
    return [*data.read_paths.read_text().split(), *data.list_paths.read_text().split()]


def probe_paths(data: Data, count: int = 20) -> list[str]:
    """The first ``count`` records of the hot set and every list page."""
    reads = [f"{RECORDS_PATH}/{i}" for i in data.hot[:count]]
    return reads + [list_path(c) for c in data.categories]


def check(found: dict[str, Any], data: Data) -> None:
    """The answers are right: each record is the one asked for, each list page has PAGE
    items of its category, best score first, and a cursor to the next page."""
    for path, body in found.items():
        if "?" not in path:
            assert body["id"] == path.rsplit("/", 1)[1], (path, body)
            continue
        category = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["filter"][0]
        items = body["items"]
        scores = [item["score"] for item in items]
        assert len(items) == PAGE and body["next_cursor"], (path, body)
        assert {f'category = "{item["category"]}"' for item in items} == {category}, path
        assert scores == sorted(scores, reverse=True), (path, scores)


LOGGED = re.compile(r"\[(\d+)\] LOG:\s+duration: \S+ ms\s+(?:execute [^:]+|statement): (.*)$")
PARAMETERS = re.compile(r"\[(\d+)\] DETAIL:\s+parameters: (.*)$")
LITERAL = re.compile(r"\$(\d+) = ('(?:[^']|'')*'|NULL)")


def capture_list_sql(pg: PostgresServer, request: Callable[[], object]) -> str:
    """The SQL PostgreSQL ran for the list page of ``request()`` (from its log, with
    ``log_min_duration_statement = 0`` meanwhile), its parameters inlined but the
    category's, which becomes ``$1`` (the DB ceiling binds it from its keys)."""
    pg.psql("ALTER SYSTEM SET log_min_duration_statement = 0")
    pg.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)  # backends read the new setting before their next command
    offset = pg.log_path.stat().st_size
    try:
        request()
        time.sleep(0.5)
        end = pg.log_path.stat().st_size
    finally:
        pg.psql("ALTER SYSTEM RESET log_min_duration_statement")
        pg.psql("SELECT pg_reload_conf()")
    with pg.log_path.open("rb") as log_file:
        log_file.seek(offset)
        lines = log_file.read(end - offset).decode("utf-8", "replace").splitlines()
    sql, params = _list_query(lines)
    category = [n for n, v in params.items() if v.startswith("'\"c")]
    assert len(category) == 1, (sql, params)
    values = {**params, category[0]: "$1"}
    return re.sub(r"\$(\d+)\b", lambda m: values[int(m.group(1))], sql)


def _list_query(lines: list[str]) -> tuple[str, dict[int, str]]:
    """The list page's statement in PostgreSQL's log lines, and its parameters."""
    for i, line in enumerate(lines):
        found = LOGGED.search(line)
        if not found or f'FROM "r_{COLLECTION}"' not in found.group(2) or "LIMIT" not in line:
            continue
        params: dict[int, str] = {}
        for later in lines[i + 1 : i + 4]:
            more = PARAMETERS.search(later)
            if more and more.group(1) == found.group(1):
                params = {int(n): v for n, v in LITERAL.findall(more.group(2))}
                break
        return found.group(2), params
    raise RuntimeError("the list query is not in the PostgreSQL log:\n" + "\n".join(lines))
