"""The rows of a scale-out run: medians, ratios to the ceiling and to one instance, CPU per
request of each process group, and what those costs predict for more cores and machines."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from cache.counters import Counts
from harness.load import Load, median_load

PARTS = ("server", "postgres", "redis", "haproxy", "load")
"""The process groups whose CPU per request is reported (``server``: all instances)."""


def shares(cpu: dict[str, float]) -> dict[str, float]:
    """The run's CPU shares with the instances' (``server 1`` ..) added up as ``server``."""
    each = {k: v for k, v in cpu.items() if k.startswith("server ")}
    rest = {k: v for k, v in cpu.items() if k not in each}
    return {"server": sum(each.values()), **rest}


def cpu_ms(run: Load) -> dict[str, float]:
    """Milliseconds of CPU per response, per process group (a share of 100% is one core)."""
    if not run.rps_all:
        return {}
    total = shares(run.cpu)
    return {k: 10 * total[k] / run.rps_all for k in PARTS if k in total}


def row(
    kind: str,
    instances: int,
    runs: list[Load],
    counts: Counts | None,
    ceiling: list[Load] | None,
    alone: list[Load],
) -> dict[str, Any]:
    """One figure: ``runs`` of ``kind`` (``roost``, ``hello``) on ``instances``; ``ceiling``
    the hello runs with as many instances (Roost only), ``alone`` the same kind's runs on
    one instance, round for round."""
    load = median_load(runs)
    per_run = [cpu_ms(run) for run in runs]
    requests = sum(run.requests for run in runs)
    found: dict[str, Any] = {
        "kind": kind,
        "instances": instances,
        **asdict(load),
        "cpu": shares(load.cpu),
        "cpu_each": [v for k, v in sorted(load.cpu.items()) if k.startswith("server ")],
        "cpu_ms_per_request": {
            k: statistics.median(run[k] for run in per_run if k in run) for k in per_run[0]
        },
        "runs": [asdict(run) for run in runs],
        "scaling": load.rps / median_load(alone).rps if alone else None,
        "scaling_rounds": [
            mine.rps / one.rps if one.rps else None for mine, one in zip(runs, alone, strict=True)
        ],
    }
    if ceiling is not None:
        top = median_load(ceiling)
        found["ceiling"] = load.rps / top.rps if top.rps else None
        found["p99_ceiling"] = load.p99 / top.p99 if top.p99 else None
    if counts is not None:
        found["statements_per_request"] = counts.statements / requests if requests else None
        found["record_hit_ratio"] = counts.hit_ratio("record")
    return found


def projection(row: dict[str, Any], nproc: int) -> dict[str, float]:
    """Requests per second each part would carry if it alone had the cores, from its CPU
    per request in ``row``: a Roost worker per core, PostgreSQL per core, Redis on its one
    thread, HAProxy per thread; and this machine if the bench's processes had it all."""
    cost = row["cpu_ms_per_request"]
    found = {k: 1000 / cost[k] for k in ("server", "postgres", "redis", "haproxy") if cost.get(k)}
    total = sum(cost.values())
    if total:
        found["machine"] = nproc * 1000 / total
    return found
