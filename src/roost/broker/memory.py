"""The in-process broker: the embedded default, for one process.

Several worker processes on the embedded default share no memory; their feeds see each
other's writes by reading the SQLite change log on a short timer instead.
"""

from __future__ import annotations

import asyncio

from roost.broker.base import Broker, Wake


class MemoryBroker(Broker):
    def __init__(self, url: str = "memory://") -> None:
        self._listeners: list[Wake] = []

    async def open(self) -> None:
        return None

    def publish(self) -> None:
        loop = asyncio.get_running_loop()
        for wake in self._listeners:
            loop.call_soon(wake)

    def listen(self, wake: Wake) -> None:
        self._listeners.append(wake)

    @property
    def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._listeners.clear()
