"""Load runs: ``wrk`` against an HTTP server, their figures (``Load``), medians of rounds."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.cpu import Meter

STATUS_LINE = "BENCH_STATUS "
"""Prefix of the line the Lua scripts' ``done()`` prints: a JSON object of response
statuses counted by a ``response()`` hook (only the scripts that need one define it)."""
WRK_TIMEOUT = "10s"
"""wrk's per-request timeout (its default, 2 s, would drop slow logins from the latency
histogram and count them as socket errors); the Parse peer's bench uses the same."""


@dataclass
class Load:
    """One run (or the median of several) of a load generator."""

    rps: float
    """Successful (2xx) responses per second."""
    p50: float
    p99: float
    requests: int
    errors: int
    """Failed requests: non-2xx responses other than the expected ones, socket errors."""
    cpu: dict[str, float]
    """Per cent of one core: each metered group, ``load`` (the generator), ``other``."""
    note: str = ""
    rps_all: float = 0.0
    """Every response per second, whatever its status (wrk's Requests/sec)."""
    non2xx: int = 0
    socket_errors: int = 0
    conflicts: int = 0
    """412 Precondition Failed answers (a stale ``If-Match``), counted apart."""
    statuses: dict[str, int] = field(default_factory=dict)
    """Responses by status, when the script counts them."""


def median_load(runs: list[Load]) -> Load:
    """Medians of the rates, latencies and CPU shares; sums of the counts."""
    statuses: dict[str, int] = {}
    for run in runs:
        for status, count in run.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return Load(
        rps=statistics.median(r.rps for r in runs),
        p50=statistics.median(r.p50 for r in runs),
        p99=statistics.median(r.p99 for r in runs),
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        cpu={key: statistics.median(r.cpu[key] for r in runs) for key in runs[0].cpu},
        note="; ".join(r.note for r in runs if r.note),
        rps_all=statistics.median(r.rps_all for r in runs),
        non2xx=sum(r.non2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        conflicts=sum(r.conflicts for r in runs),
        statuses=statuses,
    )


def to_ms(value: str) -> float:
    """wrk's ``1.23ms`` / ``456.78us`` / ``1.02s`` / ``1.00m`` in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    assert found, value
    return float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[found.group(2)]


def parse_wrk(out: str, cpu: dict[str, float]) -> Load:
    """A ``Load`` from wrk's ``--latency`` report (and a ``BENCH_STATUS`` line, if any)."""

    def find(pattern: str) -> str:
        found = re.search(pattern, out)
        assert found, (pattern, out)
        return found.group(1)

    non2xx_found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx_found.group(1)) if non2xx_found else 0
    sock = re.search(r"Socket errors: (.*)", out)
    socket_errors = sum(int(n) for n in re.findall(r"\d+", sock.group(1))) if sock else 0
    statuses: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith(STATUS_LINE):
            statuses = {str(k): int(v) for k, v in json.loads(line[len(STATUS_LINE) :]).items()}
    conflicts = statuses.get("412", 0)
    requests = int(find(r"(\d+) requests in"))
    rps_all = float(find(r"Requests/sec:\s+([\d.]+)"))
    errors = non2xx - conflicts + socket_errors
    good = max(0, requests - non2xx)
    return Load(
        rps=rps_all * good / requests if requests else 0.0,
        p50=to_ms(find(r"\s50%\s+(\S+)")),
        p99=to_ms(find(r"\s99%\s+(\S+)")),
        requests=requests,
        errors=errors,
        cpu=cpu,
        note=f"socket errors: {sock.group(1)}" if sock else "",
        rps_all=rps_all,
        non2xx=non2xx,
        socket_errors=socket_errors,
        conflicts=conflicts,
        statuses=statuses,
    )


def wrk(
    url: str,
    seconds: int,
    meter: Meter,
    *,
    script: Path | None = None,
    threads: int = 2,
    conns: int = 50,
    env: Mapping[str, str] | None = None,
) -> Load:
    """``wrk -tTHREADS -cCONNS -dSECONDSs --latency --timeout 10s [-s SCRIPT] URL``;
    ``env`` reaches the Lua script (``os.getenv``)."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        WRK_TIMEOUT,
        *(["-s", str(script)] if script else []),
        url,
    ]
    with meter:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=seconds + 60,
            check=False,
        )
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout, meter.shares())


def show(name: str, result: Load) -> None:
    """One line on stderr: rate, latencies, CPU shares, errors."""
    bad = f" ERRORS={result.errors}" if result.errors else ""
    bad += f" 412={result.conflicts}" if result.conflicts else ""
    cpu = " ".join(f"{k}={v:.0f}%" for k, v in result.cpu.items())
    print(
        f"  {name}: {result.rps:,.0f}/s p50={result.p50:.2f}ms p99={result.p99:.2f}ms"
        f" cpu {cpu}{bad}",
        file=sys.stderr,
        flush=True,
    )


def measure(
    runners: Mapping[str, Callable[[int], Load]],
    *,
    warmup: int,
    repeats: int,
    duration: int,
) -> dict[str, list[Load]]:
    """A ``warmup``-second run of each (not kept), then ``repeats`` rounds of one
    ``duration``-second run of each, interleaved so that whatever else the machine does
    weighs on all of them alike."""
    if warmup > 0:
        for run in runners.values():
            run(warmup)
    runs: dict[str, list[Load]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            runs[name].append(run(duration))
            show(name, runs[name][-1])
    return runs
