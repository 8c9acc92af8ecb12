"""results.md of a realtime run: one table per scenario, one row per store and N."""

from __future__ import annotations

import math
from typing import Any


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ms(stats: dict[str, float], *keys: str) -> str:
    return " / ".join(_n(stats[k], 1) for k in keys)


def _cpu(shares: dict[str, float]) -> str:
    return f"{shares['server']:.0f}% / {shares['clients']:.0f}% / {shares['other']:.0f}%"


def _label(run: dict[str, Any]) -> str:
    return f"{run['subscribers']:,} ({run['server']})"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    plan = meta["plan"]
    runs = results["runs"]
    lines = [
        f"# Realtime: {meta['date']}, commit {meta['git']}",
        "",
        f"{meta['nproc']} vCPU {meta['cpu']}, {meta['versions']['python']}, Granian"
        f" {meta['versions']['granian']}, websockets {meta['versions']['websockets']};"
        f" load average {meta['loadavg_start']} at the start; {meta['wall_seconds']:.0f} s"
        f" in all. One `roost serve --workers 1`; {plan['processes']} subscriber process(es);"
        f" {plan['per_room']} subscribers per room; open files {meta['fds']['soft']}."
        " CPU is % of one core (200% = the machine): the server / the subscriber processes /"
        " anything else on the machine.",
        "",
        'Connections (anonymous, one subscription `room = "r<k>"` each):',
        "",
        "| subscribers | rooms | connected | failed | seconds | per s | open p50 / p99 ms"
        " | server RSS before → after MiB | KiB / connection | CPU idle"
        " | clients RSS MiB | CPU while connecting |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        c = run["connect"]
        lines.append(
            f"| {_label(run)} | {run['rooms']:,} | {c['connected']:,} | {c['failed']:,}"
            f" | {_n(c['seconds'], 1)} | {_n(c['per_second'])} | {_ms(c['open_ms'], 'p50', 'p99')}"
            f" | {_n(run['rss_before_kib'] / 1024)} → {_n(run['rss_after_kib'] / 1024)}"
            f" | {_n(run['kib_per_connection'], 1)} | {_cpu(run['idle_cpu'])}"
            f" | {_n(run['client_rss_kib'] / 1024)} | {_cpu(c['cpu'])} |"
        )
    titles = {
        "A": f"(A) fan-out: {plan['rate']:g} creates/s for {plan['duration']:g} s, each to a"
        f" random room ({plan['per_room']} subscribers)",
        "B": f"(B) matching cost: single creates to a random room, {plan['match_gap']:g} s"
        " apart; time to the room's last subscriber",
        "C": "(C) burst: creates back to back over one keep-alive connection",
        "D": "(D) broadcast: every connection also subscribes to all of `news`; one create"
        " there, awaited until all have it",
    }
    rate = {"A": "events_per_second", "C": "events_per_second", "D": "fanout_events_per_second"}
    for scenario, title in titles.items():
        rows = [(run, run["scenarios"][scenario]) for run in runs if scenario in run["scenarios"]]
        if not rows:
            continue
        lines += [
            "",
            f"{title}. Latency in ms from the create's response (from its request):",
            "",
            "| subscribers | creates | creates/s | POST p50 ms | events expected | received"
            " | lost | dup | events/s | p50 | p99 | max | last of the write's subscribers"
            " p50 / p99 / max | CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run, s in rows:
            r, q = s["from_response_ms"], s["from_request_ms"]
            events = _n(s[rate[scenario]]) if scenario in rate else "–"
            creates = _n(s["writes_per_second"]) if scenario in "AC" else "–"
            last, last_q = s["last_from_response_ms"], s["last_from_request_ms"]
            lines.append(
                f"| {_label(run)} | {s['writes']:,} | {creates}"
                f" | {_n(s['post_ms']['p50'], 1)} | {s['expected']:,} | {s['received']:,}"
                f" | {s['lost']:,} | {s['duplicates']:,} | {events}"
                f" | {_n(r['p50'], 1)} ({_n(q['p50'], 1)}) | {_n(r['p99'], 1)} ({_n(q['p99'], 1)})"
                f" | {_n(r['max'], 1)} ({_n(q['max'], 1)})"
                f" | {_ms(last, 'p50', 'p99', 'max')} ({_ms(last_q, 'p50', 'p99', 'max')})"
                f" | {_cpu(s['cpu'])} |"
            )
    trouble = []
    for run in runs:
        seen = run["clients"]
        if seen["dropped"] or seen["errors"] or run["server_log"]["under_load"]:
            trouble.append(
                f"- {_label(run)}: closes the clients did not ask for {seen['dropped'] or 0},"
                f" client errors {seen['errors'] or 0}, server log errors/warnings"
                f" {run['server_log']['under_load']} under load,"
                f" {run['server_log']['at_stop']} at stop"
            )
    clean = "No connection dropped, no error in the clients or the server log."
    lines += [
        "",
        *(trouble or [clean]),
        "",
        "Subscriber processes, once connected (their own pauses delay receipts):",
    ]
    for run in runs:
        gc = run["clients"].get("gc", {})
        lines.append(
            f"- {_label(run)}: longest garbage collection {_n(gc.get('longest_ms', math.nan), 1)}"
            f" ms ({gc.get('collections', 0):,} collections, {_n(gc.get('total_ms', math.nan))}"
            f" ms in all); {run['clients']['messages'].get('ping', 0):,} pings answered;"
            f" RSS {_n(run['client_rss_end_kib'] / 1024)} MiB at the end"
        )
    return "\n".join(lines) + "\n"
