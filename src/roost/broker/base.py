"""The broker port: one small interface, one module per backend.

A broker only wakes instances up: a message says "the change log has grown" and carries
nothing else. Each instance's realtime feed then reads the change log from its own
position, so a message the broker loses or delays costs latency, never an event: the feed
also reads the log on a timer (faster while the broker is unhealthy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from roost.backends import load_backend

BACKENDS = {
    "memory": "roost.broker.memory:MemoryBroker",
    "redis": "roost.broker.redis:RedisBroker",
    "rediss": "roost.broker.redis:RedisBroker",
}

Wake = Callable[[], None]


class Broker(ABC):
    """Fans "changes were committed" out to every instance, this one included."""

    shared = False
    """Whether messages reach other processes too; when not (or while unhealthy), feeds
    read the change log on a short timer to see other processes' writes."""

    @abstractmethod
    async def open(self) -> None:
        """Start the broker's background work (connections, listeners); never fails for an
        unreachable server: the broker reports itself unhealthy and keeps retrying."""

    @abstractmethod
    def publish(self) -> None:
        """Tell every instance that changes were committed. Called after each commit that
        appended changes: never blocks, never raises; messages may be coalesced."""

    @abstractmethod
    def listen(self, wake: Wake) -> None:
        """Call ``wake()`` (on the event loop) for every message, from any instance, and
        once after the broker reconnects (messages may have been lost meanwhile)."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """Whether messages are expected to arrive; readiness reports it."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop background work and close connections."""


def open_broker(url: str) -> Broker:
    """The broker named by ``url``'s scheme (imported lazily); ValueError when unknown."""
    scheme = url.split(":", 1)[0]
    target = BACKENDS.get(scheme)
    if target is None:
        raise ValueError(f"unsupported broker URL scheme {scheme!r}")
    cls: type[Broker] = load_backend(target)
    return cls(url)  # type: ignore[call-arg]
