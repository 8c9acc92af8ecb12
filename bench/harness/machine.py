"""What a result was measured on: the commit, the load average, tool versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def first_line(cmd: list[str]) -> str:
    """The first line ``cmd`` prints (stdout or stderr), or ``?``."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def git_state() -> str:
    """``<short HEAD>`` plus `` + uncommitted changes`` when the tree is dirty."""
    head = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(REPO), "status", "--porcelain"]) != "?"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def command(knobs: str) -> str:
    """How this run was started: the ``knobs`` (names, space-separated) and ``ROOST_*``
    variables set in the environment, then the script as run from the repository."""
    found = [f"{k}={os.environ[k]}" for k in knobs.split() if os.environ.get(k)]
    found += [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("ROOST_")]
    script = os.path.relpath(sys.argv[0], REPO)
    return " ".join([*found, ".venv/bin/python", script, *sys.argv[1:]])


def describe_run(knobs: str, versions: dict[str, str]) -> dict[str, Any]:
    """What a run's results.json starts with: when, how it was started, the commit, the
    machine and its load; Python's, Granian's, ``versions``' and wrk's versions."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command(knobs),
        "git": git_state(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg_start": loadavg(),
        "versions": {
            "python": f"Python {platform.python_version()}",
            "granian": f"Granian {importlib.metadata.version('granian')}",
            **versions,
            "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        },
    }


def how_it_ran(meta: dict[str, Any], mode: str) -> str:
    """The sentence a results.md opens with, from ``describe_run``'s fields and the end's
    (``wall_seconds``, ``loadavg_end``)."""
    return (
        f"`{meta['command']}` ({mode} run, {meta['wall_seconds']:.0f} s);"
        f" {meta['nproc']} vCPU {meta['cpu']}, load average {meta['loadavg_start']} at the"
        f" start, {meta['loadavg_end']} at the end; {', '.join(meta['versions'].values())}."
    )
