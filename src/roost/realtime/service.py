"""Realtime for one instance: the hub of subscriptions, the feed that fills it from the
change log, and the replay that lets a subscription resume from a cursor.

A subscription with ``since`` is filed at once but marked *replaying*: the feed's live
changes skip it while it reads the log from its cursor up to the feed's position; then,
with no await between the check and the switch, it turns live. Each change has one
position and a subscription takes only positions after its own, so the switch has no
gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from roost.auth.tokens import AccessTokens
from roost.broker.base import Broker
from roost.errors import RateLimited
from roost.realtime.changes import Changed, EventOp, encode_cursor
from roost.realtime.feed import BATCH, Feed
from roost.realtime.hub import Hub, Subscription
from roost.records import collections
from roost.records.collections import Collection
from roost.settings import Settings
from roost.storage.base import Storage

TICK_SECONDS = 1.0
"""How often every session's clock is checked (``Session.tick``)."""


class Subscriber(Protocol):
    """A realtime session, as the instance sees it: its clock ticks it, a replay paces
    itself on it."""

    @property
    def closed(self) -> object: ...

    def tick(self, now: float) -> None: ...

    def drain(self) -> None: ...

    async def replayed(
        self, sub: Subscription, op: EventOp, changed: Changed, collection: Collection
    ) -> None: ...


@dataclass(slots=True)
class Deliveries:
    """What became of the events meant for this instance's clients (plain counts, for
    metrics)."""

    delivered: int = 0
    """Queued for a client, live or replayed."""
    dropped: int = 0
    """Not queued: the client's queue was full (it is closed as a slow consumer), or its
    connection had closed."""

    def count(self, queued: bool) -> None:
        if queued:
            self.delivered += 1
        else:
            self.dropped += 1


class Realtime:
    def __init__(
        self, storage: Storage, broker: Broker, tokens: AccessTokens, settings: Settings
    ) -> None:
        self.storage = storage
        self.broker = broker
        self.tokens = tokens
        self.settings = settings
        self.hub = Hub()
        self.feed = Feed(storage, broker, self.hub, settings.realtime_poll_seconds)
        self.epoch = ""
        self.deliveries = Deliveries()
        self.closes: Counter[int] = Counter()
        """Sessions closed, by close code (for metrics)."""
        self._connections: Counter[str] = Counter()
        self._sessions: set[Subscriber] = set()
        self.draining = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the change log for the block's duration."""
        self.epoch = (await self.storage.log_state()).epoch
        await self.feed.start()
        stop = asyncio.Event()
        feed = asyncio.create_task(self.feed.run(stop), name="roost-realtime-feed")
        clock = asyncio.create_task(self._tick(stop), name="roost-realtime-clock")
        try:
            yield
        finally:
            stop.set()
            self.feed.wake()
            await asyncio.gather(feed, clock)

    def watch(self, session: Subscriber) -> None:
        if self.draining:
            session.drain()
            return
        self._sessions.add(session)

    def drain(self) -> None:
        """The instance is shutting down: close every session with "reconnect elsewhere",
        and each new one as it opens. Their clients resume from their cursors on another
        instance."""
        self.draining = True
        for session in list(self._sessions):
            session.drain()

    def forget(self, session: Subscriber) -> None:
        self._sessions.discard(session)

    async def _tick(self, stop: asyncio.Event) -> None:
        """One clock for every session (not a timer each: 10,000 connections would wake
        the loop 10,000 times a second)."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(TICK_SECONDS):
                    await stop.wait()
            except TimeoutError:
                pass
            now = time.monotonic()
            for session in list(self._sessions):
                session.tick(now)

    @property
    def connections(self) -> int:
        """Realtime connections open on this instance."""
        return len(self._sessions)

    def cursor(self, position: int) -> str:
        return encode_cursor(self.epoch, position)

    async def collection(self, name: str) -> Collection:
        async with self.storage.read() as conn:
            return await collections.load(conn, name)

    def connect(self, key: str) -> None:
        """Count one more connection of ``key`` (a user, or an anonymous client address)."""
        if self._connections[key] >= self.settings.realtime_max_connections_per_user:
            raise RateLimited(
                "too many realtime connections for this user on this server", retry_after=5
            )
        self._connections[key] += 1

    def disconnect(self, key: str) -> None:
        self._connections[key] -= 1
        if self._connections[key] <= 0:
            del self._connections[key]

    async def replay(self, sub: Subscription, subscriber: Subscriber) -> None:
        """Give ``sub`` every change after its position up to the feed's, then make it live."""
        while not subscriber.closed:
            target = self.feed.position
            if sub.position >= target:
                sub.replaying = False
                return
            changes = await self.storage.changes_since(sub.position, [sub.collection], BATCH)
            collection = await self.collection(sub.collection)
            for change in changes:
                changed = Changed(change)
                sub.position = change.position
                op = sub.reader.op_of(collection, changed)
                if op is not None:
                    await subscriber.replayed(sub, op, changed, collection)
            if len(changes) < BATCH:  # read after the feed had reached target: none before it
                sub.position = max(sub.position, target)
