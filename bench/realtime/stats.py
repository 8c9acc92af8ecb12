"""From writes and receipts to figures: who should have received what, what arrived,
and how long after the write."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from realtime.writer import Write

MS = 1e6  # nanoseconds per millisecond


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``values`` (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "n": len(values),
    }


def deliveries(
    writes: list[Write],
    receipts: Iterable[tuple[int, str, int]],
    members: Mapping[str | None, list[int]],
) -> dict[str, Any]:
    """One scenario: each created record must reach every subscriber in ``members`` of
    its room (``None``: the broadcast collection's) exactly once.

    Latencies are a receipt's time minus the write's response (``from_response``: a
    lower bound of commit to receipt, the response leaves after the commit) and minus
    the write's request start (``from_request``: an upper bound); ``last_*`` is per
    write, to the last of its room's subscribers (writes delivered in full only).
    ``events_per_second`` is the events received over the scenario's time (first request
    to last receipt); ``fanout_events_per_second`` the events of fully delivered writes
    over the sum of their times from request to last receipt (the pace of one fan-out,
    for writes spaced apart)."""
    ok = [w for w in writes if w.id is not None]
    by_id = {w.id: w for w in ok}
    expected = {w.id: set(members.get(w.room, [])) for w in ok}
    arrived: dict[str, dict[int, int]] = {w.id: {} for w in ok if w.id is not None}
    duplicates = strays = 0
    for subscriber, record, received in receipts:
        got = arrived.get(record)
        if got is None:
            continue
        if subscriber not in expected[record]:
            strays += 1
        elif subscriber in got:
            duplicates += 1
        else:
            got[subscriber] = received
    from_response, from_request, last_response, last_request = [], [], [], []
    fanned, fanning = 0, 0
    for record, got in arrived.items():
        write = by_id[record]
        for received in got.values():
            from_response.append((received - write.end_ns) / MS)
            from_request.append((received - write.start_ns) / MS)
        if got and len(got) == len(expected[record]):
            last_response.append((max(got.values()) - write.end_ns) / MS)
            last_request.append((max(got.values()) - write.start_ns) / MS)
            fanned += len(got)
            fanning += max(got.values()) - write.start_ns
    want = sum(len(e) for e in expected.values())
    received = sum(len(g) for g in arrived.values())
    last_receipt = max((t for g in arrived.values() for t in g.values()), default=None)
    window = (last_receipt - writes[0].start_ns) / 1e9 if writes and last_receipt else math.nan
    writing = (writes[-1].end_ns - writes[0].start_ns) / 1e9 if writes else math.nan
    return {
        "writes": len(writes),
        "failed_writes": len(writes) - len(ok),
        "write_statuses": sorted({w.status for w in writes}),
        "writes_per_second": len(writes) / writing if writing else math.nan,
        "post_ms": summary([(w.end_ns - w.start_ns) / MS for w in writes]),
        "expected": want,
        "received": received,
        "lost": want - received,
        "duplicates": duplicates,
        "strays": strays,
        "seconds": window,
        "events_per_second": received / window if window else math.nan,
        "fanout_events_per_second": fanned / (fanning / 1e9) if fanning else math.nan,
        "from_response_ms": summary(from_response),
        "from_request_ms": summary(from_request),
        "last_from_response_ms": summary(last_response),
        "last_from_request_ms": summary(last_request),
    }
