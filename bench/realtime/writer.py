"""The writer: creates records over one keep-alive HTTP connection, as the admin, and
notes when each request started and when its response had arrived (``time.time_ns()``,
the clock the subscribers stamp their receipts with)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from harness.client import Client


@dataclass(frozen=True)
class Write:
    scenario: str
    collection: str
    room: str | None
    id: str | None
    """The created record's id; None when the create failed."""
    start_ns: int
    end_ns: int
    status: int


class Writer:
    def __init__(self, port: int, token: str, *, seed: int = 42) -> None:
        self.client = Client(port, token, timeout=60)
        self.random = random.Random(seed)

    def create(self, scenario: str, collection: str, room: str | None) -> Write:
        body = {"sent": str(time.time_ns())}
        if room is not None:
            body["room"] = room
        start = time.time_ns()
        status, answer = self.client.call("POST", f"/api/collections/{collection}/records", body)
        end = time.time_ns()
        record = answer.get("id") if status == 201 and isinstance(answer, dict) else None
        return Write(scenario, collection, room, record, start, end, status)

    def room(self, rooms: int) -> str:
        return f"r{self.random.randrange(rooms)}"

    def paced(self, scenario: str, rate: float, seconds: float, rooms: int) -> list[Write]:
        """``rate`` creates a second for ``seconds``, each to a random room, on a fixed
        schedule (a create that comes back late makes the next ones start at once)."""
        writes = []
        started = time.monotonic()
        for k in range(round(rate * seconds)):
            wait = started + k / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            writes.append(self.create(scenario, "msgs", self.room(rooms)))
        return writes

    def spaced(self, scenario: str, count: int, gap: float, rooms: int) -> list[Write]:
        """``count`` creates, each to a random room, ``gap`` seconds apart (none overlaps
        another's delivery)."""
        writes = []
        for _ in range(count):
            writes.append(self.create(scenario, "msgs", self.room(rooms)))
            time.sleep(gap)
        return writes

    def burst(self, scenario: str, count: int, rooms: int) -> list[Write]:
        """``count`` creates back to back, each to a random room."""
        return [self.create(scenario, "msgs", self.room(rooms)) for _ in range(count)]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
