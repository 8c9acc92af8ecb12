"""CPU use of process groups from /proc (Linux): who burned the machine's cores during a run.

``Meter`` measures CPU seconds per wall second (100% = one core) of named groups of
processes, of the waited-for children (the load generator) and of the rest of the machine.
"""

from __future__ import annotations

import glob
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _pids(keep: Callable[[int, list[str]], bool]) -> list[int]:
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        pid = int(Path(path).parent.name)
        fields = _stat(pid)
        if fields is not None and keep(pid, fields):
            found.append(pid)
    return found


def ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks; None when the process is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[11]) + int(fields[12])


def busy_ticks() -> int:
    """CPU ticks the whole machine spent outside idle and iowait (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def session_pids(sid: int) -> list[int]:
    """Every process of session ``sid`` (a server started with ``start_new_session``)."""
    return _pids(lambda _pid, fields: int(fields[3]) == sid)  # field 6: session id


def children_and_self(parent: int | None) -> list[int]:
    """``parent`` and its direct children (a postmaster and its backends)."""
    if parent is None:
        return []
    return [parent, *_pids(lambda _pid, fields: int(fields[1]) == parent)]  # field 4: ppid


def thread_ticks(pid: int) -> dict[str, tuple[str, int]]:
    """{thread id: (thread name, utime + stime ticks)} for every thread of ``pid``."""
    found = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        name = text[text.index("(") + 1 : text.rindex(")")]
        found[stat.parent.name] = (name, int(fields[11]) + int(fields[12]))
    return found


def _child_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU seconds per wall second (100% = one core) of each group of processes, the
    load generator (the children this process waits for) and everything else on the
    machine, over one run. Processes are sampled every SAMPLE_SECONDS, so processes that
    start and end during the run (pgbench's PostgreSQL backends) count, but for at most
    SAMPLE_SECONDS less than they lived."""

    SAMPLE_SECONDS = 0.2

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.base: dict[str, dict[int, int]] = {}
        self.last: dict[str, dict[int, int]] = {name: {} for name in groups}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample_until_done, daemon=True)

    def _sample(self) -> None:
        for name, find in self.groups.items():
            for pid in find():
                value = ticks(pid)
                if value is not None:
                    self.last[name][pid] = value

    def _sample_until_done(self) -> None:
        while not self.done.wait(self.SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> Meter:
        self._sample()
        self.base = {name: dict(pids) for name, pids in self.last.items()}
        self.busy = busy_ticks()
        self.children = _child_seconds()
        self.own = _own_seconds()
        self.start = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self._sample()
        self.seconds = time.monotonic() - self.start
        self.busy = busy_ticks() - self.busy
        self.children = _child_seconds() - self.children
        self.own = _own_seconds() - self.own

    def shares(self) -> dict[str, float]:
        """Per cent of one core, per group, plus ``load`` (the waited-for children: wrk
        or pgbench) and ``other`` (the rest of the machine: other users, this script)."""
        used = {
            name: sum(v - self.base[name].get(pid, 0) for pid, v in self.last[name].items()) / HZ
            for name in self.groups
        }
        used["load"] = self.children
        other = self.busy / HZ - sum(used.values()) - self.own
        return {
            **{k: 100 * v / self.seconds for k, v in used.items()},
            "other": 100 * max(0.0, other) / self.seconds,
        }


def wait_idle(
    pids: Callable[[], list[int]],
    *,
    below: float = 0.15,
    interval: float = 0.1,
    timeout: float = 20.0,
) -> float:
    """Wait until the processes use less than ``below`` of one core over ``interval``
    seconds (a server still answering the requests a finished load generator left in
    flight); the seconds waited, at most ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(ticks(pid) or 0 for pid in pids())
        time.sleep(interval)
        used = (sum(ticks(pid) or 0 for pid in pids()) - before) / HZ / interval
        if used < below:
            break
    return time.monotonic() - started
