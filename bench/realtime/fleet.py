"""The driver's handle on the subscriber processes (``clients.py``): started together,
given each command together, their answers merged."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.roost import VENV_PY

CLIENTS = Path(__file__).resolve().parent / "clients.py"
STALL_SECONDS = 3.0
"""``wait_for`` gives up when no event arrived for this long."""


class Fleet:
    """``processes`` subscriber processes sharing ``total`` subscribers over ``rooms``
    rooms; their stderr goes to ``log_path``."""

    def __init__(
        self,
        port: int,
        total: int,
        rooms: int,
        *,
        processes: int,
        concurrency: int,
        log_path: Path,
    ) -> None:
        self.log_path = log_path
        per_process = max(1, concurrency // processes)
        with log_path.open("ab") as log_file:
            self.procs = [
                subprocess.Popen(
                    [VENV_PY, str(CLIENTS), str(port), str(index), str(processes)]
                    + [str(total), str(rooms), str(per_process)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    text=True,
                )
                for index in range(processes)
            ]

    def command(self, line: str) -> list[dict[str, Any]]:
        """Send ``line`` to every process, then read each one's answer."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            text = proc.stdout.readline()
            if not text:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"a subscriber process exited on {line!r}; its log:\n{tail}")
            answers.append(json.loads(text))
        return answers

    def connect(self) -> dict[str, Any]:
        answers = self.command("connect")
        errors: dict[str, int] = {}
        for answer in answers:
            for kind, count in answer["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
        return {
            "connected": sorted(i for a in answers for i in a["connected"]),
            "failed": sum(a["failed"] for a in answers),
            "seconds": max(a["seconds"] for a in answers),
            "open_seconds": [s for a in answers for s in a["open_seconds"]],
            "errors": errors,
        }

    def events(self) -> int:
        return sum(a["events"] for a in self.command("count"))

    def wait_for(self, total: int, timeout: float = 60.0) -> float:
        """Wait until ``total`` events have arrived in all, or none arrived for
        STALL_SECONDS, or ``timeout``; the seconds waited."""
        started = last_change = time.monotonic()
        seen = -1
        while time.monotonic() - started < timeout:
            count = self.events()
            if count >= total:
                break
            if count != seen:
                seen, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                break
            time.sleep(0.02)
        return time.monotonic() - started

    def dump(self, folder: Path) -> tuple[list[tuple[int, str, int]], dict[str, Any]]:
        """Every receipt (subscriber, record id, time_ns), and what else the subscribers
        saw (message counts, errors, closes they did not ask for)."""
        receipts: list[tuple[int, str, int]] = []
        summary: dict[str, Any] = {"messages": {}, "errors": {}, "dropped": {}}
        for index, proc in enumerate(self.procs):
            path = folder / f"receipts-{index}.json"
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"dump {path}\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            receipts += [(i, r, t) for i, r, t in json.loads(path.read_text())]
            path.unlink()
            for key in ("messages", "errors", "dropped"):
                for kind, count in answer[key].items():
                    summary[key][kind] = summary[key].get(kind, 0) + count
            gc = summary.setdefault("gc", {"collections": 0, "longest_ms": 0.0, "total_ms": 0.0})
            gc["collections"] += answer["gc"]["collections"]
            gc["total_ms"] += answer["gc"]["total_ms"]
            gc["longest_ms"] = max(gc["longest_ms"], answer["gc"]["longest_ms"])
        return receipts, summary

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.poll() is None]

    def close(self) -> None:
        """Close every connection (politely), then make sure every process is gone."""
        try:
            if all(proc.poll() is None for proc in self.procs):
                self.command("close")
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
