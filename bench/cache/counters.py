"""Roost's own counts, read from ``GET /metrics`` (Prometheus text) before and after a run:
statements sent to the database; cache hits, misses, coalesced reads (joined a read in
flight) and errors, by kind (record, page)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.client import Client

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
STATEMENTS = "roost_db_statements_total"
COUNTERS = ("hits", "misses", "coalesced", "errors", "bypassed")
CACHE = {f"roost_cache_{name}_total": name for name in COUNTERS}
"""The cache counters kept, by kind (every tier together)."""


@dataclass(frozen=True)
class Counts:
    statements: float = 0.0
    cache: dict[str, float] = field(default_factory=dict)
    """``"<counter> <kind>"`` (``"hits record"``, ``"misses page"``) to its value."""

    def __sub__(self, other: Counts) -> Counts:
        keys = self.cache.keys() | other.cache.keys()
        return Counts(
            self.statements - other.statements,
            {k: self.cache.get(k, 0.0) - other.cache.get(k, 0.0) for k in keys},
        )

    def __add__(self, other: Counts) -> Counts:
        keys = self.cache.keys() | other.cache.keys()
        return Counts(
            self.statements + other.statements,
            {k: self.cache.get(k, 0.0) + other.cache.get(k, 0.0) for k in keys},
        )

    def get(self, counter: str, kind: str) -> float:
        return self.cache.get(f"{counter} {kind}", 0.0)

    def cache_reads(self, kind: str) -> float:
        return self.get("hits", kind) + self.get("misses", kind)

    def coalesced_share(self, kind: str) -> float | None:
        """Reads that joined one in flight (and so neither hit nor missed) over all reads."""
        reads = self.cache_reads(kind) + self.get("coalesced", kind)
        return self.get("coalesced", kind) / reads if reads else None

    def hit_ratio(self, kind: str) -> float | None:
        """Hits over cache reads of ``kind``; None when there were none (no cache)."""
        reads = self.cache_reads(kind)
        return self.get("hits", kind) / reads if reads else None


def parse(text: str) -> Counts:
    statements = 0.0
    cache: dict[str, float] = {}
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if found is None or line.startswith("#"):
            continue
        name, value = found.group(1), float(found.group(3))
        if name == STATEMENTS:
            statements += value
        elif name in CACHE:
            kind = dict(LABEL.findall(found.group(2) or "")).get("kind", "")
            key = f"{CACHE[name]} {kind}"
            cache[key] = cache.get(key, 0.0) + value
    return Counts(statements, cache)


def scrape(port: int, token: str) -> Counts:
    """The counters of the Roost on ``port`` (``ROOST_METRICS_TOKEN`` = ``token``)."""
    with Client(port, token) as client:
        status, body = client.call("GET", "/metrics")
    if status != 200 or not isinstance(body, str) or STATEMENTS not in body:
        raise RuntimeError(f"GET /metrics answered {status}: {str(body)[:300]}")
    return parse(body)
