"""results.md: the Markdown tables of a run (Roost, ceilings, the peer) and how it was made."""

from __future__ import annotations

from typing import Any

from harness.plan import PARSE_WORKLOADS, WORKLOADS
from harness.results import Results, Row, order

CEILINGS = {
    "http-hello": "bare ASGI hello world, Granian as `roost serve` runs it",
    "db-a": "raw driver: the SQL of (a), one row by id",
    "db-b": "raw driver: the SQL of (b), 21 rows of one owner",
    "pgbench-S": "`pgbench -S -M prepared` (select-only, built in)",
}


def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _cpu(row: Row) -> str:
    cpu = row.load.cpu
    parts = [f"{cpu[k]:.0f}%" for k in ("server", "postgres") if k in cpu]
    return " / ".join(parts) or "–"


def _errors(row: Row) -> str:
    text = f"{row.load.errors:,}"
    if row.name == "e" and row.kind == "roost":
        text += f" (412: {row.load.conflicts:,})"
    return text


def _figures(row: Row) -> str:
    load = row.load
    return f"{load.rps:,.0f} | {load.p50:.1f} | {load.p99:.1f} | {_errors(row)}"


def roost_table(results: Results) -> list[str]:
    lines = [
        "| workload | config | req/s | p50 ms | p99 ms | errors | ÷ HTTP ceiling"
        " | ÷ DB ceiling | ÷ Parse | p99 ÷ Parse p99 | CPU Roost / PG |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = sorted(results.of("roost"), key=order)
    for row in rows:
        ratios = results.ratios(row)
        lines.append(
            f"| ({row.name}) {WORKLOADS[row.name]} | {row.config} | {_figures(row)}"
            f" | {_ratio(ratios['http'])} | {_ratio(ratios['db'])} | {_ratio(ratios['parse'])}"
            f" | {_ratio(ratios['parse_p99'])} | {_cpu(row)} |"
        )
    return lines


def ceiling_table(results: Results) -> list[str]:
    lines = [
        "| ceiling | what | config | req/s | p50 ms | p99 ms | errors | CPU server / PG |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results.of("ceiling"):
        config = f"{row.workers} worker(s)" if row.store == "-" else row.config
        lines.append(
            f"| {row.name} | {CEILINGS.get(row.name, '')} | {config} | {_figures(row)}"
            f" | {_cpu(row)} |"
        )
    return lines


def peer_table(results: Results) -> list[str]:
    lines = [
        "| workload | Parse processes | req/s | p50 ms | p99 ms | errors | CPU Parse / PG |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(results.of("peer"), key=lambda r: (r.name, r.workers)):
        lines.append(
            f"| ({row.name}) {PARSE_WORKLOADS[row.name]} | {row.workers} | {_figures(row)}"
            f" | {_cpu(row)} |"
        )
    return lines


def markdown(results: Results) -> str:
    meta: dict[str, Any] = results.meta
    settings = meta["settings"]
    hashing = meta["hashing"]
    bench, default = hashing["bench"], hashing["roost_default"]
    lines = [
        f"# Roost benchmark, {meta['date']} ({meta['mode']} run, {meta['wall_seconds']:.0f} s)",
        "",
        f"Commit {meta['git']}; {meta['nproc']} vCPU ({meta['cpu']}), load average"
        f" {meta['loadavg_start']} at start, {meta['loadavg_end']} at end;"
        f" {', '.join(meta['versions'].values())}.",
        "",
        f"`wrk -t{settings['threads']} -c{settings['conns']} -d{settings['duration']}s"
        f" --latency --timeout 10s` after a {settings['warmup']} s warm-up, median of"
        f" {settings['repeats']} (logins: runs of at least {settings['login_seconds']} s);"
        " each server first gets"
        f" {settings['server_warmup']} s of (f). req/s counts 2xx answers only."
        f" {meta['dataset']}",
        "",
        f"Login (d) runs at OWASP's argon2id strength, m={bench['memory_kib']} KiB"
        f" t={bench['time_cost']} p={bench['parallelism']} ({bench['verify_ms']:.0f} ms per"
        f" verify here), set with ROOST_PASSWORD_MEMORY_KIB / _TIME_COST / _PARALLELISM; Roost's"
        f" default is m={default['memory_kib']} KiB t={default['time_cost']}"
        f" p={default['parallelism']} ({default['verify_ms']:.0f} ms). Parse: {hashing['parse']}.",
        "",
        "## Roost",
        "",
        *roost_table(results),
        "",
        "## Ceilings (same run)",
        "",
        *ceiling_table(results),
    ]
    if results.of("peer"):
        lines += ["", f"## Peer: Parse Server {meta.get('peer_version', '?')}", ""]
        lines += peer_table(results)
    notes = meta.get("notes", [])
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"
