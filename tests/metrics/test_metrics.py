"""``GET /metrics`` of a real ``roost serve``: every series an operator watches is there
after the work it counts (a request, statements, a realtime subscription that gets an
event, a sign-in refused by a rate limit, mail waiting in the outbox), the text parses as
Prometheus reads it, the shipped Grafana dashboard queries only series that exist, and
with ``--workers 2`` a scrape through either worker counts the requests of both.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.samples import Sample

from conftest import CHEAP_PASSWORDS_ENV, LiveServer, free_port
from guarantees.live import ADMIN_EMAIL, SECRET, admin_token, create_collection
from metrics.scrape import scrape, value
from postgres_server import PostgresServer
from realtime.client import RealtimeClient

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana-dashboard.json"
METRICS_TOKEN = "metrics-token-of-the-metrics-tests"
POOL_MAX = 7
STRANGER = "nobody@example.com"


def start(folder: Path, workers: int = 1, **env: str) -> LiveServer:
    server = LiveServer(
        data_dir=folder / "data",
        port=free_port(),
        workers=workers,
        env={
            "ROOST_SECRET_KEY": SECRET,
            "ROOST_METRICS_TOKEN": METRICS_TOKEN,
            **CHEAP_PASSWORDS_ENV,
            **env,
        },
    )
    server.start()
    return server


def eventually(server: LiveServer, check: Callable[[list[Sample]], bool]) -> list[Sample]:
    """Scrape until ``check`` holds (counts that are synced or polled show a moment late)."""
    deadline = time.monotonic() + 10
    while not check(samples := scrape(server.url, METRICS_TOKEN)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return samples


@dataclass
class Exercised:
    """What the module's server served, scraped while a realtime client was connected
    (``during``) and after everything (``after``)."""

    during: list[Sample] = field(default_factory=list)
    after: list[Sample] = field(default_factory=list)


async def exercise(server: LiveServer, into: Exercised) -> None:
    token = admin_token(server)  # a sign-in: one auth-account hit for the admin
    auth = {"Authorization": f"Bearer {token}"}
    create_collection(server.url, token, {"name": "posts", "fields": {"n": {"type": "integer"}}})
    async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
        assert (await http.get("/api/health")).status_code == 200
        async with RealtimeClient.connect(server.url, token) as client:
            await client.subscribe("s1", "posts")
            created = await http.post("/api/collections/posts/records", json={"n": 1})
            assert created.status_code == 201, created.text
            await client.wait_events("s1", 1)
            records = "/api/collections/posts/records"
            for _ in range(2):  # a miss, then a hit
                assert (await http.get(f"{records}/{created.json()['id']}")).status_code == 200
            into.during = eventually(
                server, lambda s: value(s, "roost_realtime_events_delivered_total") == 1
            )
        forgot = await http.post("/api/auth/password/forgot", json={"email": ADMIN_EMAIL})
        assert forgot.status_code == 202, forgot.text  # mail the dead SMTP server never takes
        for status in (401, 401, 429):  # auth_rate_limit_account is 2/minute
            login = {"email": STRANGER, "password": "not-the-password"}
            assert (await http.post("/api/auth/login", json=login)).status_code == status
    into.after = eventually(
        server,
        lambda s: (
            value(s, "roost_mail_outbox_depth") == 1
            and value(s, "roost_realtime_closed_total") == 1
        ),
    )


@pytest.fixture(scope="module")
def exercised(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Exercised]:
    """One server on PostgreSQL (with the in-process cache, and mail going nowhere), put
    through every kind of work the metrics count."""
    database = postgres_server.create_database()
    server = start(
        tmp_path_factory.mktemp("metrics"),
        ROOST_DATABASE_URL=postgres_server.url_for(database),
        ROOST_CACHE_URL="memory://",
        ROOST_POSTGRES_POOL_MAX=str(POOL_MAX),
        ROOST_SMTP_URL=f"smtp://127.0.0.1:{free_port()}",
        ROOST_AUTH_RATE_LIMIT_ACCOUNT="2/minute",
    )
    try:
        found = Exercised()
        asyncio.run(exercise(server, found))
        yield found
    finally:
        server.kill()
        postgres_server.drop_database(database)


SERIES = {
    "roost_http_requests_total",
    "roost_http_request_seconds_bucket",
    "roost_http_requests_in_flight",
    "roost_ratelimit_rejections_total",
    "roost_db_statements_total",
    "roost_db_statement_seconds_bucket",
    "roost_db_pool_connections",
    "roost_db_pool_max_connections",
    "roost_cache_hits_total",
    "roost_cache_misses_total",
    "roost_cache_coalesced_total",
    "roost_cache_errors_total",
    "roost_cache_bypassed_total",
    "roost_cache_read_seconds_bucket",
    "roost_cache_up",
    "roost_realtime_connections",
    "roost_realtime_subscriptions",
    "roost_realtime_events_delivered_total",
    "roost_realtime_events_dropped_total",
    "roost_realtime_closed_total",
    "roost_mail_outbox_depth",
    "roost_build_info",
}


def test_every_series_is_served_after_the_work_it_counts(exercised: Exercised) -> None:
    during, after = exercised.during, exercised.after
    assert SERIES - {sample.name for sample in after} == set()
    http = {"method": "GET", "route": "/api/health", "status": "200"}
    assert value(after, "roost_http_requests_total", **http) == 1
    assert value(after, "roost_http_request_seconds_count", method="GET", route="/api/health") == 1
    assert value(after, "roost_http_requests_in_flight") == 1  # the scrape itself

    for kind in ("read", "write"):
        timed = {"backend": "postgresql", "kind": kind}
        assert value(after, "roost_db_statement_seconds_count", **timed) > 0
        assert value(after, "roost_db_statement_seconds_bucket", le="+Inf", **timed) > 0
    primary = {"backend": "postgresql", "pool": "primary"}
    assert value(after, "roost_db_pool_max_connections", **primary) == POOL_MAX
    assert 1 <= value(after, "roost_db_pool_connections", **primary) <= POOL_MAX
    assert value(after, "roost_db_pool_connections", state="in_use", **primary) >= 0
    assert value(after, "roost_db_pool_connections", state="idle", **primary) >= 0
    assert value(after, "roost_db_statements_total") > 0

    assert value(during, "roost_realtime_connections") == 1
    assert value(during, "roost_realtime_subscriptions") == 1
    assert value(after, "roost_realtime_connections") == 0
    assert value(after, "roost_realtime_subscriptions") == 0
    assert value(after, "roost_realtime_events_delivered_total") == 1
    assert value(after, "roost_realtime_events_dropped_total") == 0
    assert value(after, "roost_realtime_closed_total", code="1000") == 1  # the client left

    assert value(after, "roost_mail_outbox_depth") == 1
    refused = {"limit": "auth-account", "route": "/api/auth/login"}
    assert value(after, "roost_ratelimit_rejections_total", **refused) == 1
    assert value(after, "roost_http_requests_total", route="/api/auth/login", status="429") == 1

    cache = {"tier": "memory", "kind": "record"}
    assert value(after, "roost_cache_hits_total", **cache) == 1
    assert value(after, "roost_cache_misses_total", **cache) == 1
    assert value(after, "roost_cache_up", tier="memory") == 1
    assert value(after, "roost_build_info") == 1


PROMQL_NAME = re.compile(r"\broost_[a-z0-9_]+\b")


def values_of(tree: object, key: str) -> Iterator[object]:
    """Every value under ``key`` anywhere in a JSON document."""
    if isinstance(tree, dict):
        for name, item in tree.items():
            if name == key:
                yield item
            yield from values_of(item, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from values_of(item, key)


def test_the_dashboard_queries_only_series_the_server_serves(exercised: Exercised) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [*values_of(dashboard, "expr"), *values_of(dashboard, "query")]
    expressions = [query for query in queries if isinstance(query, str)]
    assert len(expressions) >= 15
    used = {name for expression in expressions for name in PROMQL_NAME.findall(expression)}
    served = {sample.name for sample in exercised.during + exercised.after}
    assert used - served == set()
    wanted = SERIES - {
        "roost_db_statements_total",
        "roost_cache_coalesced_total",
        "roost_cache_errors_total",
        "roost_cache_bypassed_total",
        "roost_cache_read_seconds_bucket",
    }
    assert wanted - used == set()
    sources = [str(source) for source in values_of(dashboard["panels"], "datasource")]
    assert sources and all("${datasource}" in source for source in sources)


def test_with_two_workers_a_scrape_through_either_counts_every_request(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "tmp"  # where the main process makes the workers' metrics folder
    temp.mkdir()
    server = start(tmp_path, workers=2, TMPDIR=str(temp), ROOST_DRAIN_SECONDS="0")
    try:
        assert len(list(temp.glob("roost-metrics-*"))) == 1
        sent = 40
        for _ in range(sent):  # a new connection each: the kernel spreads them over both
            assert httpx.get(f"{server.url}/api/health").status_code == 200
        health = {"method": "GET", "route": "/api/health", "status": "200"}
        for _ in range(6):
            samples = scrape(server.url, METRICS_TOKEN)
            assert value(samples, "roost_http_requests_total", **health) == sent
        # each worker's own pool, synced into the shared sum: both are counted
        writers = {"backend": "sqlite", "pool": "writer"}
        samples = eventually(
            server, lambda s: value(s, "roost_db_pool_max_connections", **writers) == 2
        )
        assert value(samples, "roost_db_pool_max_connections", **writers) == 2
        assert value(samples, "roost_http_requests_in_flight") == 1

        # a worker killed outright leaves its gauges behind; its successor takes them out
        (folder,) = temp.glob("roost-metrics-*")
        workers = {path.stem.rsplit("_", 1)[1] for path in folder.glob("gauge_livesum_*")}
        killed = min(workers)
        os.kill(int(killed), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = {path.stem.rsplit("_", 1)[1] for path in folder.glob("gauge_livesum_*")}
            if killed not in now and len(now) == 2:
                break
            time.sleep(0.1)
        assert killed not in now and len(now) == 2, now
        samples = eventually(
            server, lambda s: value(s, "roost_db_pool_max_connections", **writers) == 2
        )
        assert value(samples, "roost_db_pool_max_connections", **writers) == 2
        assert value(samples, "roost_http_requests_total", **health) == sent  # kept
    finally:
        server.kill(signal.SIGTERM)
    assert list(temp.glob("roost-metrics-*")) == []
