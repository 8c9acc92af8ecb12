"""The Prometheus metrics of one instance, served as text at ``GET /metrics``.

Each app has its own registry. The counters live where the work is done, as plain
integers (no lock on the hot path); collectors read them when Prometheus scrapes.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from roost import __version__
from roost.records.cache import RecordCache
from roost.storage.base import STATEMENTS

CACHE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED = "unmatched"
"""The route label of a request no route matched (404, 405): paths are not labels."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.cache_seconds = Histogram(
            "roost_cache_read_seconds",
            "Time of one read through the cache (a record's tokens and entry, or a list"
            " page's tokens and entry), by tier",
            ["tier"],
            registry=self.registry,
            buckets=CACHE_BUCKETS,
        )
        self.requests = Counter(
            "roost_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "roost_http_request_seconds",
            "Time from a request's arrival to the end of its response, by method and route",
            ["method", "route"],
            registry=self.registry,
            buckets=REQUEST_BUCKETS,
        )
        self.in_flight = Gauge(
            "roost_http_requests_in_flight", "HTTP requests being served", registry=self.registry
        )
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        Info("roost_build", "The running Roost", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )
        self.registry.register(StorageCollector())

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

    def watch_cache(self, cache: RecordCache, tier: str) -> None:
        self.registry.register(CacheCollector(cache, tier))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StorageCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "roost_db_statements",
            "Statements this process sent to the database",
            value=STATEMENTS.count,
        )


class CacheCollector(Collector):
    """The record cache's counters: records (``kind="record"``) and list pages
    (``kind="page"``), and whether the cache's store answers."""

    def __init__(self, cache: RecordCache, tier: str) -> None:
        self._cache = cache
        self._tier = tier

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["tier", "kind"]
        records, pages = self._cache.records, self._cache.pages
        counts = {
            "hits": (records.hits, pages.hits),
            "misses": (records.misses, pages.misses + pages.early_refreshes),
            "coalesced": (self._cache.coalesced, pages.coalesced),
            "errors": (records.errors, pages.errors),
            "bypassed": (records.bypassed, 0),
        }
        helps = {
            "hits": "Reads served from the cache",
            "misses": "Reads the cache could not serve (loaded from the database)",
            "coalesced": "Reads that shared a database read already in flight",
            "errors": "Cache operations that failed or timed out",
            "bypassed": "Reads sent to the database while invalidations were pending",
        }
        for name, (record_count, page_count) in counts.items():
            family = CounterMetricFamily(f"roost_cache_{name}", helps[name], labels=labels)
            family.add_metric([self._tier, "record"], record_count)
            family.add_metric([self._tier, "page"], page_count)
            yield family
        up = GaugeMetricFamily(
            "roost_cache_up",
            "1 when the cache's store answers and no invalidation is pending",
            labels=["tier"],
        )
        up.add_metric([self._tier], float(self._cache.cache.healthy and self._cache.usable()))
        yield up
