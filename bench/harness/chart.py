"""chart.png: req/s and p99 per workload, each Roost configuration beside Parse, with the
ceilings (HTTP: dashed lines; database: a marker over the bar it bounds)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.results import HTTP, Results, Row, order  # noqa: E402

ROOST_COLOURS = ["#1f77b4", "#6baed6", "#2ca02c", "#98df8a", "#9467bd", "#c5b0d5"]
PARSE_COLOURS = ["#d62728", "#ff9896"]


def draw(results: Results, path: Path) -> None:
    roost = results.of("roost")
    peer = results.of("peer")
    workloads = sorted({row.name for row in roost})
    series: list[tuple[str, str, list[Row]]] = []
    configs = list(dict.fromkeys((r.store, r.workers) for r in sorted(roost, key=order)))
    for i, (store, workers) in enumerate(configs):
        rows = [r for r in roost if (r.store, r.workers) == (store, workers)]
        series.append((f"Roost {store}-{workers}", ROOST_COLOURS[i % 6], rows))
    for i, workers in enumerate(sorted({r.workers for r in peer})):
        rows = [r for r in peer if r.workers == workers]
        series.append((f"Parse, {workers} process(es)", PARSE_COLOURS[i % 2], rows))
    width = 0.8 / max(1, len(series))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(14, 9), sharex=True)
    for s, (label, colour, rows) in enumerate(series):
        by_name = {r.name: r for r in rows}
        xs = [w + (s - (len(series) - 1) / 2) * width for w in range(len(workloads))]
        present = [(x, by_name[n]) for x, n in zip(xs, workloads, strict=True) if n in by_name]
        placed = [x for x, _ in present]
        top.bar(placed, [r.load.rps for _, r in present], width, label=label, color=colour)
        bottom.bar(placed, [r.load.p99 for _, r in present], width, label=label, color=colour)
        for x, row in present:
            ceiling = results.db_ceiling(row) if row.kind == "roost" else None
            if ceiling is not None:
                top.plot(x, ceiling.load.rps, marker="v", color="black", markersize=6)
                bottom.plot(x, ceiling.load.p99, marker="^", color="black", markersize=6)
    for i, ceiling in enumerate(r for r in results.of("ceiling") if r.name == HTTP):
        label = f"HTTP ceiling, {ceiling.workers} worker(s)"
        x, align = (-0.5, "left") if i % 2 == 0 else (len(workloads) - 0.5, "right")
        for axes, value in ((top, ceiling.load.rps), (bottom, ceiling.load.p99)):
            axes.axhline(value, linestyle="--", color="grey", linewidth=1 + i)
            axes.text(x, value * 1.05, label, ha=align, fontsize=8)
    top.plot([], [], marker="v", color="black", linestyle="", label="DB ceiling (raw driver)")
    top.set_yscale("log")
    top.set_ylabel("requests/s (2xx), log scale")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.set_title(f"Roost benchmark {results.meta['date']} ({results.meta['mode']} run)")
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency (ms), log scale")
    bottom.set_xticks(range(len(workloads)))
    bottom.set_xticklabels([f"({w})" for w in workloads])
    bottom.set_xlabel("workload: (a) read (b) list (c) create (d) login (e) PATCH (f) mixed")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
