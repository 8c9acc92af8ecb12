"""Every figure of a run, in one place: Roost rows, ceilings, the peer; ratios between them."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.load import Load, median_load
from harness.roost import log

HTTP = "http-hello"
PGBENCH = "pgbench-S"
RESULTS = Path(__file__).resolve().parents[1] / "results"
STORES = ["sqlite", "postgres", "postgres+redis"]


def order(row: Row) -> tuple[str, int, int]:
    """Workload, then SQLite before PostgreSQL, then fewer workers first."""
    rank = STORES.index(row.store) if row.store in STORES else len(STORES)
    return row.name, rank, row.workers


@dataclass
class Row:
    kind: str
    """``roost``, ``ceiling`` or ``peer``."""
    name: str
    """The workload (a..f) for Roost and the peer; the ceiling's name (``http-hello``,
    ``db-a``, ``db-b``, ``pgbench-S``)."""
    store: str
    """``sqlite``, ``postgres``, ``postgres+redis``; ``-`` for the HTTP ceiling, ``parse``."""
    workers: int
    load: Load
    runs: list[Load]

    @property
    def config(self) -> str:
        return f"{self.store}-{self.workers}"

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "store": self.store,
            "workers": self.workers,
            **asdict(self.load),
            "runs": [asdict(run) for run in self.runs],
        }


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, name: str, store: str, workers: int, runs: list[Load]) -> Row:
        row = Row(kind, name, store, workers, median_load(runs), runs)
        self.rows.append(row)
        return row

    def of(self, kind: str) -> list[Row]:
        return [row for row in self.rows if row.kind == kind]

    def find(self, kind: str, name: str, store: str, workers: int) -> Row | None:
        for row in self.rows:
            if (row.kind, row.name, row.store, row.workers) == (kind, name, store, workers):
                return row
        return None

    def http_ceiling(self, row: Row) -> Row | None:
        return self.find("ceiling", HTTP, "-", row.workers)

    def db_ceiling(self, row: Row) -> Row | None:
        """The raw driver's figure for (a) and (b); None for the other workloads."""
        if row.name not in ("a", "b"):
            return None
        return self.find("ceiling", f"db-{row.name}", row.store, row.workers)

    def peer(self, row: Row) -> Row | None:
        return self.find("peer", row.name, "parse", row.workers)

    def ratios(self, row: Row) -> dict[str, float | None]:
        """Roost's req/s over each ceiling's and Parse's; its p99 over Parse's."""

        def rate(other: Row | None) -> float | None:
            return row.load.rps / other.load.rps if other and other.load.rps else None

        peer = self.peer(row)
        return {
            "http": rate(self.http_ceiling(row)),
            "db": rate(self.db_ceiling(row)),
            "parse": rate(peer),
            "parse_p99": row.load.p99 / peer.load.p99 if peer and peer.load.p99 else None,
        }

    def report(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            entry = row.report()
            if row.kind == "roost":
                entry["ratios"] = self.ratios(row)
            rows.append(entry)
        return {**self.meta, "rows": rows}


def begin(name: str, binaries: list[str], target: str) -> Path:
    """What a bench driver does first: check that the ``binaries`` it runs are installed
    (``make TARGET`` installs them), turn SIGTERM into the clean-up, and make its results
    folder, ``bench/results/NAME-<UTC time>/``."""
    for binary in binaries:
        if shutil.which(binary) is None:
            sys.exit(f"{binary} not found: apt-get install -y {binary} ({target} does)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    out.mkdir(parents=True)
    return out


def finish(out: Path, report: dict[str, Any], text: str, failed: list[str]) -> int:
    """``report`` as ``out``/results.json, ``text`` as ``out``/results.md, and printed; the
    exit status: 1 when anything ``failed`` (said on stderr)."""
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(text)
    print(text)
    log(f"wrote {out}/ (results.json, results.md); {report['meta']['wall_seconds']:.0f} s")
    if failed:
        log(f"FAILED: {failed[:8]}")
        return 1
    return 0
