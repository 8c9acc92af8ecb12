"""results.md of a cache run: Roost with each cache beside its ceilings, then how it ran."""

from __future__ import annotations

from typing import Any

from harness.machine import how_it_ran

ROOST_CPU = ("server", "postgres", "redis", "load", "other")
CACHE_LABELS = {"none": "off (`none`)", "redis": "Redis", "memory": "in process (`memory://`)"}


def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _hits(row: dict[str, Any]) -> str:
    coalesced = row["coalesced_share"]
    if row["hit_ratio"] is None:
        return "–"
    joined = f" ({100 * coalesced:.0f}% joined)" if coalesced else ""
    return f"{_share(row['hit_ratio'])}{joined}"


def _cpu(cpu: dict[str, float], keys: tuple[str, ...]) -> str:
    return " / ".join(f"{cpu[k]:.0f}%" for k in keys if k in cpu)


def _figures(load: dict[str, Any]) -> str:
    return f"{load['rps']:,.0f} | {load['p50']:.2f} | {load['p99']:.2f} | {load['errors']:,}"


def workloads(plan: dict[str, Any]) -> dict[str, str]:
    return {
        "read": f"(read) GET a record by id, random of {plan['hot']:,}",
        "list": f"(list) GET a list page, random of {plan['categories']}",
    }


def roost_table(results: dict[str, Any]) -> list[str]:
    names = workloads(results["meta"]["plan"])
    lines = [
        "| workload | cache | req/s | p50 ms | p99 ms | errors | DB statements / request"
        " | cache hits | Roost CPU ms / request | req/s ÷ cache off (rounds)"
        " | p99 ÷ cache off | ÷ HTTP ceiling | ÷ DB ceiling"
        " | CPU Roost / PG / Redis / wrk / other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        ratios = row["ratios"]
        statements = row["statements_per_request"]
        cpu_ms = row["server_cpu_ms_per_request"]
        rounds = ratios["cache_off_per_round"]
        spread = f" ({min(rounds):.2f}–{max(rounds):.2f})" if row["cache"] != "none" else ""
        lines.append(
            f"| {names[row['workload']]} | {CACHE_LABELS[row['cache']]} | {_figures(row)}"
            f" | {'–' if statements is None else f'{statements:.3f}'}"
            f" | {_hits(row)} | {'–' if cpu_ms is None else f'{cpu_ms:.3f}'}"
            f" | {_ratio(ratios['cache_off'])}{spread}"
            f" | {_ratio(ratios['p99_cache_off'])} | {_ratio(ratios['http'])}"
            f" | {_ratio(ratios['db'])} | {_cpu(row['cpu'], ROOST_CPU)} |"
        )
    return lines


def ceiling_table(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    plan = meta["plan"]
    what = {
        "http": "bare ASGI hello world on Granian as `roost serve` runs it, 1 worker; wrk",
        "db read": f"asyncpg, pool of 10, {plan['conns']} tasks: `{meta['read_sql']}`,"
        f" random of the {plan['hot']:,} ids",
        "db list": f"asyncpg, pool of 10, {plan['conns']} tasks: the list page's SQL (below),"
        f" random of the {plan['categories']} categories",
    }
    lines = [
        "| ceiling | what | req/s | p50 ms | p99 ms | errors | CPU server / PG / client |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, load in results["ceilings"].items():
        lines.append(
            f"| {name} | {what[name]} | {_figures(load)}"
            f" | {_cpu(load['cpu'], ('server', 'postgres', 'load'))} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    plan = meta["plan"]
    background = ", ".join(
        f"{CACHE_LABELS[cache]} {rate:.1f}"
        for cache, rate in meta["background_statements_per_second"].items()
    )
    lines = [
        f"# Cache: {meta['date']}, commit {meta['git']}",
        "",
        how_it_ran(meta, plan["mode"]),
        "",
        f"One `roost serve --workers 1` per cache, all on one throwaway durable PostgreSQL"
        f" (and Redis): collection `items`, {plan['records']:,} records in"
        f' {plan["categories"]} categories, list and view rules `""`, `cache_lists` on.'
        f" `wrk -t{plan['threads']} -c{plan['conns']} -d{plan['duration']}s --latency` with a"
        f" signed-in user's token, after {plan['warmup']} s of each (which fills the caches);"
        f" median of {plan['repeats']} rounds, every run interleaved. DB statements per"
        " request: `roost_db_statements_total` before and after each run (the server idle"
        " again) over the requests wrk counted; cache hits: `roost_cache_hits_total` over"
        " hits and misses of that kind (record, page), and the share of reads that joined"
        " one in flight (`roost_cache_coalesced_total`: one cache read, or on a miss one"
        " load, serves every concurrent request of a key). CPU in % of one core (200% = the"
        " machine); Roost CPU ms / request: the worker's CPU time over the responses, which"
        " holds when other work on the machine takes cores away. req/s ÷ cache off: of the"
        " medians, and the lowest and highest of the rounds (each run beside its cache-off"
        " run of the same round).",
        "",
        *roost_table(results),
        "",
        "Ceilings, same run:",
        "",
        *ceiling_table(results),
        "",
        f"- List page: `GET {meta['list_paths'][0]}` (and the other categories'); its SQL,"
        f" the category bound to `$1`: `{meta['list_sql']}`",
        f"- Statements per second an idle instance sends (realtime feed, outbox): {background}"
        "; included above.",
    ]
    names = workloads(plan)
    failing = [
        f"{names[r['workload']]}, {CACHE_LABELS[r['cache']]}: {r['cache_errors']:,.0f} cache"
        f" errors, {r['cache_bypassed']:,.0f} reads bypassed"
        for r in results["rows"]
        if r["cache_errors"] or r["cache_bypassed"]
    ]
    lines.append(
        "- Cache errors (`roost_cache_errors_total`: failed or timed out) and reads bypassed"
        " while invalidations were pending: "
        + ("none." if not failing else "; ".join(failing) + ".")
    )
    logged = {c: n for c, n in meta["server_log"].items() if n["under_load"] or n["at_stop"]}
    lines.append(
        "- The servers' logs, errors and warnings: "
        + (
            "none."
            if not logged
            else "; ".join(
                f"{CACHE_LABELS[c]}: {n['under_load']} by the end of the load, {n['at_stop']}"
                f" once stopped (first: `{n['first'][0][:200]}`)"
                for c, n in logged.items()
            )
        )
    )
    if meta["problems"]:
        lines += ["", "Problems:", "", *(f"- {p}" for p in meta["problems"])]
    return "\n".join(lines) + "\n"
