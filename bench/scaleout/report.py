"""results.md of a scale-out run: Roost through HAProxy on 1..3 instances, the hello world
behind the same HAProxy, and what the measured CPU per request predicts."""

from __future__ import annotations

from typing import Any

from harness.machine import how_it_ran

CPU = ("postgres", "redis", "haproxy", "load", "other")
COSTS = ("server", "postgres", "redis", "haproxy", "load")
PREDICTS = {
    "server": "a Roost worker, per core",
    "postgres": "PostgreSQL, per core",
    "redis": "Redis, on its one thread",
    "haproxy": "HAProxy, per thread",
    "machine": "this machine's cores, were the bench's processes alone on them",
}


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _figures(row: dict[str, Any]) -> str:
    errors = f"{row['errors']:,}"
    if row["non2xx"] or row["socket_errors"]:
        errors += f" ({row['non2xx']:,} non-2xx, {row['socket_errors']:,} socket)"
    return f"{row['rps']:,.0f} | {row['p50']:.1f} | {row['p99']:.1f} | {errors}"


def _scaling(row: dict[str, Any]) -> str:
    rounds = [r for r in row["scaling_rounds"] if r is not None]
    spread = f" ({min(rounds):.2f}–{max(rounds):.2f})" if len(rounds) > 1 else ""
    return f"{_ratio(row['scaling'])}{spread}"


def _cpu(row: dict[str, Any]) -> str:
    each = "+".join(f"{v:.0f}" for v in row["cpu_each"])
    cpu = row["cpu"]
    rest = [f"{cpu[k]:.0f}%" for k in CPU if k in cpu]
    return " / ".join([f"{cpu['server']:.0f}% ({each})", *rest])


def _costs(row: dict[str, Any]) -> str:
    cost = row["cpu_ms_per_request"]
    return " / ".join(f"{cost[k]:.3f}" for k in COSTS if k in cost)


def roost_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| instances | req/s | p50 ms | p99 ms | errors | ÷ ceiling | p99 ÷ ceiling p99"
        " | ÷ fewest instances (rounds) | DB statements / request | record cache hits"
        " | CPU Roost Σ (each) / PG / Redis / HAProxy / wrk / other"
        " | CPU ms / request Roost / PG / Redis / HAProxy / wrk |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        statements = row["statements_per_request"]
        hits = row["record_hit_ratio"]
        lines.append(
            f"| {row['instances']} | {_figures(row)} | {_ratio(row['ceiling'])}"
            f" | {_ratio(row['p99_ceiling'])} | {_scaling(row)}"
            f" | {'–' if statements is None else f'{statements:.3f}'}"
            f" | {'–' if hits is None else f'{100 * hits:.1f}%'}"
            f" | {_cpu(row)} | {_costs(row)} |"
        )
    return lines


def ceiling_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| instances | req/s | p50 ms | p99 ms | errors | ÷ fewest instances (rounds)"
        " | CPU hello Σ (each) / PG / Redis / HAProxy / wrk / other"
        " | CPU ms / request hello / HAProxy / wrk |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cost = row["cpu_ms_per_request"]
        costs = " / ".join(f"{cost[k]:.3f}" for k in ("server", "haproxy", "load") if k in cost)
        lines.append(
            f"| {row['instances']} | {_figures(row)} | {_scaling(row)} | {_cpu(row)} | {costs} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    plan = meta["plan"]
    roosts = [r for r in results["rows"] if r["kind"] == "roost"]
    hellos = [r for r in results["rows"] if r["kind"] == "hello"]
    best = max(roosts, key=lambda r: r["rps"])
    lines = [
        f"# Scale-out: {meta['date']}, commit {meta['git']}",
        "",
        how_it_ran(meta, plan["mode"]),
        "",
        "`roost serve --workers 1` instances on one throwaway durable PostgreSQL, sharing one"
        " Redis (cache, broker, rate limits) and one secret key, behind HAProxy running"
        " `deploy/haproxy.cfg` unchanged (absent servers on a closed port, marked DOWN before"
        f" the runs). `wrk -t{plan['threads']} -c{plan['conns']} -d{plan['duration']}s"
        " --latency` through HAProxy, `make bench`'s workload (f): 80% GET a record by id as"
        ' its owner, 15% the owner\'s list page (`filter=owner = "<id>"&limit=20`, an index on'
        " `owner`), 5% POST a record, with the tokens of 100 users over 10,000 records;"
        f" after {plan['warmup']} s of each run, median of {plan['repeats']} rounds, every"
        " run interleaved. Ceiling: the bare ASGI hello world on Granian (1 worker each,"
        " as `roost serve` runs it) behind the same HAProxy configuration, as many instances."
        " CPU in % of one core"
        f" ({100 * meta['nproc']}% = the machine); CPU ms / request: each group's CPU time over"
        " the responses. DB statements / request and cache hits: the instances'"
        " `roost_db_statements_total` and `roost_cache_{hits,misses}_total` around each run.",
        "",
        "## Roost, mixed workload through HAProxy",
        "",
        *roost_table(roosts),
        "",
        "## Ceiling: bare ASGI hello world through the same HAProxy",
        "",
        *ceiling_table(hellos),
        "",
        f"## What the CPU per request predicts (from {roosts[0]['instances']} instance(s))",
        "",
        *(
            f"- {PREDICTS[k]}: {rate:,.0f} req/s of this mix"
            for k, rate in meta["projection"].items()
        ),
        f"- measured here at best: {best['rps']:,.0f} req/s ({best['instances']} instance(s))",
    ]
    if meta["problems"]:
        lines += ["", "## Problems", "", *(f"- {p}" for p in meta["problems"])]
    return "\n".join(lines) + "\n"
