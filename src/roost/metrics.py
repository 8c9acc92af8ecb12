"""The Prometheus metrics of one instance, served as text at ``GET /metrics``.

Each app has its own registry. Requests and rare events are counted straight into the
metrics. Work done often is counted where it is done, in plain integers (no lock on the
hot path: statements, cache reads, realtime events), and what changes by itself is read
where it lives (connection pools, realtime connections, the outbox): ``Metrics.sync()``
copies both into the metrics, before each scrape.

**Several worker processes** (``roost serve --workers N``): a scrape reaches one worker,
and must report the whole instance. ``prepare_worker_metrics``, in the main process
around the workers' lifetime, makes a fresh folder for prometheus_client's multiprocess
mode: each worker keeps its metrics in files there, and a scrape through any worker
reads them all (``MultiProcessCollector``). Counters and histograms add up; gauges add up
over the workers alive (``livesum``) but for the cache being up (``livemin``: all are)
and the outbox depth (``livemax``: each counts the same database). Each worker also
syncs every ``SYNC_SECONDS``, so what another worker counted in plain integers shows at
most that late; at its end it syncs once more and takes its gauges out. Counts of the
workers that ended stay in the sums: totals never go down.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Literal

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from roost import __version__
from roost.mail.outbox import OutboxWorker
from roost.realtime.service import Realtime
from roost.records.cache import RecordCache
from roost.settings import Settings
from roost.storage.base import STATEMENTS, Storage, Timing

SHARED_FOLDER = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's variable: the folder the worker processes share their metrics in."""
SYNC_SECONDS = 1.0
"""With several workers, how late a scrape may see another worker's plain counts."""
CACHE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STATEMENT_BUCKETS = (0.0001, 0.00025, 0.0005, *REQUEST_BUCKETS)
UNMATCHED = "unmatched"
"""The route label of a request no route matched (404, 405): paths are not labels."""

Mode = Literal["livesum", "livemin", "livemax"]

log = structlog.get_logger("roost.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._folder = os.environ.get(SHARED_FOLDER)
        if self._folder is not None:  # the files hold every metric: register none twice
            MultiProcessCollector(self.registry, self._folder)  # type: ignore[no-untyped-call]
        self._own = None if self._folder is not None else self.registry
        self._sources: list[Callable[[], None]] = [self._sync_statements]
        self._synced: dict[tuple[Counter, tuple[str, ...]], int] = {}
        """What each plain count was at the last sync, by counter and labels."""

        self.requests = self._counter(
            "roost_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
        )
        self.request_seconds = Histogram(
            "roost_http_request_seconds",
            "Time from a request's arrival to the end of its response, by method and route",
            ["method", "route"],
            registry=self._own,
            buckets=REQUEST_BUCKETS,
        )
        self.in_flight = self._gauge("roost_http_requests_in_flight", "HTTP requests being served")
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.rejections = self._counter(
            "roost_ratelimit_rejections",
            "Requests refused by a rate limit, by limit (auth-ip, auth-account) and route",
            ["limit", "route"],
        )

        self.statements = self._counter(
            "roost_db_statements", "Statements this process sent to the database"
        )
        self.statement_seconds = Histogram(
            "roost_db_statement_seconds",
            "Time of one database statement, by backend and kind (write: in a write"
            " transaction or changing the schema; read: any other)",
            ["backend", "kind"],
            registry=self._own,
            buckets=STATEMENT_BUCKETS,
        )
        self.pool_connections = self._gauge(
            "roost_db_pool_connections",
            "Database connections of a pool, by backend, pool and state (in_use, idle)",
            ["backend", "pool", "state"],
        )
        self.pool_max = self._gauge(
            "roost_db_pool_max_connections",
            "Most connections a pool opens, by backend and pool",
            ["backend", "pool"],
        )

        self.cache_seconds = Histogram(
            "roost_cache_read_seconds",
            "Time of one read through the cache (a record's tokens and entry, or a list"
            " page's tokens and entry), by tier",
            ["tier"],
            registry=self._own,
            buckets=CACHE_BUCKETS,
        )
        cache_labels = ["tier", "kind"]
        self.cache_counts = [
            self._counter(f"roost_cache_{name}", doc, cache_labels)
            for name, doc in (
                ("hits", "Reads served from the cache"),
                ("misses", "Reads the cache could not serve (loaded from the database)"),
                ("coalesced", "Reads that shared a database read already in flight"),
                ("errors", "Cache operations that failed or timed out"),
                ("bypassed", "Reads sent to the database while invalidations were pending"),
            )
        ]
        self.cache_up = self._gauge(
            "roost_cache_up",
            "1 when the cache's store answers and no invalidation is pending",
            ["tier"],
            mode="livemin",
        )

        self.realtime_connections = self._gauge(
            "roost_realtime_connections", "Realtime connections open (WebSocket and SSE)"
        )
        self.realtime_subscriptions = self._gauge(
            "roost_realtime_subscriptions", "Realtime subscriptions of the open connections"
        )
        self.events_delivered = self._counter(
            "roost_realtime_events_delivered", "Events queued for realtime clients"
        )
        self.events_dropped = self._counter(
            "roost_realtime_events_dropped",
            "Events not queued for a realtime client: its queue was full (a slow consumer)"
            " or its connection had closed",
        )
        self.realtime_closed = self._counter(
            "roost_realtime_closed",
            "Realtime connections closed, by close code (4009: a slow consumer)",
            ["code"],
        )
        self.outbox_depth = self._gauge(
            "roost_mail_outbox_depth",
            "Mail queued and not yet sent, retries included (the database's whole outbox)",
            mode="livemax",
        )
        Info("roost_build", "The running Roost", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )

    def _counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, doc, labels, registry=self._own)

    def _gauge(
        self, name: str, doc: str, labels: Sequence[str] = (), mode: Mode = "livesum"
    ) -> Gauge:
        return Gauge(name, doc, labels, registry=self._own, multiprocess_mode=mode)

    def request_done(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one answered request (``route``: its template; None when none matched)."""
        key = (method, route or UNMATCHED, status)
        series = self._series.get(key)
        if series is None:  # labels() costs a lock and a lookup: once per series
            series = self._series[key] = (
                self.requests.labels(key[0], key[1], str(status)),
                self.request_seconds.labels(key[0], key[1]),
            )
        series[0].inc()
        series[1].observe(seconds)

    def rejected(self, limit: str, route: str | None) -> None:
        """Count a request a rate limit refused."""
        self.rejections.labels(limit, route or UNMATCHED).inc()

    # what is read where it lives

    def watch_storage(self, storage: Storage) -> None:
        """Time the storage's statements, and follow its connection pools."""
        backend = storage.backend
        times = self.statement_seconds
        storage.timing = Timing(
            times.labels(backend, "read").observe, times.labels(backend, "write").observe
        )

        def sync() -> None:
            for pool in storage.pools():
                self.pool_connections.labels(backend, pool.name, "in_use").set(pool.in_use)
                self.pool_connections.labels(backend, pool.name, "idle").set(pool.idle)
                self.pool_max.labels(backend, pool.name).set(pool.max)

        self._sources.append(sync)

    def watch_cache(self, cache: RecordCache, tier: str) -> None:
        def sync() -> None:
            records, pages = cache.records, cache.pages
            by_kind = {
                "record": (
                    records.hits,
                    records.misses,
                    cache.coalesced,
                    records.errors,
                    records.bypassed,
                ),
                "page": (
                    pages.hits,
                    pages.misses + pages.early_refreshes,
                    pages.coalesced,
                    pages.errors,
                    0,
                ),
            }
            for kind, counts in by_kind.items():
                for counter, count in zip(self.cache_counts, counts, strict=True):
                    self._follow(counter, count, tier, kind)
            self.cache_up.labels(tier).set(float(cache.cache.healthy and cache.usable()))

        self._sources.append(sync)

    def watch_realtime(self, realtime: Realtime) -> None:
        def sync() -> None:
            self.realtime_connections.set(realtime.connections)
            self.realtime_subscriptions.set(realtime.hub.count)
            self._follow(self.events_delivered, realtime.deliveries.delivered)
            self._follow(self.events_dropped, realtime.deliveries.dropped)
            for code, count in realtime.closes.items():
                self._follow(self.realtime_closed, count, str(code))

        self._sources.append(sync)

    def watch_outbox(self, outbox: OutboxWorker) -> None:
        self._sources.append(lambda: self.outbox_depth.set(outbox.queued))

    def _sync_statements(self) -> None:
        self._follow(self.statements, STATEMENTS.count)

    def _follow(self, counter: Counter, count: int, *labels: str) -> None:
        """Add to ``counter`` what the plain ``count`` grew by since the last sync."""
        series = counter.labels(*labels) if labels else counter
        grown = count - self._synced.get((counter, labels), 0)
        if grown > 0:
            series.inc(grown)
            self._synced[counter, labels] = count

    def sync(self) -> None:
        """Copy the plain counts and the state of what is watched into the metrics."""
        for source in self._sources:
            source()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """With several worker processes, for the block's duration: ``sync()`` every
        ``SYNC_SECONDS``; at its end once more, and take this worker's gauges out. At its
        start, the gauges of workers killed before they could do so are taken out."""
        if self._folder is None:
            yield
            return
        _forget_killed_workers(self._folder)
        task = asyncio.create_task(self._sync_periodically(), name="roost-metrics")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            self.sync()
            mark_process_dead(os.getpid(), self._folder)  # type: ignore[no-untyped-call]

    async def _sync_periodically(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:  # a bug: say so, and keep the other series going
                log.exception("metrics_sync_failed")
            await asyncio.sleep(SYNC_SECONDS)

    def render(self) -> bytes:
        self.sync()
        return generate_latest(self.registry)


@contextmanager
def prepare_worker_metrics(settings: Settings) -> Iterator[None]:
    """In the main process of ``roost serve``, around the workers' lifetime: with several
    workers, a fresh folder for their metrics (see the module), removed at the end.

    The workers find it in ``PROMETHEUS_MULTIPROC_DIR``: a spawned worker's
    prometheus_client reads it when imported, and a forked one inherits the value class
    set here."""
    if settings.workers == 1:
        yield
        return
    folder = tempfile.mkdtemp(prefix="roost-metrics-")
    value_class = values.ValueClass
    os.environ[SHARED_FOLDER] = folder
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        values.ValueClass = value_class
        del os.environ[SHARED_FOLDER]
        shutil.rmtree(folder, ignore_errors=True)


def _forget_killed_workers(folder: str) -> None:
    """Take out the live gauges of every process that wrote some and no longer runs."""
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
        except PermissionError:  # another user's process of that number: it runs
            pass
