"""Profiles of a live worker with py-spy: a flame graph and a text breakdown of where the
time goes, from py-spy's raw (collapsed) stacks."""

from __future__ import annotations

import collections
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cpu import HZ, thread_ticks, ticks
from harness.roost import VENV_PY

RATE = 250
"""Samples per second."""
CATEGORIES = [  # first match on the frame's file wins; checked leaf-first for "self"
    ("aiosqlite (queue hop)", ("aiosqlite/",)),
    ("sqlite3 (C, in thread)", ("sqlite3/",)),
    ("asyncpg", ("asyncpg/",)),
    ("logging (structlog)", ("structlog/",)),
    ("json (orjson/json)", ("orjson", "json/")),
    ("pydantic", ("pydantic",)),
    ("jwt / crypto", ("jwt/", "cryptography/")),
    ("starlette", ("starlette/",)),
    ("anyio", ("anyio/",)),
    ("granian", ("granian/",)),
    (
        "asyncio / uvloop",
        ("asyncio/", "uvloop/", "contextlib.py", "concurrent/", "queue.py", "threading.py"),
    ),
    ("roost", ("roost/",)),
]
BOILERPLATE = (
    "runpy",
    "click/",
    "multiprocessing/",
    "granian/server/",
    "granian/cli.py",
    "threading.py",
    "granian/__main__",
)
"""Frames every sample has (process start-up): left out of the inclusive-time list."""


def pyspy_binary() -> str:
    return str(Path(VENV_PY).parent / "py-spy")


def record(pid: int, seconds: int, out: Path, *, raw: bool) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``seconds`` (without pausing it): a flame
    graph (``out``, SVG), or with ``raw`` the collapsed stacks of the thread holding the
    GIL (``--gil``: Python actually running; without it, threads blocked in C calls such
    as aiosqlite's queue wait count as busy), for ``summarize``."""
    command = [
        pyspy_binary(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(RATE),
        "--nonblocking",
        "--output",
        str(out),
    ]
    if raw:
        command += ["--format", "raw", "--threads", "--function", "--gil"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def category(frame: str) -> str:
    for label, needles in CATEGORIES:
        if any(n in frame for n in needles):
            return label
    return "other"


def summarize(raw: Path, top: int = 30, seconds: float | None = None) -> str:
    """Self time, inclusive time and time per category from py-spy's raw (collapsed) stacks.

    Percentages are of all samples taken while some thread held the GIL (py-spy --gil).
    """
    self_t: collections.Counter[str] = collections.Counter()
    incl_t: collections.Counter[str] = collections.Counter()
    cats: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        thread, *frames = stack.split(";")
        total += n
        is_main = "MainThread" in thread
        threads["event-loop thread" if is_main else "other threads (aiosqlite, ...)"] += n
        if frames:
            self_t[frames[-1]] += n
            for f in set(frames):
                incl_t[f] += n
            leaf = category(frames[-1])
            cats[f"{'loop' if is_main else 'thread'}: {leaf}"] += n
    if total == 0:
        return "no samples (py-spy saw no thread holding the GIL)\n"
    held = f", GIL held ~{100 * total / (RATE * seconds):.0f}% of the time" if seconds else ""
    lines = [f"{total} samples with the GIL held{held}; by thread:"]
    lines += [f"  {100 * n / total:5.1f}%  {label}" for label, n in threads.most_common()]
    lines += ["", "self time by category (leaf frame), split by thread:"]
    lines += [f"  {100 * n / total:5.1f}%  {label}" for label, n in cats.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    lines += ["", f"top {top} functions by inclusive time:"]
    inclusive = [(f, n) for f, n in incl_t.most_common() if not any(b in f for b in BOILERPLATE)]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive[:top]]
    return "\n".join(lines) + "\n"


def busiest(pids: list[int], seconds: float = 1.0) -> int:
    """The process among ``pids`` that used the most CPU over the next ``seconds``."""
    before = {pid: ticks(pid) or 0 for pid in pids}
    time.sleep(seconds)
    return max(pids, key=lambda pid: (ticks(pid) or 0) - before[pid])


def profile(
    pids: list[int], start_load: Callable[[int], subprocess.Popen[str]], seconds: int, out: Path
) -> dict[str, Any]:
    """Put a load on the server (``start_load(seconds)``, started a little longer), find
    its busiest process (the worker) and profile it for ``seconds``: ``out.svg`` (flame
    graph), ``out.raw`` (collapsed stacks with the GIL held) and ``out.txt`` (their
    summary, with CPU per thread from /proc)."""
    load = start_load(seconds + 2)
    try:
        time.sleep(0.5)  # past wrk's connection burst
        worker = busiest(pids, 0.5)
        threads_before, started = thread_ticks(worker), time.monotonic()
        samplers = [
            record(worker, seconds, out.with_suffix(".raw"), raw=True),
            record(worker, seconds, out.with_suffix(".svg"), raw=False),
        ]
        failures = []
        for sampler in samplers:
            _, err = sampler.communicate(timeout=seconds + 60)
            if sampler.returncode != 0:
                failures.append(err.decode("utf-8", "replace")[-2000:])
        threads_after, elapsed = thread_ticks(worker), time.monotonic() - started
    finally:
        wrk_out, _ = load.communicate(timeout=seconds + 60)
    lines = [f"py-spy on pid {worker} for {seconds} s; CPU by thread (from /proc):"]
    for tid, (name, spent) in sorted(threads_after.items(), key=lambda kv: -kv[1][1]):
        used = 100 * (spent - threads_before.get(tid, (name, 0))[1]) / HZ / elapsed
        if used >= 0.5:
            lines.append(f"  {used:5.1f}%  {name} ({tid})")
    raw = out.with_suffix(".raw")
    text = "\n".join(lines) + "\n\n"
    text += summarize(raw, seconds=elapsed) if raw.exists() else "no raw profile\n"
    out.with_suffix(".txt").write_text(text)
    rate = next((line for line in wrk_out.splitlines() if "Requests/sec" in line), "")
    return {
        "pid": worker,
        "seconds": seconds,
        "files": [
            p.name for p in (out.with_suffix(s) for s in (".svg", ".raw", ".txt")) if p.exists()
        ],
        "load": rate.strip(),
        "errors": failures,
    }
